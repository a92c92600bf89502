"""Synthetic DICOM writers: real, valid files written with pydicom, for test fixtures and the demo.

Everything here is deterministic for a given seed: the same call writes byte-identical files. This
module gathers the writers' public names; they live in modules named for what they hold:

* :mod:`pipeline.demo.dicom_series`: :func:`write_series`, a CT or MR series (its geometry convention
  is in that module's docstring);
* :mod:`pipeline.demo.dicom_spec`: :class:`SeriesSpec` (what the series is), :class:`SeriesFiles` (how it
  is written) and :func:`series_args` (flat keyword arguments split into the two);
* :mod:`pipeline.demo.dicom_objects`: single files: a radiograph, SR / RTSTRUCT / PR objects, a DICOMDIR;
* :mod:`pipeline.demo.dicom_geometry` and :mod:`pipeline.demo.dicom_pixels`: orientations, slice
  positions, the default pixel pattern;
* :mod:`pipeline.demo.dicom_dataset`: SOP classes and the tags every file shares.

Example:
    >>> import tempfile
    >>> paths = write_series(tempfile.mkdtemp(), SeriesSpec(modality="MR", rows=8, cols=8, n_slices=5))
    >>> len(paths)
    5
"""
from __future__ import annotations

from pipeline.demo.dicom_dataset import (
    BASIC_TEXT_SR_STORAGE,
    CR_IMAGE_STORAGE,
    CT_IMAGE_STORAGE,
    DEFAULT_PATIENT,
    DX_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    GRAYSCALE_PRESENTATION_STATE_STORAGE,
    MEDIA_STORAGE_DIRECTORY_STORAGE,
    MR_IMAGE_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
)
from pipeline.demo.dicom_geometry import NAMED_ORIENTATIONS, orientation_cosines, series_geometry
from pipeline.demo.dicom_objects import write_dicomdir, write_non_image, write_single_image, write_sr
from pipeline.demo.dicom_pixels import default_pattern
from pipeline.demo.dicom_series import write_series
from pipeline.demo.dicom_spec import SeriesFiles, SeriesSpec, series_args

__all__ = [
    "BASIC_TEXT_SR_STORAGE",
    "CR_IMAGE_STORAGE",
    "CT_IMAGE_STORAGE",
    "DEFAULT_PATIENT",
    "DX_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "ENHANCED_MR_IMAGE_STORAGE",
    "GRAYSCALE_PRESENTATION_STATE_STORAGE",
    "MEDIA_STORAGE_DIRECTORY_STORAGE",
    "MR_IMAGE_STORAGE",
    "NAMED_ORIENTATIONS",
    "RT_STRUCTURE_SET_STORAGE",
    "SeriesFiles",
    "SeriesSpec",
    "default_pattern",
    "orientation_cosines",
    "series_args",
    "series_geometry",
    "write_dicomdir",
    "write_non_image",
    "write_series",
    "write_single_image",
    "write_sr",
]
