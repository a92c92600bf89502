"""Synthetic CT and MR series: :func:`write_series` writes real, valid DICOM files with pydicom.

Everything is deterministic for a given seed: the same call writes byte-identical files (UIDs are
derived from the seed and the call's arguments), so tests can compare runs.

Geometry convention (DICOM patient coordinates, LPS, millimetres), fields of :class:`SeriesSpec`:

* ``data[t, z, y, x]`` holds the *stored* value of column ``x``, row ``y`` of the slice at
  *spatial* index ``z`` and time point ``t``.
* ``pixel_spacing = (row_spacing, column_spacing)`` in DICOM order (distance between rows,
  then between columns).
* The centre of voxel ``(x, y)`` of slice ``z`` lies at
  ``origin + z * slice_spacing * stack_dir + x * column_spacing * row_cosines
  + y * row_spacing * column_cosines``, where ``stack_dir`` is the slice normal
  (``row_cosines x column_cosines``), or the table axis (0, 0, 1) for a tilted gantry.
* ``order`` only changes the *InstanceNumber* (acquisition order) assigned to each spatial
  slice, never the geometry: ``"ascending"`` numbers slices along the normal, ``"descending"``
  against it, ``"interleaved"`` odd spatial slices first, then even ones. ``SeriesFiles.file_names
  = "random"`` additionally makes file names unrelated to either order.

So the volume a correct reader returns for time point ``t`` is ``data[t]`` (after rescale),
regardless of ``order`` and ``file_names``.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pipeline.demo.dicom_dataset import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    STUDY_TIME,
    apply_extra,
    base_dataset,
    make_uid,
    save_dataset,
)
from pipeline.demo.dicom_multiframe import set_enhanced_attrs
from pipeline.demo.dicom_pixels import set_pixels
from pipeline.demo.dicom_spec import (
    ResolvedSeries,
    SeriesFiles,
    SeriesSpec,
    resolve_series,
)

_DEFAULT_SPEC = SeriesSpec()
_DEFAULT_FILES = SeriesFiles()


def write_series(out_dir: str | Path, spec: SeriesSpec = _DEFAULT_SPEC,
                 files: SeriesFiles = _DEFAULT_FILES) -> list[Path]:
    """Write one CT or MR series (2D slices or one enhanced multi-frame file) into ``out_dir``.

    See the module docstring for the geometry convention. ``spec.data[t]`` is what a correct reader
    returns for time point ``t`` (times ``slope`` plus ``intercept``), whatever ``spec.order`` and
    ``files.file_names`` are.

    Example:
        ``write_series(folder, SeriesSpec(modality="MR", n_slices=5), SeriesFiles(multiframe=True))``;
        :func:`~pipeline.demo.dicom_spec.series_args` splits flat keyword arguments into the two.

    Args:
        out_dir: folder to write into (created).
        spec: what the series is (modality, geometry, values, identifiers).
        files: how it is written (one file per slice or one enhanced file, transfer syntax, file names).

    Returns:
        The written paths in InstanceNumber order.

    Raises:
        ValueError: an unsupported modality, orientation, order, file naming or data shape.
    """
    out_dir = Path(out_dir)
    series = resolve_series(spec, files)
    name_of = _file_namer(files.file_names, series.spec.seed)
    if files.multiframe:
        sop_class = ENHANCED_CT_IMAGE_STORAGE if series.spec.modality == "CT" else ENHANCED_MR_IMAGE_STORAGE
        ds = _image_dataset(series, sop_class, instance=1)
        set_enhanced_attrs(ds, series)
        apply_extra(ds, series.spec.extra, 0, series.present[0])
        return [save_dataset(ds, out_dir / name_of(0))]
    sop_class = CT_IMAGE_STORAGE if series.spec.modality == "CT" else MR_IMAGE_STORAGE
    paths = []
    for t in range(series.spec.n_timepoints):
        for rank, z in enumerate(series.present):
            instance = t * len(series.present) + rank + 1
            ds = _slice_dataset(series, sop_class, t, z, instance)
            paths.append(save_dataset(ds, out_dir / name_of(instance - 1)))
    return paths


def _file_namer(file_names: str, seed: int) -> Callable[[int], str]:
    """Name of the file of the ``index``-th instance (0-based); random names draw from a generator of ``seed``."""
    if file_names == "instance":
        return lambda index: f"IM{index + 1:05d}.dcm"
    if file_names == "random":
        rng = np.random.default_rng(seed)
        return lambda index: rng.bytes(8).hex().upper()
    raise ValueError(f"file_names {file_names!r} unknown; expected 'random' or 'instance'")


def _image_dataset(series: ResolvedSeries, sop_class: str, instance: int) -> Dataset:
    """The base dataset of one instance with the tags every image of the series shares."""
    spec = series.spec
    ds = base_dataset(sop_class, make_uid("instance", series.series_uid, instance, *series.key),
                      series.files.transfer_syntax, modality=spec.modality, patient=spec.patient,
                      study_uid=series.study_uid, series_uid=series.series_uid, series_number=spec.series_number,
                      series_description=spec.series_description, manufacturer=spec.manufacturer,
                      institution=spec.institution)
    ds.FrameOfReferenceUID = make_uid("frame", series.study_uid, series.series_uid)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.SliceThickness = spec.slice_thickness if spec.slice_thickness is not None else spec.slice_spacing
    if spec.modality == "CT":
        ds.KVP = "120"
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SS", "", "2D"
        ds.MagneticFieldStrength = 3
        if spec.echo_time is not None:
            ds.EchoTime = spec.echo_time
        if spec.repetition_time is not None:
            ds.RepetitionTime = spec.repetition_time
    if spec.gantry_tilt_deg:
        ds.GantryDetectorTilt = spec.gantry_tilt_deg
    return ds


def _slice_dataset(series: ResolvedSeries, sop_class: str, t: int, z: int, instance: int) -> Dataset:
    """The complete dataset of spatial slice ``z`` at time point ``t``, numbered ``instance``."""
    spec = series.spec
    ds = _image_dataset(series, sop_class, instance)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance
    ds.AcquisitionNumber = 1
    acq_time = _dt.datetime.combine(_dt.date(2024, 1, 2), STUDY_TIME) + _dt.timedelta(
        milliseconds=t * (spec.repetition_time or 1000.0))
    ds.AcquisitionTime = ds.ContentTime = acq_time.strftime("%H%M%S.%f")
    if spec.n_timepoints > 1:
        ds.TemporalPositionIdentifier = t + 1
        ds.NumberOfTemporalPositions = spec.n_timepoints
    ds.ImagePositionPatient = [round(float(v), 6) for v in series.positions[z]]
    ds.ImageOrientationPatient = [round(float(v), 8) for v in series.cos]
    ds.SliceLocation = round(float(np.dot(series.positions[z], np.cross(series.cos[:3], series.cos[3:]))), 6)
    ds.PixelSpacing = [float(v) for v in spec.pixel_spacing]
    ds.RescaleIntercept, ds.RescaleSlope = spec.intercept, spec.slope
    if spec.modality == "CT":
        ds.RescaleType = "HU"
    set_pixels(ds, series.data[t, z], series.files.transfer_syntax, spec.photometric)
    apply_extra(ds, spec.extra, t, z)
    return ds
