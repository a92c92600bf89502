"""What a synthetic series is (:class:`SeriesSpec`) and how it goes to disk (:class:`SeriesFiles`).

:func:`resolve_series` turns the two into a :class:`ResolvedSeries`: the stored values, geometry,
acquisition order and UIDs that :func:`pipeline.demo.dicom_series.write_series` writes.

Example:
    >>> spec, files = series_args(modality="MR", n_slices=5, multiframe=True)
    >>> (spec.modality, spec.n_slices, files.multiframe)
    ('MR', 5, True)
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.demo.dicom_dataset import make_uid
from pipeline.demo.dicom_geometry import instance_order, series_geometry
from pipeline.demo.dicom_pixels import default_pattern


@dataclass(frozen=True, kw_only=True)
class SeriesSpec:
    """What one CT or MR series is: modality, geometry, stored values, identifiers, extra tags.

    Attributes:
        modality: ``"CT"`` or ``"MR"`` (any case; selects the SOP class).
        rows, cols: matrix size (ignored when ``data`` is given: its shape rules).
        n_slices: spatial slice positions, before ``missing_slices`` are dropped (ignored with ``data``).
        n_timepoints: time points; > 1 repeats every position with TemporalPositionIdentifier 1..n
            (ignored with ``data``).
        pixel_spacing: (row spacing, column spacing) in mm, DICOM order.
        slice_spacing: distance between slice positions along the stack direction, mm.
        slice_thickness: SliceThickness tag (default ``slice_spacing``); never used for geometry.
        orientation: ``"axial"``, ``"coronal"``, ``"sagittal"`` or 6 direction cosines (oblique).
        origin: ImagePositionPatient of spatial slice 0.
        order: InstanceNumber order: ``"ascending"``, ``"descending"`` or ``"interleaved"``.
        missing_slices: spatial indices not written (a gap in the series).
        gantry_tilt_deg: CT gantry tilt (image plane rotated, positions along the table).
        data: stored values, shape (t, z, y, x) or (z, y, x); default :func:`default_pattern`.
        dtype: stored pixel type: ``"int16"``, ``"uint16"`` or ``"uint8"``.
        slope, intercept: RescaleSlope / RescaleIntercept.
        photometric: ``"MONOCHROME2"`` or ``"MONOCHROME1"``.
        echo_time, repetition_time: EchoTime / RepetitionTime (ms), MR; the repetition time also spaces the
            AcquisitionTime of the time points.
        patient: patient/study identifiers by DICOM keyword, merged over ``DEFAULT_PATIENT``.
        study_uid, series_uid: default: derived from ``seed`` (and everything else that tells series apart).
        series_number, series_description, manufacturer, institution: the matching tags.
        seed: seeds the default data, the UIDs and random file names.
        extra: more tags by keyword, set last on every file; a callable value is called with
            ``(t, z)`` (spatial slice index) for a per-slice value; ``None`` deletes the tag.
    """

    modality: str = "CT"
    rows: int = 64
    cols: int = 64
    n_slices: int = 24
    n_timepoints: int = 1
    pixel_spacing: Sequence[float] = (0.7, 0.7)
    slice_spacing: float = 2.5
    slice_thickness: float | None = None
    orientation: str | Sequence[float] = "axial"
    origin: Sequence[float] = (0.0, 0.0, 0.0)
    order: str = "ascending"
    missing_slices: Sequence[int] = ()
    gantry_tilt_deg: float = 0.0
    data: np.ndarray | None = None
    dtype: str = "int16"
    slope: float = 1.0
    intercept: float = -1024.0
    photometric: str = "MONOCHROME2"
    echo_time: float | None = None
    repetition_time: float | None = None
    patient: Mapping[str, Any] | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    series_number: int = 1
    series_description: str = ""
    manufacturer: str = "ACME"
    institution: str = ""
    seed: int = 0
    extra: Mapping[str, Any | Callable[[int, int], Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class SeriesFiles:
    """How a series is written to disk.

    Attributes:
        multiframe: one Enhanced CT/MR file with per-frame functional groups instead of a file per slice.
        transfer_syntax: any syntax pydicom can write (little/big endian, implicit VR, RLE, JPEG 2000;
            OpenJPEG needs images of at least 32 x 32 pixels).
        file_names: ``"random"`` (hex names without extension, like many exports) or ``"instance"``
            (``IM00001.dcm`` in InstanceNumber order).
    """

    multiframe: bool = False
    transfer_syntax: str = ExplicitVRLittleEndian
    file_names: str = "random"


def series_args(**kwargs: Any) -> tuple[SeriesSpec, SeriesFiles]:
    """Split flat keyword arguments into a :class:`SeriesSpec` and a :class:`SeriesFiles`.

    For tables of cases that mix both, as in ``write_series(folder, *series_args(**case))``.

    Raises:
        TypeError: a keyword that is a field of neither.
    """
    file_fields = {f.name for f in fields(SeriesFiles)}
    files = {k: v for k, v in kwargs.items() if k in file_fields}
    spec = {k: v for k, v in kwargs.items() if k not in file_fields}
    return SeriesSpec(**spec), SeriesFiles(**files)


@dataclass(frozen=True)
class ResolvedSeries:
    """A series ready to write, every default filled in.

    Attributes:
        spec: the caller's spec with ``modality`` upper case, ``data`` the stored (t, z, y, x) values in
            ``dtype``, and ``n_timepoints``, ``n_slices``, ``rows`` and ``cols`` taken from them.
        files: how it is written.
        data: the stored values, (t, z, y, x) (``spec.data``).
        study_uid, series_uid: the caller's or the derived ones.
        cos: direction cosines (6,), gantry tilt applied.
        positions: ImagePositionPatient of every spatial slice (n_slices, 3).
        present: the spatial slices written, in InstanceNumber order.
        key: everything that tells this call from another, the entropy of its instance UIDs.
    """

    spec: SeriesSpec
    files: SeriesFiles
    data: np.ndarray
    study_uid: str
    series_uid: str
    cos: np.ndarray
    positions: np.ndarray
    present: list[int]
    key: tuple[Any, ...]


def resolve_series(spec: SeriesSpec, files: SeriesFiles) -> ResolvedSeries:
    """Fill in the defaults of ``spec``: stored values, geometry, InstanceNumber order, UIDs.

    Raises:
        ValueError: an unsupported modality, data of the wrong rank, an unknown orientation or order.
    """
    modality = spec.modality.upper()
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality {modality!r} unsupported; expected 'CT' or 'MR' (use write_single_image for DX/CR)")
    data = _stored_values(spec)
    n_timepoints, n_slices, rows, cols = data.shape
    cos, positions = series_geometry(n_slices=n_slices, orientation=spec.orientation, origin=spec.origin,
                                     slice_spacing=spec.slice_spacing, gantry_tilt_deg=spec.gantry_tilt_deg)
    spec = replace(spec, modality=modality, data=data, n_timepoints=n_timepoints, n_slices=n_slices, rows=rows,
                   cols=cols)
    study_uid = spec.study_uid or make_uid("study", spec.seed)
    key = _call_key(spec, files, data, study_uid)
    series_uid = spec.series_uid or make_uid("series", *key)
    present = [z for z in instance_order(n_slices, spec.order) if z not in set(spec.missing_slices)]
    return ResolvedSeries(spec=spec, files=files, data=data, study_uid=study_uid, series_uid=series_uid, cos=cos,
                          positions=positions, present=present, key=key)


def _stored_values(spec: SeriesSpec) -> np.ndarray:
    data = spec.data
    if data is None:
        data = default_pattern(spec.n_timepoints, spec.n_slices, spec.rows, spec.cols, dtype=spec.dtype,
                               seed=spec.seed)
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"data must be (t, z, y, x) or (z, y, x), got shape {data.shape}")
    return data.astype(spec.dtype)


def _call_key(spec: SeriesSpec, files: SeriesFiles, data: np.ndarray, study_uid: str) -> tuple[Any, ...]:
    """Distinct for distinct calls, the same when a call is repeated."""
    extra = sorted((k, [repr(v(t, z)) for t in range(spec.n_timepoints) for z in range(spec.n_slices)]
                    if callable(v) else repr(v)) for k, v in (spec.extra or {}).items())
    return (spec.seed, spec.series_number, spec.series_description, spec.modality, spec.orientation, spec.origin,
            spec.pixel_spacing, spec.slice_spacing, spec.order, files.multiframe, tuple(spec.missing_slices),
            spec.gantry_tilt_deg, spec.slope, spec.intercept, spec.dtype, files.transfer_syntax, spec.photometric,
            study_uid, data.shape, hashlib.sha1(data.tobytes()).hexdigest(), extra)
