"""Header-only DICOM reading with pydicom: the tags of :data:`~transforms.dicom.header_values.HEADER_TAGS`.

:func:`read_header` reads a file up to (not including) its pixel data, and only those tags, into a
small frozen :class:`~transforms.dicom.slice_header.SliceHeader`, and checks that the pixel data is
there and complete. :func:`header_from_dataset` builds the header of a dataset already read; Siemens
mosaic details come from the private CSA header.
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.fields import check_image, check_pixel_data, fields_from_values, missing_pixels_error
from transforms.dicom.header_values import (
    HEADER_TAGS,
    PIXEL_DATA_TAGS,
    PRIVATE_KEYWORDS,
    SIEMENS_MOSAIC_COUNT,
    as_int,
)
from transforms.dicom.raw import NOT_DICOM
from transforms.dicom.sop import is_image_class
from transforms.dicom.slice_header import SliceHeader, Vec3

_SPECIFIC_TAGS = [*HEADER_TAGS, *PIXEL_DATA_TAGS]
_WANTED_TAGS = frozenset(int(Tag(t)) for t in (*HEADER_TAGS, "SpecificCharacterSet"))
_PRIVATE_BY_TAG = {tag: (keyword, vr) for keyword, (tag, vr) in PRIVATE_KEYWORDS.items()}


def read_dataset(path: Path, *, header_only: bool = True) -> Dataset:
    """Read a DICOM file with pydicom, accepting old files without preamble but not arbitrary files.

    Args:
        path: the file.
        header_only: stop before the pixel data and read only :data:`HEADER_TAGS`.

    Returns:
        The dataset.

    Raises:
        DicomReadError: missing, a folder, not DICOM, gzip-compressed, or damaged.
    """
    # header-only: the pixel data element is listed but deferred, so its offset and length are known
    # (to catch truncated files) without reading it
    kwargs: dict[str, Any] = {"defer_size": 1024, "specific_tags": _SPECIFIC_TAGS} if header_only else {}
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError as e:
        with open(path, "rb") as f:
            if f.read(132)[128:] == b"DICM":  # a DICOM file, so damaged
                raise DicomReadError(f"{path}: cannot read DICOM header ({e}); the file is damaged or truncated: "
                                     "re-export it or leave it out") from e
        # no 128-byte preamble + "DICM": maybe an old file written without one
    except FileNotFoundError as e:
        raise DicomReadError(f"{path}: file not found; check the path") from e
    except IsADirectoryError as e:
        raise DicomReadError(f"{path}: is a folder, expected a DICOM file") from e
    except Exception as e:
        raise DicomReadError(f"{path}: cannot read DICOM header ({type(e).__name__}: {e}); the file is damaged or "
                             "truncated: re-export it or leave it out") from e
    try:
        ds = pydicom.dcmread(path, force=True, **kwargs)
    except Exception as e:
        raise DicomReadError(f"{path}: not a DICOM file (no 'DICM' marker and no readable header: "
                             f"{type(e).__name__}); leave it out of the export") from e
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        raise DicomReadError(f"{path}: gzip-compressed file, not plain DICOM; decompress it (gunzip) first")
    if not any(k in ds for k in ("SOPClassUID", "Rows", "StudyInstanceUID", "SeriesInstanceUID")):
        raise DicomReadError(f"{path}: {NOT_DICOM}")
    return ds


def _check_pixel_data(path: Path, ds: Dataset, header: SliceHeader) -> None:
    """Catch files without pixel data, or cut short inside it, from the deferred pixel data element."""
    raw = next((ds.get_item(tag, keep_deferred=True) for tag in PIXEL_DATA_TAGS if tag in ds), None)
    if raw is None:
        sop_class = _sop_class(ds)
        if is_image_class(sop_class):
            raise missing_pixels_error(path, sop_class, os.path.getsize(path))
        raise NotAnImageError(f"{path}: {UID(sop_class).name or 'object'} without pixel data; not an image, "
                              "skipped")
    length, offset = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    if length is None or offset is None or length == 0xFFFFFFFF:
        return  # encapsulated (compressed) data: checked when decoded
    syntax = UID(header.transfer_syntax) if header.transfer_syntax else None
    native = raw.tag == PIXEL_DATA_TAGS[0] and not (syntax is not None and (syntax.is_compressed or syntax.is_deflated))
    check_pixel_data(path, offset=offset, length=length, size=os.path.getsize(path), rows=header.rows,
                     cols=header.cols, frames=header.number_of_frames, samples=header.samples_per_pixel,
                     bits=header.bits_allocated, native=native)


def read_header(path: str | Path) -> SliceHeader:
    """Read the header of one DICOM file (no pixel data) into a :class:`SliceHeader`.

    Args:
        path: a DICOM file.

    Returns:
        The header.

    Raises:
        NotAnImageError: a valid DICOM object that holds no image (SR, RTSTRUCT, presentation
            state, DICOMDIR, ...); the message says what it is.
        DicomReadError: not DICOM, damaged or truncated; the message names the file and reason.
    """
    path = Path(path)
    ds = read_dataset(path)
    header = header_from_dataset(ds, path)
    _check_pixel_data(path, ds, header)
    return header


def header_from_dataset(ds: Dataset, path: str | Path) -> SliceHeader:
    """Build a :class:`SliceHeader` from a dataset already read (header-only or complete).

    Args:
        ds: the dataset.
        path: its file.

    Returns:
        The header, with the Siemens mosaic details of a mosaic.

    Raises:
        NotAnImageError: the dataset holds no image.
        DicomReadError: an image object without a matrix (damaged).
    """
    path = Path(path)
    check_image(ds, _sop_class(ds), path)
    v = _values(ds)
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "")) if meta is not None else ""
    if not transfer_syntax:
        implicit = getattr(ds, "original_encoding", (None, None))[0]
        transfer_syntax = "1.2.840.10008.1.2" if implicit in (True, None) else "1.2.840.10008.1.2.1"
    fields = fields_from_values(v, path, transfer_syntax)
    if fields["is_mosaic"]:
        fields["mosaic_count"], fields["mosaic_normal"] = _mosaic_info(ds)
    return SliceHeader(**fields)


def _values(ds: Dataset) -> dict[str, Any]:
    """The elements of :data:`HEADER_TAGS` present in ``ds`` by keyword, each converted once."""
    values: dict[str, Any] = {}
    for tag in ds.keys():
        if int(tag) in _WANTED_TAGS:
            elem = ds[tag]
            private = _PRIVATE_BY_TAG.get(int(tag))
            if private is None:
                values[elem.keyword or str(tag)] = elem.value
            elif isinstance(elem.value, (int, float)) or not elem.value:
                values[private[0]] = elem.value
            elif private[1] == "FL" and isinstance(elem.value, bytes) and len(elem.value) >= 4:
                values[private[0]] = struct.unpack_from("<f", elem.value)[0]  # implicit VR: bytes as stored
    return values


def _sop_class(ds: Dataset) -> str:
    return str(ds.get("SOPClassUID", "") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))


def _mosaic_info(ds: Dataset) -> tuple[int | None, Vec3 | None]:
    """Number of images in a Siemens mosaic and the slice normal, from (0019,100A) and the CSA image header."""
    count = as_int(ds[SIEMENS_MOSAIC_COUNT].value) if SIEMENS_MOSAIC_COUNT in ds else None
    normal = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that its readers are experimental
            from nibabel.nicom import csareader

        csa = csareader.get_csa_header(ds, "image")
        if csa:
            count = count or int(csareader.get_n_mosaic(csa))
            vector = csareader.get_slice_normal(csa)
            normal = tuple(float(v) for v in vector) if vector is not None else None
    except Exception:  # noqa: BLE001 - a damaged private header only loses these optional fields
        pass
    return count, normal
