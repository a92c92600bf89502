"""Which DICOM objects hold images: SOP classes that never do, and the storage families that do."""
from __future__ import annotations

import functools
from typing import Any

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

# SOP classes that never hold a scan (the UID itself or any UID below it), with what they are.
NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88": "structured report (SR/KOS)",
    "1.2.840.10008.5.1.4.1.1.11": "presentation state",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.66": "raw data / registration / segmentation",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9": "waveform",
    "1.2.840.10008.5.1.4.1.1.67": "real world value mapping",
    MEDIA_STORAGE_DIRECTORY: "DICOMDIR (media directory)",
}
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
# Storage families (first UID component below the root) whose objects are images: a header of one of
# these without Rows/Columns is damaged, not a non-image object.
_IMAGE_FAMILIES = {"1", "2", "3", "4", "6", "7", "12", "13", "20", "77", "128", "130", "481"}


# The names of the image storage classes and transfer syntaxes an export mostly holds (a test checks
# them against pydicom's):
# naming one in a message then needs no pydicom import, which costs a scan's reader 0.15 s.
_COMMON_NAMES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 and 4)",
    "1.2.840.10008.1.2.4.70":
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless Image Compression",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Lossy (Near-Lossless) Image Compression",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}


def uid_name(uid: str) -> str:
    """The name of a UID in the DICOM standard (``uid`` itself when it names nothing known)."""
    name = _COMMON_NAMES.get(uid)
    if name is not None:
        return name
    from pydicom.uid import UID  # the rare ones, for messages only: scanning imports no pydicom

    return UID(uid).name


def _matches(uid: str, root: str) -> bool:
    return uid == root or uid.startswith(root + ".")


def is_image_class(uid: str) -> bool:
    """True for the storage SOP classes whose objects are images."""
    if not uid.startswith(_STORAGE_ROOT):
        return False
    parts = uid[len(_STORAGE_ROOT):].split(".")
    if parts[0] == "481":  # RT: only RT Image (.1) and RT Dose (.2) hold pixels
        return len(parts) > 1 and parts[1] in ("1", "2")
    return parts[0] in _IMAGE_FAMILIES


@functools.lru_cache(maxsize=256)
def class_reason(sop_class: str) -> str | None:
    """Why objects of ``sop_class`` hold no image, whatever their header says; None when they may."""
    for root, what in NON_IMAGE_SOP_CLASSES.items():
        if _matches(sop_class, root):
            return f"{what} (SOP class {sop_class})"
    if _matches(sop_class, _STORAGE_ROOT + "481") and not is_image_class(sop_class):
        return f"RT object {uid_name(sop_class)} (SOP class {sop_class})"
    return None


def media_class_reason(media_sop_class: str) -> str | None:
    """:func:`non_image_reason` from the file meta's MediaStorageSOPClassUID alone (before the dataset is read)."""
    if media_sop_class == MEDIA_STORAGE_DIRECTORY:
        return NON_IMAGE_SOP_CLASSES[MEDIA_STORAGE_DIRECTORY]
    return class_reason(media_sop_class)


def non_image_reason(ds: Any, sop_class: str) -> str | None:
    """Why a header (a pydicom ``Dataset`` or a keyword -> value mapping) holds no image; None when it may."""
    if "DirectoryRecordSequence" in ds:
        return NON_IMAGE_SOP_CLASSES[MEDIA_STORAGE_DIRECTORY]
    reason = class_reason(sop_class)
    if reason is not None:
        return reason
    if not ds.get("Rows") or not ds.get("Columns"):
        if is_image_class(sop_class) or not is_known_class(sop_class):
            return None  # an image class without a matrix, or a class cut short: damaged, reported by the caller
        return f"no image (no Rows/Columns; SOP class {sop_class})"
    return None


def is_known_class(uid: str) -> bool:
    """True for a SOP class the DICOM standard defines, or a vendor's private one (outside the standard's
    root); False for one under the standard's root that it does not define (or absent): a damaged header."""
    if not uid or "1.2.840.10008.".startswith(uid):  # absent, or the standard's root cut short
        return False
    if not uid.startswith("1.2.840.10008."):
        return True
    if uid in _COMMON_NAMES:
        return True
    from pydicom.uid import UID  # a rare path: the common classes are answered above

    return UID(uid).is_valid and UID(uid).name != uid
