"""Synthetic DICOM writers: real, valid files written with pydicom, for test fixtures and the demo.

Everything here is deterministic for a given ``seed``: the same call writes byte-identical
files (UIDs are derived from the seed and the call's arguments), so tests can compare runs.

Geometry convention of :func:`write_series` (DICOM patient coordinates, LPS, millimetres):

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
  against it, ``"interleaved"`` odd spatial slices first, then even ones. ``file_names="random"``
  additionally makes file names unrelated to either order.

So the volume a correct reader returns for time point ``t`` is ``data[t]`` (after rescale),
regardless of ``order`` and ``file_names``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
ENHANCED_MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")
RT_STRUCTURE_SET_STORAGE = UID("1.2.840.10008.5.1.4.1.1.481.3")
GRAYSCALE_PRESENTATION_STATE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.11.1")
MEDIA_STORAGE_DIRECTORY_STORAGE = UID("1.2.840.10008.1.3.10")

NAMED_ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}

DEFAULT_PATIENT: dict[str, str] = {
    "PatientName": "Synthetic^Patient",
    "PatientID": "SYN0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "PatientAge": "054Y",
    "AccessionNumber": "ACC0001",
}

_NON_IMAGE_CLASSES = {
    "SR": (BASIC_TEXT_SR_STORAGE, "SR"),
    "RTSTRUCT": (RT_STRUCTURE_SET_STORAGE, "RTSTRUCT"),
    "PR": (GRAYSCALE_PRESENTATION_STATE_STORAGE, "PR"),
}
_STUDY_DATE = "20240102"
_STUDY_TIME = _dt.time(9, 30, 0)


def orientation_cosines(orientation: str | Sequence[float]) -> np.ndarray:
    """Six direction cosines (row, then column) for a named or explicit orientation.

    Args:
        orientation: ``"axial"``, ``"coronal"``, ``"sagittal"`` or 6 numbers (normalised here).

    Returns:
        A float array of shape (6,) with both vectors unit length.

    Raises:
        ValueError: unknown name, wrong length, or parallel/degenerate vectors.
    """
    if isinstance(orientation, str):
        if orientation not in NAMED_ORIENTATIONS:
            raise ValueError(f"orientation {orientation!r} unknown; expected one of {sorted(NAMED_ORIENTATIONS)}"
                             " or 6 direction cosines")
        return np.array(NAMED_ORIENTATIONS[orientation], dtype=float)
    cos = np.asarray(orientation, dtype=float).reshape(-1)
    if cos.size != 6:
        raise ValueError(f"orientation needs 6 direction cosines, got {cos.size}")
    row, col = cos[:3], cos[3:]
    if np.linalg.norm(row) == 0 or np.linalg.norm(col) == 0:
        raise ValueError("orientation vectors must be non-zero")
    row = row / np.linalg.norm(row)
    col = col - row * np.dot(row, col)  # make the column vector orthogonal to the row vector
    if np.linalg.norm(col) < 1e-6:
        raise ValueError("orientation row and column vectors are parallel")
    return np.concatenate([row, col / np.linalg.norm(col)])


def default_pattern(n_timepoints: int, n_slices: int, rows: int, cols: int, *, dtype: str = "int16",
                    seed: int = 0) -> np.ndarray:
    """A deterministic (t, z, y, x) pattern in which flips, permutations and shifts all show.

    A ramp along every axis (different step per axis) plus seeded noise, clipped to ``dtype``.
    """
    rng = np.random.default_rng(seed)
    t, z, y, x = np.meshgrid(np.arange(n_timepoints), np.arange(n_slices), np.arange(rows), np.arange(cols),
                             indexing="ij")
    values = 2 * x + 5 * y + 37 * z + 211 * t + rng.integers(0, 17, size=x.shape)
    info = np.iinfo(np.dtype(dtype))
    return np.clip(values % (min(info.max, 32000) + 1), info.min, info.max).astype(dtype)


def _uid(*parts: Any) -> UID:
    return generate_uid(entropy_srcs=[repr(p) for p in parts])


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADPIPE_SYNTH"
    return meta


def _base_dataset(sop_class: str, sop_instance: str, transfer_syntax: str, *, modality: str,
                  patient: Mapping[str, Any] | None, study_uid: str, series_uid: str, series_number: int,
                  series_description: str, manufacturer: str, institution: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance, transfer_syntax)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = _STUDY_DATE
    ds.StudyTime = ds.SeriesTime = _STUDY_TIME.strftime("%H%M%S")
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = f"{manufacturer} Synth"
    ds.InstitutionName = institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic study"
    ds.SeriesDescription = series_description
    for key, value in {**DEFAULT_PATIENT, **dict(patient or {})}.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, transfer_syntax: str, photometric: str) -> None:
    """Set image pixel attributes and (possibly compressed) pixel data; ``pixels`` is (frames, y, x) or (y, x)."""
    dtype = pixels.dtype
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = ds.BitsStored = 8 * dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype.newbyteorder("<"))).tobytes()
    elif transfer_syntax == ExplicitVRBigEndian:
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype.newbyteorder(">"))).tobytes()
    else:  # compressed: pydicom encodes (RLE natively, JPEG 2000 through pylibjpeg-openjpeg)
        ds.compress(transfer_syntax, np.ascontiguousarray(pixels))


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = ds.file_meta.TransferSyntaxUID
    ds.save_as(path, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian,
               little_endian=ts != ExplicitVRBigEndian)
    return path


def _apply_extra(ds: Dataset, extra: Mapping[str, Any] | None, t: int, z: int) -> None:
    for key, value in (extra or {}).items():
        if callable(value):
            value = value(t, z)
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)


def _instance_order(n_slices: int, order: str) -> list[int]:
    """Spatial slice indices in acquisition (InstanceNumber) order."""
    if order == "ascending":
        return list(range(n_slices))
    if order == "descending":
        return list(range(n_slices - 1, -1, -1))
    if order == "interleaved":
        return list(range(1, n_slices, 2)) + list(range(0, n_slices, 2))
    raise ValueError(f"order {order!r} unknown; expected 'ascending', 'descending' or 'interleaved'")


def series_geometry(*, n_slices: int, orientation: str | Sequence[float] = "axial",
                    origin: Sequence[float] = (0.0, 0.0, 0.0), slice_spacing: float = 2.5,
                    gantry_tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Direction cosines (6,) and per-slice ImagePositionPatient (n_slices, 3) that :func:`write_series` uses.

    A gantry tilt rotates the image plane about the row axis by ``gantry_tilt_deg`` while slice
    positions still advance along the untilted normal (the table axis), as on a tilted CT.
    """
    cos = orientation_cosines(orientation)
    row, col = cos[:3], cos[3:]
    stack_dir = np.cross(row, col)
    if gantry_tilt_deg:
        angle = np.deg2rad(gantry_tilt_deg)
        col = col * np.cos(angle) + stack_dir * np.sin(angle)
        cos = np.concatenate([row, col])
    positions = np.asarray(origin, dtype=float) + np.arange(n_slices)[:, None] * slice_spacing * stack_dir
    return cos, positions


