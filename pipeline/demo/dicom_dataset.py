"""The parts every synthetic DICOM file shares: SOP classes, UIDs, file meta, patient/study tags, saving.

The writers (:mod:`pipeline.demo.dicom_series`, :mod:`pipeline.demo.dicom_objects`) start each file
from :func:`base_dataset` and finish it with :func:`apply_extra` and :func:`save_dataset`.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
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

DEFAULT_PATIENT: dict[str, str] = {
    "PatientName": "Synthetic^Patient",
    "PatientID": "SYN0001",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "PatientAge": "054Y",
    "AccessionNumber": "ACC0001",
}

#: StudyDate and StudyTime of every synthetic file (a caller's ``extra`` tags may override them).
STUDY_DATE = "20240102"
STUDY_TIME = _dt.time(9, 30, 0)


def make_uid(*parts: Any) -> UID:
    """A UID derived from ``parts`` (by their ``repr``): the same parts always give the same UID."""
    return generate_uid(entropy_srcs=[repr(p) for p in parts])


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    """The file meta information group of one file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADPIPE_SYNTH"
    return meta


def base_dataset(sop_class: str, sop_instance: str, transfer_syntax: str, *, modality: str,
                 patient: Mapping[str, Any] | None, study_uid: str, series_uid: str, series_number: int,
                 series_description: str, manufacturer: str, institution: str) -> Dataset:
    """A dataset with file meta, SOP, patient, study, series and equipment tags; no image tags yet.

    Args:
        sop_class, sop_instance, transfer_syntax: the object's SOP class and instance UIDs and its syntax.
        modality: the Modality tag.
        patient: patient/study identifiers by DICOM keyword, merged over :data:`DEFAULT_PATIENT`.
        study_uid, series_uid, series_number, series_description: the study and series tags.
        manufacturer, institution: Manufacturer (and a model name made from it) and InstitutionName.

    Returns:
        The new dataset.
    """
    ds = Dataset()
    ds.file_meta = file_meta(sop_class, sop_instance, transfer_syntax)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = STUDY_TIME.strftime("%H%M%S")
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


def apply_extra(ds: Dataset, extra: Mapping[str, Any] | None, t: int, z: int) -> None:
    """Set the caller's extra tags on ``ds``: a callable value is called with ``(t, z)``, ``None`` deletes."""
    for key, value in (extra or {}).items():
        if callable(value):
            value = value(t, z)
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)


def save_dataset(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` (its folder created) in the encoding its transfer syntax names; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = ds.file_meta.TransferSyntaxUID
    ds.save_as(path, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian,
               little_endian=ts != ExplicitVRBigEndian)
    return path


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One item of a code sequence (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
