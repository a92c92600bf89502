"""Fast header reading for ``radpipe scan``: the tags of :data:`~transforms.dicom.header_values.HEADER_TAGS`
straight from the bytes (:mod:`transforms.dicom.raw`), built by the loader's own
:func:`~transforms.dicom.fields.header_fields`.

The result is the same header :func:`~transforms.dicom.headers.read_header` returns. Anything the
byte parser does not read exactly (no preamble, big endian, deflated, other character sets,
multi-frame functional groups, Siemens mosaics, DICOMDIR, truncation, odd structure) goes to
``read_header``, which also raises the errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.fields import check_pixel_data, header_fields, header_fields_like, missing_pixels_error
from transforms.dicom.header_values import HEADER_KEYWORDS, PER_FILE_KEYWORDS, PRIVATE_KEYWORDS
from transforms.dicom.raw import (
    NOT_DICOM,
    UNCOMPRESSED_LE,
    NotAnImage,
    NotDicom,
    NotFast,
    ParsedFile,
    decode_values,
    parse_file,
)
from transforms.dicom.slice_header import SliceHeader, header_from_fields
from transforms.dicom.sop import is_image_class

_CANNOT_BUILD = (AttributeError, TypeError, KeyError, ValueError)
_PER_FILE_TAGS = frozenset((HEADER_KEYWORDS | PRIVATE_KEYWORDS)[k][0] for k in PER_FILE_KEYWORDS)
_SHARED = "shared fields"  # memo keys of series templates start with this (decoded values' keys with a tag)


def read_header(path: str | Path) -> SliceHeader:
    """:func:`transforms.dicom.headers.read_header`, imported on first use: pydicom costs 0.15 s of start-up."""
    from transforms.dicom.headers import read_header as read_with_pydicom

    return read_with_pydicom(path)


def _shared_key(parsed: ParsedFile) -> tuple[Any, ...]:
    """What a file shares with the other files of its series: every raw element but the per-file ones."""
    return (_SHARED, parsed.transfer_syntax, parsed.media_sop_class, parsed.values.get("SpecificCharacterSet"),
            *[item for item in parsed.elements.items() if item[0] not in _PER_FILE_TAGS])


def read_fields_fast(path: str | Path, memo: dict[Any, Any] | None = None) -> dict[str, Any] | SliceHeader:
    """The fields of one file's header (``SliceHeader(**fields)`` equals ``read_header(path)``).

    Args:
        path: a DICOM file.
        memo: decoded header values shared by a batch of files (see
            :func:`transforms.dicom.raw.parse_bytes`), and the fields of each series' first file:
            a file whose raw elements equal those of an earlier one but for the per-file ones
            (:data:`~transforms.dicom.header_values.PER_FILE_KEYWORDS`) gets the earlier fields with
            its own per-file fields. Keep it to a few thousand files.

    Returns:
        A dict of :class:`~transforms.dicom.slice_header.SliceHeader` fields, or the header itself when
        the file had to be read by ``read_header`` (building it twice would cost time).

    Raises:
        NotAnImageError, DicomReadError: as ``read_header``.
    """
    try:
        parsed, _, file_size = parse_file(str(path), memo=memo, decode=False)
        key = like = None
        if memo is not None:
            key = _shared_key(parsed)
            like = memo.get(key)
        decode_values(parsed, memo, _PER_FILE_TAGS if like is not None else None)  # a series' shared values: once
    except NotDicom:
        raise DicomReadError(f"{path}: {NOT_DICOM}") from None
    except NotAnImage as e:
        raise NotAnImageError(f"{path}: {e.args[0]}; not an image, skipped") from None
    except (NotFast, OSError):
        return read_header(path)
    if like is not None:
        fields = header_fields_like(parsed.values, path, like)
    else:
        try:
            fields = header_fields(parsed.values, path, transfer_syntax=parsed.transfer_syntax,
                                   media_sop_class=parsed.media_sop_class)
        except _CANNOT_BUILD:
            return read_header(path)  # the loader looks at something this view lacks: stay correct
        if memo is not None:
            memo[key] = dict(fields)  # a copy: callers may change theirs (pseudonymisation)
    offset, length = parsed.pixel_offset, parsed.pixel_length
    if offset is None:
        if is_image_class(fields["sop_class_uid"] or parsed.media_sop_class):
            raise missing_pixels_error(path, fields["sop_class_uid"] or parsed.media_sop_class, file_size)
        return read_header(path)  # the loader says what it is
    native = parsed.transfer_syntax in UNCOMPRESSED_LE
    if length is not None:
        check_pixel_data(path, offset=offset, length=length, size=file_size, rows=fields["rows"], cols=fields["cols"],
                         frames=fields["number_of_frames"], samples=fields["samples_per_pixel"],
                         bits=fields["bits_allocated"], native=native)
    fields["pixel_offset"] = offset if native and length is not None else None  # convert reads the pixels there
    return fields


def read_header_fast(path: str | Path) -> SliceHeader:
    """Read one file's header like :func:`~transforms.dicom.headers.read_header`, several times faster.

    Args:
        path: a DICOM file.

    Returns:
        The same :class:`~transforms.dicom.slice_header.SliceHeader` ``read_header`` returns.

    Raises:
        NotAnImageError, DicomReadError: as ``read_header`` (which handles every file the fast path
            does not read exactly).
    """
    fields = read_fields_fast(path)
    return fields if isinstance(fields, SliceHeader) else header_from_fields(fields)

