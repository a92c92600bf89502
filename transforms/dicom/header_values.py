"""Which DICOM header values are read, which differ between the files of a series, and their decoding.

:data:`HEADER_TAGS` are the only tags a header read takes (by pydicom in
:mod:`transforms.dicom.headers`, from the bytes in :mod:`transforms.dicom.raw`);
:data:`PER_FILE_KEYWORDS` are those of them whose values are each file's own. The ``as_*``
functions turn values as pydicom gives them (text, numbers, multi-values, empty) into plain Python
values, or ``None`` when absent or unreadable.
"""
from __future__ import annotations

from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

SIEMENS_MOSAIC_COUNT = Tag(0x0019, 0x100A)
SIEMENS_CSA_TAGS = (Tag(0x0029, 0x0010), Tag(0x0029, 0x0011), Tag(0x0029, 0x1010), Tag(0x0029, 0x1110))

HEADER_TAGS: tuple[Any, ...] = (
    "SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "Manufacturer", "ManufacturerModelName", "InstitutionName", "BodyPartExamined",
    "ImageType", "Rows", "Columns", "PixelSpacing", "ImagerPixelSpacing", "ImageOrientationPatient",
    "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices", "SliceLocation", "InstanceNumber",
    "EchoNumbers", "EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength",
    "AcquisitionNumber", "AcquisitionTime", "ContentTime", "TemporalPositionIdentifier",
    "NumberOfTemporalPositions", "TriggerTime", "NumberOfFrames", "PhotometricInterpretation",
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
    "GantryDetectorTilt", "GridFrameOffsetVector", "ConvolutionKernel", "KVP", "ViewPosition", "PatientPosition",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "DirectoryRecordSequence",
    SIEMENS_MOSAIC_COUNT, *SIEMENS_CSA_TAGS,
)

PIXEL_DATA_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))

# Header values that differ between the files of one series (or may: PET rescales each slice);
# every other value a series' files share. SliceLocation is read but used by no field.
PER_FILE_KEYWORDS = ("SOPInstanceUID", "ImagePositionPatient", "SliceLocation", "InstanceNumber", "EchoNumbers",
                     "EchoTime", "AcquisitionNumber", "AcquisitionTime", "ContentTime", "TemporalPositionIdentifier",
                     "TriggerTime", "RescaleSlope", "RescaleIntercept")


def as_text(ds: Dataset | dict[str, Any], keyword: str) -> str:
    """The value of ``keyword`` in ``ds`` as stripped text, multi-values joined by ``\\``; ``""`` when absent.

    Args:
        ds: a dataset or a keyword -> value mapping.
        keyword: the DICOM keyword.

    Returns:
        The text.
    """
    value = ds.get(keyword)
    if type(value) is str:  # the common case, without the ABC check below
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def as_float(value: Any) -> float | None:
    """A number, or the first of a multi-value, as float.

    Args:
        value: a header value.

    Returns:
        The number, or ``None`` when empty or not a number.
    """
    if type(value) is float or type(value) is int:
        return float(value)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
        if value is None or value == "":
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def as_int(value: Any) -> int | None:
    """:func:`as_float` rounded to the nearest integer.

    Args:
        value: a header value.

    Returns:
        The integer, or ``None`` when empty or not a number.
    """
    number = as_float(value)
    return None if number is None else int(round(number))


def as_floats(value: Any, n: int) -> tuple[float, ...] | None:
    """A multi-value of exactly ``n`` numbers as a tuple of floats.

    Args:
        value: a header value.
        n: how many numbers it must hold.

    Returns:
        The numbers, or ``None`` when absent, text, not numbers or not ``n`` of them.
    """
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n else None


def first_item(ds: Dataset | dict[str, Any] | None, keyword: str) -> Dataset | None:
    """The first item of the sequence ``keyword`` in ``ds``.

    Args:
        ds: a dataset, a keyword -> value mapping, or ``None``.
        keyword: the sequence's keyword.

    Returns:
        The item, or ``None`` when ``ds`` is ``None`` or the sequence is absent or empty.
    """
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None