def write_series(
    out_dir: str | Path, *, rows: int = 64, cols: int = 64, n_slices: int = 24, n_timepoints: int = 1,
    pixel_spacing: Sequence[float] = (0.7, 0.7), slice_spacing: float = 2.5, slice_thickness: float | None = None,
    orientation: str | Sequence[float] = "axial", origin: Sequence[float] = (0.0, 0.0, 0.0),
    order: str = "ascending", modality: str = "CT", slope: float = 1.0, intercept: float = -1024.0,
    dtype: str = "int16", multiframe: bool = False, missing_slices: Sequence[int] = (),
    gantry_tilt_deg: float = 0.0, data: np.ndarray | None = None, patient: Mapping[str, Any] | None = None,
    study_uid: str | None = None, series_uid: str | None = None, series_number: int = 1,
    series_description: str = "", manufacturer: str = "ACME", institution: str = "",
    transfer_syntax: str = ExplicitVRLittleEndian, file_names: str = "random", seed: int = 0,
    echo_time: float | None = None, repetition_time: float | None = None, photometric: str = "MONOCHROME2",
    extra: Mapping[str, Any | Callable[[int, int], Any]] | None = None,
) -> list[Path]:
    """Write one CT or MR series (2D slices or one enhanced multi-frame file) into ``out_dir``.

    See the module docstring for the geometry convention. ``data[t]`` is what a correct reader
    returns for time point ``t`` (times ``slope`` plus ``intercept``), whatever ``order`` and
    ``file_names`` are.

    Args:
        out_dir: folder to write into (created).
        rows, cols: matrix size.
        n_slices: number of spatial slice positions (before ``missing_slices`` are dropped).
        n_timepoints: time points; > 1 repeats every position with TemporalPositionIdentifier 1..n.
        pixel_spacing: (row spacing, column spacing) in mm, DICOM order.
        slice_spacing: distance between slice positions along the stack direction, mm.
        slice_thickness: SliceThickness tag (default ``slice_spacing``); never used for geometry.
        orientation: ``"axial"``, ``"coronal"``, ``"sagittal"`` or 6 direction cosines (oblique).
        origin: ImagePositionPatient of spatial slice 0.
        order: InstanceNumber order: ``"ascending"``, ``"descending"`` or ``"interleaved"``.
        modality: ``"CT"`` or ``"MR"`` (selects the SOP class).
        slope, intercept: RescaleSlope / RescaleIntercept.
        dtype: stored pixel type: ``"int16"``, ``"uint16"`` or ``"uint8"``.
        multiframe: write a single Enhanced CT/MR file with per-frame functional groups.
        missing_slices: spatial indices not written (a gap in the series).
        gantry_tilt_deg: CT gantry tilt (image plane rotated, positions along the table).
        data: stored values, shape (t, z, y, x) or (z, y, x); default :func:`default_pattern`.
        patient: patient/study identifiers by DICOM keyword, merged over :data:`DEFAULT_PATIENT`.
        study_uid, series_uid: default: derived from ``seed`` (and series number/description).
        series_number, series_description, manufacturer, institution: the matching tags.
        transfer_syntax: any syntax pydicom can write (little/big endian, implicit VR, RLE, JPEG 2000;
            OpenJPEG needs images of at least 32 x 32 pixels).
        file_names: ``"random"`` (hex names without extension, like many exports) or ``"instance"``
            (``IM00001.dcm`` in InstanceNumber order).
        seed: seeds the default data, UIDs and random file names.
        echo_time, repetition_time: EchoTime / RepetitionTime (ms), MR.
        photometric: ``"MONOCHROME2"`` or ``"MONOCHROME1"``.
        extra: more tags by keyword, set last on every file; a callable value is called with
            ``(t, z)`` (spatial slice index) for a per-slice value; ``None`` deletes the tag.

    Returns:
        The written paths in InstanceNumber order.
    """
    out_dir = Path(out_dir)
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality {modality!r} unsupported; expected 'CT' or 'MR' (use write_single_image for DX/CR)")
    if data is None:
        data = default_pattern(n_timepoints, n_slices, rows, cols, dtype=dtype, seed=seed)
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"data must be (t, z, y, x) or (z, y, x), got shape {data.shape}")
    n_timepoints, n_slices, rows, cols = data.shape
    data = data.astype(dtype)
    cos, positions = series_geometry(n_slices=n_slices, orientation=orientation, origin=origin,
                                     slice_spacing=slice_spacing, gantry_tilt_deg=gantry_tilt_deg)
    study_uid = study_uid or _uid("study", seed)
    # distinct UIDs for distinct calls, yet the same UIDs when a call is repeated
    call_key = (seed, series_number, series_description, modality, orientation, origin, pixel_spacing,
                slice_spacing, order, multiframe, tuple(missing_slices), gantry_tilt_deg, slope, intercept, dtype,
                transfer_syntax, photometric, study_uid, data.shape, hashlib.sha1(data.tobytes()).hexdigest(),
                sorted((k, [repr(v(t, z)) for t in range(n_timepoints) for z in range(n_slices)] if callable(v)
                        else repr(v)) for k, v in (extra or {}).items()))
    series_uid = series_uid or _uid("series", *call_key)
    present = [z for z in _instance_order(n_slices, order) if z not in set(missing_slices)]
    rng = np.random.default_rng(seed)
    common = dict(modality=modality, patient=patient, study_uid=study_uid, series_uid=series_uid,
                  series_number=series_number, series_description=series_description, manufacturer=manufacturer,
                  institution=institution)

    def image_attrs(ds: Dataset) -> None:
        ds.FrameOfReferenceUID = _uid("frame", study_uid, series_uid)
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.SliceThickness = slice_thickness if slice_thickness is not None else slice_spacing
        if modality == "CT":
            ds.KVP = "120"
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SS", "", "2D"
            ds.MagneticFieldStrength = 3
            if echo_time is not None:
                ds.EchoTime = echo_time
            if repetition_time is not None:
                ds.RepetitionTime = repetition_time
        if gantry_tilt_deg:
            ds.GantryDetectorTilt = gantry_tilt_deg

    def file_name(index: int) -> str:
        if file_names == "instance":
            return f"IM{index + 1:05d}.dcm"
        if file_names == "random":
            return rng.bytes(8).hex().upper()
        raise ValueError(f"file_names {file_names!r} unknown; expected 'random' or 'instance'")

    if multiframe:
        sop_class = ENHANCED_CT_IMAGE_STORAGE if modality == "CT" else ENHANCED_MR_IMAGE_STORAGE
        ds = _base_dataset(sop_class, _uid("instance", series_uid, 1, *call_key), transfer_syntax, **common)
        image_attrs(ds)
        _multiframe_attrs(ds, data, present, cos, positions, pixel_spacing, slope, intercept,
                          repetition_time, photometric, transfer_syntax)
        _apply_extra(ds, extra, 0, present[0])
        return [_save(ds, out_dir / file_name(0))]

    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    paths = []
    for t in range(n_timepoints):
        for rank, z in enumerate(present):
            instance = t * len(present) + rank + 1
            ds = _base_dataset(sop_class, _uid("instance", series_uid, instance, *call_key), transfer_syntax,
                               **common)
            image_attrs(ds)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.InstanceNumber = instance
            ds.AcquisitionNumber = 1
            acq_time = _dt.datetime.combine(_dt.date(2024, 1, 2), _STUDY_TIME) + _dt.timedelta(
                milliseconds=t * (repetition_time or 1000.0))
            ds.AcquisitionTime = ds.ContentTime = acq_time.strftime("%H%M%S.%f")
            if n_timepoints > 1:
                ds.TemporalPositionIdentifier = t + 1
                ds.NumberOfTemporalPositions = n_timepoints
            ds.ImagePositionPatient = [round(float(v), 6) for v in positions[z]]
            ds.ImageOrientationPatient = [round(float(v), 8) for v in cos]
            ds.SliceLocation = round(float(np.dot(positions[z], np.cross(cos[:3], cos[3:]))), 6)
            ds.PixelSpacing = [float(v) for v in pixel_spacing]
            ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
            if modality == "CT":
                ds.RescaleType = "HU"
            _set_pixels(ds, data[t, z], transfer_syntax, photometric)
            _apply_extra(ds, extra, t, z)
            paths.append(_save(ds, out_dir / file_name(instance - 1)))
    return paths


