"""Which DICOM header values are read, which differ between the files of a series, and their decoding.

:data:`HEADER_TAGS` are the only tags a header read takes (by pydicom in
:mod:`transforms.dicom.headers`, from the bytes in :mod:`transforms.dicom.raw`);
:data:`PER_FILE_KEYWORDS` are those of them whose values are each file's own. The ``as_*``
functions turn values as pydicom gives them (text, numbers, multi-values, empty) into plain Python
values, or ``None`` when absent or unreadable.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

SIEMENS_MOSAIC_COUNT = 0x0019100A
SIEMENS_CSA_TAGS = (0x00290010, 0x00290011, 0x00291010, 0x00291110)

# keyword -> (tag, VR) as in the DICOM data dictionary (a test checks them against pydicom's), so
# that reading headers from bytes needs no pydicom import: it costs a scan 0.15 s of start-up.
HEADER_KEYWORDS: dict[str, tuple[int, str]] = {
    "SOPClassUID": (0x00080016, "UI"), "SOPInstanceUID": (0x00080018, "UI"), "Modality": (0x00080060, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"), "SeriesInstanceUID": (0x0020000E, "UI"),
    "FrameOfReferenceUID": (0x00200052, "UI"), "PatientID": (0x00100020, "LO"), "PatientName": (0x00100010, "PN"),
    "PatientBirthDate": (0x00100030, "DA"), "PatientSex": (0x00100040, "CS"), "PatientAge": (0x00101010, "AS"),
    "AccessionNumber": (0x00080050, "SH"), "StudyDate": (0x00080020, "DA"), "StudyTime": (0x00080030, "TM"),
    "StudyDescription": (0x00081030, "LO"), "SeriesNumber": (0x00200011, "IS"),
    "SeriesDescription": (0x0008103E, "LO"), "ProtocolName": (0x00181030, "LO"), "Manufacturer": (0x00080070, "LO"),
    "ManufacturerModelName": (0x00081090, "LO"), "InstitutionName": (0x00080080, "LO"),
    "BodyPartExamined": (0x00180015, "CS"), "ImageType": (0x00080008, "CS"), "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"), "PixelSpacing": (0x00280030, "DS"), "ImagerPixelSpacing": (0x00181164, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"), "ImagePositionPatient": (0x00200032, "DS"),
    "SliceThickness": (0x00180050, "DS"), "SpacingBetweenSlices": (0x00180088, "DS"),
    "SliceLocation": (0x00201041, "DS"), "InstanceNumber": (0x00200013, "IS"), "EchoNumbers": (0x00180086, "IS"),
    "EchoTime": (0x00180081, "DS"), "RepetitionTime": (0x00180080, "DS"), "InversionTime": (0x00180082, "DS"),
    "FlipAngle": (0x00181314, "DS"), "MagneticFieldStrength": (0x00180087, "DS"),
    "AcquisitionNumber": (0x00200012, "IS"), "AcquisitionTime": (0x00080032, "TM"), "ContentTime": (0x00080033, "TM"),
    "TemporalPositionIdentifier": (0x00200100, "IS"), "NumberOfTemporalPositions": (0x00200105, "IS"),
    "TriggerTime": (0x00181060, "DS"), "NumberOfFrames": (0x00280008, "IS"),
    "PhotometricInterpretation": (0x00280004, "CS"), "SamplesPerPixel": (0x00280002, "US"),
    "BitsAllocated": (0x00280100, "US"), "BitsStored": (0x00280101, "US"), "PixelRepresentation": (0x00280103, "US"),
    "RescaleSlope": (0x00281053, "DS"), "RescaleIntercept": (0x00281052, "DS"),
    "GantryDetectorTilt": (0x00181120, "DS"), "GridFrameOffsetVector": (0x3004000C, "DS"),
    "ConvolutionKernel": (0x00181210, "SH"), "KVP": (0x00180060, "DS"), "ViewPosition": (0x00185101, "CS"),
    "PatientPosition": (0x00185100, "CS"), "SharedFunctionalGroupsSequence": (0x52009229, "SQ"),
    "PerFrameFunctionalGroupsSequence": (0x52009230, "SQ"), "DirectoryRecordSequence": (0x00041220, "SQ"),
    "DiffusionBValue": (0x00189087, "FD"), "DiffusionGradientOrientation": (0x00189089, "FD"),
    "WindowCenter": (0x00281050, "DS"), "WindowWidth": (0x00281051, "DS"), "VOILUTFunction": (0x00281056, "CS"),
}

# Private values read by their tag (block 10 of their group, as Philips writes them), named here: Philips'
# floating-point scale slope, b-value and gradient direction, used only for files whose Manufacturer is Philips.
PRIVATE_KEYWORDS: dict[str, tuple[int, str]] = {
    "PhilipsScaleSlope": (0x2005100E, "FL"), "PhilipsBValue": (0x20011003, "FL"),
    "PhilipsGradientRL": (0x200510B0, "FL"), "PhilipsGradientAP": (0x200510B1, "FL"),
    "PhilipsGradientFH": (0x200510B2, "FL"),
}
# How the loader scales Philips values: DICOM's display values, or Philips' floating-point values.
PHILIPS_SCALINGS = ("display", "fp")

HEADER_TAGS: tuple[str | int, ...] = (*HEADER_KEYWORDS, SIEMENS_MOSAIC_COUNT, *SIEMENS_CSA_TAGS,
                                      *(tag for tag, _ in PRIVATE_KEYWORDS.values()))

PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

# Header values that differ between the files of one series (or may: PET rescales each slice);
# every other value a series' files share. SliceLocation is read but used by no field.
PER_FILE_KEYWORDS = ("SOPInstanceUID", "ImagePositionPatient", "SliceLocation", "InstanceNumber", "EchoNumbers",
                     "EchoTime", "AcquisitionNumber", "AcquisitionTime", "ContentTime", "TemporalPositionIdentifier",
                     "TriggerTime", "RescaleSlope", "RescaleIntercept", "PhilipsScaleSlope",
                     "DiffusionBValue", "DiffusionGradientOrientation", "PhilipsBValue", "PhilipsGradientRL",
                     "PhilipsGradientAP", "PhilipsGradientFH")


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
    if (isinstance(value, Sequence) and not isinstance(value, (str, bytes))):
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
    if (isinstance(value, Sequence) and not isinstance(value, (str, bytes))):
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
