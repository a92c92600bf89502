"""Single-file synthetic DICOM objects: a projection radiograph, non-image objects, a DICOMDIR.

Exports mix these in with the CT and MR series (:mod:`pipeline.demo.dicom_series`); a scan must read
the radiograph and skip the rest.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.demo.dicom_dataset import (
    BASIC_TEXT_SR_STORAGE,
    CR_IMAGE_STORAGE,
    DX_IMAGE_STORAGE,
    GRAYSCALE_PRESENTATION_STATE_STORAGE,
    MEDIA_STORAGE_DIRECTORY_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    STUDY_DATE,
    apply_extra,
    base_dataset,
    code_item,
    file_meta,
    make_uid,
    save_dataset,
)
from pipeline.demo.dicom_pixels import set_pixels

_NON_IMAGE_CLASSES = {
    "SR": (BASIC_TEXT_SR_STORAGE, "SR"),
    "RTSTRUCT": (RT_STRUCTURE_SET_STORAGE, "RTSTRUCT"),
    "PR": (GRAYSCALE_PRESENTATION_STATE_STORAGE, "PR"),
}


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
            :class:`~pipeline.demo.dicom_spec.SeriesSpec`.
        body_part, view_position: BodyPartExamined / ViewPosition.
        transfer_syntax: as in :class:`~pipeline.demo.dicom_spec.SeriesFiles`.
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
    study_uid = study_uid or make_uid("study", seed)
    call_key = (seed, series_number, series_description, modality, photometric, view_position, body_part,
                pixel_spacing, slope, intercept, bits_stored, data.shape, hashlib.sha1(data.tobytes()).hexdigest())
    series_uid = series_uid or make_uid("series", *call_key)
    ds = base_dataset(classes[modality], make_uid("instance", series_uid, *call_key), transfer_syntax,
                      modality=modality, patient=patient, study_uid=study_uid, series_uid=series_uid,
                      series_number=series_number, series_description=series_description, manufacturer=manufacturer,
                      institution=institution)
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
    set_pixels(ds, data, transfer_syntax, photometric)
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.WindowCenter, ds.WindowWidth = 2 ** (bits_stored - 1), 2 ** bits_stored
    apply_extra(ds, extra, 0, 0)
    return save_dataset(ds, Path(path))


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
        patient, study_uid, series_uid, series_number, series_description, seed: as in
            :class:`~pipeline.demo.dicom_spec.SeriesSpec`.

    Returns:
        ``path``.
    """
    kind = kind.upper()
    if kind not in _NON_IMAGE_CLASSES:
        raise ValueError(f"kind {kind!r} unknown; expected one of {sorted(_NON_IMAGE_CLASSES)}")
    sop_class, modality = _NON_IMAGE_CLASSES[kind]
    study_uid = study_uid or make_uid("study", seed)
    series_uid = series_uid or make_uid("series", seed, series_number, kind)
    ds = base_dataset(sop_class, make_uid("instance", series_uid, kind), ExplicitVRLittleEndian, modality=modality,
                      patient=patient, study_uid=study_uid, series_uid=series_uid, series_number=series_number,
                      series_description=series_description or f"{kind} object", manufacturer="ACME",
                      institution="")
    ds.InstanceNumber = 1
    if kind == "SR":
        ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
        ds.ConceptNameCodeSequence = DicomSequence([code_item("18782-3", "LN", "Radiology Study observation")])
        item = Dataset()
        item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", text
        item.ConceptNameCodeSequence = DicomSequence([code_item("121071", "DCM", "Finding")])
        ds.ContentSequence = DicomSequence([item])
    elif kind == "RTSTRUCT":
        ds.StructureSetLabel = "synthetic"
        ds.StructureSetROISequence = DicomSequence([])
    else:
        ds.ContentLabel, ds.PresentationCreationDate = "SYNTH", STUDY_DATE
    return save_dataset(ds, Path(path))


def write_sr(path: str | Path, *, text: str = "No acute findings.", **kwargs: Any) -> Path:
    """Write a Basic Text SR (a report, no pixel data); see :func:`write_non_image` for the arguments."""
    return write_non_image(path, "SR", text=text, **kwargs)


def write_dicomdir(path: str | Path, seed: int | None = None) -> Path:
    """Write a minimal DICOMDIR (media directory, no directory records): a file scans must skip.

    Its UID derives from ``seed`` when given (same bytes wherever it is written), else from ``path``.
    """
    instance = make_uid("dicomdir", str(path) if seed is None else seed)
    ds = Dataset()
    ds.file_meta = file_meta(MEDIA_STORAGE_DIRECTORY_STORAGE, instance, ExplicitVRLittleEndian)
    ds.FileSetID = "SYNTH"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = DicomSequence([])
    return save_dataset(ds, Path(path))