def _multiframe_attrs(ds: Dataset, data: np.ndarray, present: list[int], cos: np.ndarray, positions: np.ndarray,
                      pixel_spacing: Sequence[float], slope: float, intercept: float,
                      repetition_time: float | None, photometric: str, transfer_syntax: str) -> None:
    """Enhanced CT/MR attributes: shared and per-frame functional groups, dimension index."""
    n_timepoints = data.shape[0]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.ContentTime = _STUDY_TIME.strftime("%H%M%S")
    ds.AcquisitionDateTime = _STUDY_DATE + _STUDY_TIME.strftime("%H%M%S")
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.VolumetricProperties = "VOLUME"
    dim_org = _uid("dimorg", ds.SeriesInstanceUID)
    ds.DimensionOrganizationSequence = DicomSequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dim_org
    pointers = [(0x00209056, 0x00209111), (0x00209057, 0x00209111)]  # StackID, InStackPositionNumber
    if n_timepoints > 1:
        pointers.append((0x00209128, 0x00209111))  # TemporalPositionIndex
    dims = []
    for index_pointer, group_pointer in pointers:
        item = Dataset()
        item.DimensionOrganizationUID = dim_org
        item.DimensionIndexPointer = index_pointer
        item.FunctionalGroupPointer = group_pointer
        dims.append(item)
    ds.DimensionIndexSequence = DicomSequence(dims)

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [float(v) for v in pixel_spacing]
    measures.SliceThickness = ds.SliceThickness
    shared.PixelMeasuresSequence = DicomSequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [round(float(v), 8) for v in cos]
    shared.PlaneOrientationSequence = DicomSequence([plane])
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope = intercept, slope
    transform.RescaleType = "HU" if ds.Modality == "CT" else "US"
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    spatial_rank = {z: rank for rank, z in enumerate(sorted(present))}
    frames, per_frame = [], []
    for t in range(n_timepoints):
        for z in present:
            item = Dataset()
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = spatial_rank[z] + 1
            dim_values = [1, spatial_rank[z] + 1]
            if n_timepoints > 1:
                content.TemporalPositionIndex = t + 1
                dim_values.append(t + 1)
            content.DimensionIndexValues = dim_values
            content.FrameAcquisitionNumber = 1
            item.FrameContentSequence = DicomSequence([content])
            position = Dataset()
            position.ImagePositionPatient = [round(float(v), 6) for v in positions[z]]
            item.PlanePositionSequence = DicomSequence([position])
            per_frame.append(item)
            frames.append(data[t, z])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.NumberOfFrames = len(frames)
    if repetition_time is not None and n_timepoints > 1:
        ds.RepetitionTime = repetition_time
    _set_pixels(ds, np.stack(frames), transfer_syntax, photometric)


def write_single_image(
    path: str | Path, *, modality: str = "DX", photometric: str = "MONOCHROME1", rows: int = 96, cols: int = 80,
    pixel_spacing: Sequence[float] = (0.15, 0.15), data: np.ndarray | None = None, dtype: str = "uint16",
    bits_stored: int = 12, slope: float = 1.0, intercept: float = 0.0, patient: Mapping[str, Any] | None = None,
    study_uid: str | None = None, series_uid: str | None = None, series_number: int = 1,
    series_description: str = "Chest PA", manufacturer: str = "ACME", institution: str = "",
    body_part: str = "CHEST", view_position: str = "PA", transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0, extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one 2D projection radiograph (DX or CR) file.

    Args:
        path: output file.
        modality: ``"DX"`` (Digital X-Ray, For Presentation) or ``"CR"``.
        photometric: ``"MONOCHROME1"`` (bright = low value, common for X-ray) or ``"MONOCHROME2"``.
        rows, cols: matrix size. pixel_spacing: (row, column) mm, written as PixelSpacing and ImagerPixelSpacing.
        data: stored values (rows, cols); default a seeded ramp within ``bits_stored`` bits.
        dtype, bits_stored: stored type and BitsStored.
        slope, intercept: RescaleSlope / RescaleIntercept.
        patient, study_uid, series_uid, series_number, series_description, manufacturer, institution: as in
            :func:`write_series`.
        body_part, view_position: BodyPartExamined / ViewPosition.
        transfer_syntax: as in :func:`write_series`.
        seed: seeds default data and UIDs.
        extra: more tags by keyword (``None`` deletes).

    Returns:
        ``path``.
    """
    modality = modality.upper()
    classes = {"DX": DX_IMAGE_STORAGE, "CR": CR_IMAGE_STORAGE}
    if modality not in classes:
        raise ValueError(f"modality {modality!r} unsupported; expected 'DX' or 'CR'")
    if data is None:
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[:rows, :cols]
        data = (7 * x + 13 * y + rng.integers(0, 11, size=x.shape)) % (2 ** bits_stored)
    data = np.asarray(data).astype(dtype)
    study_uid = study_uid or _uid("study", seed)
    call_key = (seed, series_number, series_description, modality, photometric, view_position, body_part,
                pixel_spacing, slope, intercept, bits_stored, data.shape, hashlib.sha1(data.tobytes()).hexdigest())
    series_uid = series_uid or _uid("series", *call_key)
    ds = _base_dataset(classes[modality], _uid("instance", series_uid, *call_key), transfer_syntax, modality=modality,
                       patient=patient, study_uid=study_uid, series_uid=series_uid, series_number=series_number,
                       series_description=series_description, manufacturer=manufacturer, institution=institution)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["P", "F"] if view_position == "AP" else ["A", "F"]
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.PixelSpacing = ds.ImagerPixelSpacing = [float(v) for v in pixel_spacing]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, slope, "US"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    _set_pixels(ds, data, transfer_syntax, photometric)
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.WindowCenter, ds.WindowWidth = 2 ** (bits_stored - 1), 2 ** bits_stored
    _apply_extra(ds, extra, 0, 0)
    return _save(ds, Path(path))


def write_non_image(
    path: str | Path, kind: str = "SR", *, text: str = "No acute findings.", patient: Mapping[str, Any] | None = None,
    study_uid: str | None = None, series_uid: str | None = None, series_number: int = 900,
    series_description: str = "", seed: int = 0,
) -> Path:
    """Write a DICOM object without pixel data, as exports mix them in with the images.

    Args:
        path: output file.
        kind: ``"SR"`` (Basic Text SR with one text item), ``"RTSTRUCT"`` (empty structure set) or ``"PR"``
            (grayscale presentation state).
        text: the SR text.
        patient, study_uid, series_uid, series_number, series_description, seed: as in :func:`write_series`.

    Returns:
        ``path``.
    """
    kind = kind.upper()
    if kind not in _NON_IMAGE_CLASSES:
        raise ValueError(f"kind {kind!r} unknown; expected one of {sorted(_NON_IMAGE_CLASSES)}")
    sop_class, modality = _NON_IMAGE_CLASSES[kind]
    study_uid = study_uid or _uid("study", seed)
    series_uid = series_uid or _uid("series", seed, series_number, kind)
    ds = _base_dataset(sop_class, _uid("instance", series_uid, kind), ExplicitVRLittleEndian, modality=modality,
                       patient=patient, study_uid=study_uid, series_uid=series_uid, series_number=series_number,
                       series_description=series_description or f"{kind} object", manufacturer="ACME",
                       institution="")
    ds.InstanceNumber = 1
    if kind == "SR":
        ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
        ds.ConceptNameCodeSequence = DicomSequence([_code("18782-3", "LN", "Radiology Study observation")])
        item = Dataset()
        item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", text
        item.ConceptNameCodeSequence = DicomSequence([_code("121071", "DCM", "Finding")])
        ds.ContentSequence = DicomSequence([item])
    elif kind == "RTSTRUCT":
        ds.StructureSetLabel = "synthetic"
        ds.StructureSetROISequence = DicomSequence([])
    else:
        ds.ContentLabel, ds.PresentationCreationDate = "SYNTH", _STUDY_DATE
    return _save(ds, Path(path))


def write_sr(path: str | Path, *, text: str = "No acute findings.", **kwargs: Any) -> Path:
    """Write a Basic Text SR (a report, no pixel data); see :func:`write_non_image` for the arguments."""
    return write_non_image(path, "SR", text=text, **kwargs)


def write_dicomdir(path: str | Path, seed: int | None = None) -> Path:
    """Write a minimal DICOMDIR (media directory, no directory records): a file scans must skip.

    Its UID derives from ``seed`` when given (same bytes wherever it is written), else from ``path``.
    """
    instance = _uid("dicomdir", str(path) if seed is None else seed)
    ds = Dataset()
    ds.file_meta = _file_meta(MEDIA_STORAGE_DIRECTORY_STORAGE, instance, ExplicitVRLittleEndian)
    ds.FileSetID = "SYNTH"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = DicomSequence([])
    return _save(ds, Path(path))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
