"""Fast header reading for ``radpipe scan``: the tags of :data:`~transforms.dicom_headers.HEADER_TAGS`
straight from the bytes, handed to :func:`~transforms.dicom_headers.header_from_dataset`.

pydicom builds a full ``Dataset`` (tag objects, value conversion and validation per element), which
costs several times more than reading the file. Scanning an export needs some forty plain values
per file, so :func:`read_header_fast` walks the elements of the common encodings (implicit and
explicit VR little endian, compressed pixel data included) with :mod:`struct`, decodes only the
wanted ones into a small read-only mapping, and lets the loader's own ``header_from_dataset`` build
the :class:`~transforms.dicom_headers.SliceHeader`; the result is the same object ``read_header``
returns. Anything unusual (no preamble, big endian, deflated, other character sets, multi-frame
functional groups, Siemens mosaics, DICOMDIR, truncation, odd structure) goes to
:func:`~transforms.dicom_headers.read_header`, which also raises the errors.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag

from transforms.dicom_headers import HEADER_TAGS, SliceHeader, header_from_dataset, read_header

_FIRST_READ = 16384
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_ENCODINGS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_BINARY = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4), "FL": ("f", 4), "FD": ("d", 8)}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_UNCOMPRESSED = {_IMPLICIT_LE, "1.2.840.10008.1.2.1"}
_HEAD = struct.Struct("<HH2sH").unpack_from
_U32 = struct.Struct("<I").unpack_from
_FALLBACK_SYNTAXES = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflated


def _wanted() -> dict[int, tuple[str, str]]:
    out = {}
    for item in HEADER_TAGS:
        if isinstance(item, str):
            tag = tag_for_keyword(item)
            if tag is not None:
                out[int(tag)] = (item, dictionary_VR(tag))
    out[_CHARSET] = ("SpecificCharacterSet", "CS")
    return out


_WANTED = _wanted()
_SEQUENCES = {tag for tag, (_, vr) in _WANTED.items() if vr == "SQ"}


class _Fallback(Exception):
    """The fast path cannot read this file exactly; use pydicom."""


class _NeedMore(Exception):
    """The buffer ends inside the header; read more of the file."""


class _Meta:
    """The file meta information, as far as ``header_from_dataset`` looks at it."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def get(self, keyword: str, default: Any = None) -> Any:
        return self._values.get(keyword, default)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None


class _Element:
    __slots__ = ("keyword", "value")

    def __init__(self, keyword: str, value: Any) -> None:
        self.keyword, self.value = keyword, value


class _TagKey(BaseTag):
    """A pydicom tag that compares as a plain ``int``: ``BaseTag.__eq__`` converts its operand first, which
    costs more than the rest of a lookup; as a subclass, this ``__eq__`` is the one Python calls."""

    __slots__ = ()
    __eq__ = int.__eq__  # type: ignore[assignment]
    __ne__ = int.__ne__  # type: ignore[assignment]
    __hash__ = int.__hash__


class LiteDataset(dict):  # type: ignore[type-arg]
    """Decoded header values behind the part of the ``pydicom.Dataset`` API the loader uses: ``ds[tag]``
    (an element with ``keyword`` and ``value``), ``keys()``, ``get(keyword)``, ``keyword in ds``,
    attribute access, ``file_meta`` and ``original_encoding``."""

    def __init__(self, values: dict[str, Any], elements: dict[_TagKey, _Element], meta: dict[str, str],
                 implicit: bool) -> None:
        super().__init__(elements)
        self._values = values
        self.get = values.get  # type: ignore[method-assign]  # the hot path of header_from_dataset
        self.file_meta = _Meta(meta)
        self.original_encoding = (implicit, True)
        self.is_implicit_VR = implicit

    def __contains__(self, key: object) -> bool:
        return key in self._values or dict.__contains__(self, key)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None


_TAG_KEYS = {tag: _TagKey(tag) for tag in _WANTED}


def _split(text: str) -> Any:
    return text if "\\" not in text else text.split("\\")


def _text(raw: bytes, encoding: str) -> Any:  # AE AS CS DA DT TM UI PN: trailing padding off, then split
    return _split(raw.decode(encoding).rstrip(" \x00"))


def _text_each(raw: bytes, encoding: str) -> Any:  # SH LO UC: pydicom strips every value
    text = raw.decode(encoding)
    if "\\" not in text:
        return text.rstrip("\x00 ")
    return [p.rstrip("\x00 ") for p in text.split("\\")]


def _single(raw: bytes, encoding: str) -> Any:  # LT ST UT UR: never split
    return raw.decode(encoding).rstrip("\x00 ")


def _number(text: str, integer: bool) -> float | int:
    text = text.strip()
    try:
        if not integer:
            return float(text)
        if text.lstrip("+-").isdigit():
            return int(text)
        number = float(text)
    except ValueError as e:  # pydicom keeps invalid numbers as text; do not guess
        raise _Fallback from e
    if not number.is_integer():
        raise _Fallback  # pydicom keeps a non-integral IS as text
    return int(number)


def _ds(raw: bytes, encoding: str) -> Any:
    text = raw.decode("latin-1").strip(" \x00")
    if not text:
        return None
    if "\\" not in text:
        return _number(text, False)
    return [_number(p, False) for p in text.split("\\")]


def _is(raw: bytes, encoding: str) -> Any:
    text = raw.decode("latin-1").strip(" \x00")
    if not text:
        return None
    if "\\" not in text:
        return _number(text, True)
    return [_number(p, True) for p in text.split("\\")]


def _binary(code: str, width: int) -> Any:
    def decode(raw: bytes, encoding: str) -> Any:
        n = len(raw) // width
        if n == 1:
            return struct.unpack(f"<{code}", raw[:width])[0]
        return list(struct.unpack(f"<{n}{code}", raw[: n * width])) if n else None
    return decode


_DECODERS: dict[str, Any] = {
    **{vr: _text for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UI", "PN")},
    **{vr: _text_each for vr in ("SH", "LO", "UC")},
    **{vr: _single for vr in ("LT", "ST", "UT", "UR")},
    "DS": _ds, "IS": _is,
    **{vr: _binary(code, width) for vr, (code, width) in _BINARY.items()},
}


def _skip_undefined(buf: bytes, pos: int, implicit: bool) -> int:
    """Position after an undefined-length sequence starting at ``pos`` (its first item)."""
    while True:
        if pos + 8 > len(buf):
            raise _NeedMore
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000):
            raise _Fallback
        if length != 0xFFFFFFFF:
            pos += length
            continue
        pos = _walk(buf, pos, implicit, {}, item=True)[0]


def _walk(buf: bytes, pos: int, implicit: bool, out: dict[int, tuple[bytes | None, bytes]],
          item: bool = False) -> tuple[int, bool, int | None]:
    """Walk elements from ``pos``; collect the raw values of wanted tags into ``out`` (tag -> (VR or None, bytes)).

    Returns:
        The position after the walk (after the item delimiter for ``item``; at the pixel data
        element otherwise), whether the pixel data element was reached, and the end of its value
        (``None`` when absent or encapsulated).
    """
    size = len(buf)
    wanted = _WANTED
    while True:
        if pos + 8 > size:
            if pos == size and not item:
                return pos, False, None
            raise _NeedMore
        group, elem, vr, short = _HEAD(buf, pos)
        if group == 0xFFFE:
            if item and elem == 0xE00D:
                return pos + 8, False, None
            raise _Fallback
        tag = group << 16 | elem
        if implicit:
            length = short << 16 | vr[0] | vr[1] << 8
            start = pos + 8
            vr = None
        elif vr in _LONG_VRS:
            if pos + 12 > size:
                raise _NeedMore
            length = _U32(buf, pos + 8)[0]
            start = pos + 12
        else:
            length = short
            start = pos + 8
        if tag == _PIXEL_DATA and not item:
            return start, True, (None if length == 0xFFFFFFFF else start + length)
        if tag in _SEQUENCES and not item:
            raise _Fallback  # functional groups or directory records: let pydicom read them
        if length == 0xFFFFFFFF:
            if vr not in (None, b"SQ", b"UN"):
                raise _Fallback
            pos = _skip_undefined(buf, start, implicit)
            continue
        end = start + length
        if end > size:
            raise _NeedMore
        if tag in wanted and not item:
            out[tag] = (vr, buf[start:end])
        pos = end


def _meta(buf: bytes) -> tuple[dict[str, str], int]:
    if len(buf) < 144 or buf[128:132] != b"DICM":
        raise _Fallback
    pos, meta = 132, {}
    while pos + 8 <= len(buf):
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return meta, pos
        vr = buf[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            length, head = struct.unpack_from("<I", buf, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from("<H", buf, pos + 6)[0], 8
        value = buf[pos + head:pos + head + length]
        if elem == 0x0010:
            meta["TransferSyntaxUID"] = value.decode("ascii").rstrip("\x00 ")
        elif elem == 0x0002:
            meta["MediaStorageSOPClassUID"] = value.decode("ascii").rstrip("\x00 ")
        pos += head + length
    raise _NeedMore


_DECODING = {tag: (keyword, vr.encode("ascii"), _DECODERS.get(vr), _TAG_KEYS[tag])
             for tag, (keyword, vr) in _WANTED.items()}


def _parse(buf: bytes, file_size: int) -> tuple[LiteDataset, bool, int | None, int | None]:
    """The dataset, whether it has pixel data, and the pixel data's length and end (``None``: encapsulated)."""
    meta, pos = _meta(buf)
    syntax = meta.get("TransferSyntaxUID", "")
    if not syntax or syntax in _FALLBACK_SYNTAXES:
        raise _Fallback
    implicit = syntax == _IMPLICIT_LE
    raw: dict[int, tuple[bytes | None, bytes]] = {}
    pixel_start, found_pixels, pixel_end = _walk(buf, pos, implicit, raw)
    if not found_pixels and len(buf) < file_size:
        raise _NeedMore  # the walk stopped at the end of the buffer, not of the file
    charset_raw = raw.pop(_CHARSET, None)
    charset = charset_raw[1].decode("latin-1").strip("\x00 ") if charset_raw else ""
    if charset not in _ENCODINGS:
        raise _Fallback
    encoding = _ENCODINGS[charset]
    values: dict[str, Any] = {}
    elements: dict[_TagKey, _Element] = {}
    for tag, (file_vr, data) in raw.items():
        keyword, vr_bytes, decoder, key = _DECODING[tag]
        if file_vr is not None and file_vr != vr_bytes and file_vr != b"UN":  # the file's own VR wins
            decoder = _DECODERS.get(file_vr.decode("ascii", "replace"))
        if decoder is None:
            raise _Fallback
        value = values[keyword] = decoder(data, encoding)
        elements[key] = _Element(keyword, value)
    if "MOSAIC" in str(values.get("ImageType", "")).upper():
        raise _Fallback  # mosaics need the Siemens CSA header
    if charset_raw is not None:
        values["SpecificCharacterSet"] = charset
        elements[_TAG_KEYS[_CHARSET]] = _Element("SpecificCharacterSet", charset)
    pixel_length = None if pixel_end is None else pixel_end - pixel_start
    return LiteDataset(values, elements, meta, implicit), found_pixels, pixel_length, pixel_end


def read_header_fast(path: str | Path) -> SliceHeader:
    """Read one file's header like :func:`~transforms.dicom_headers.read_header`, several times faster.

    Args:
        path: a DICOM file.

    Returns:
        The same :class:`~transforms.dicom_headers.SliceHeader` ``read_header`` returns.

    Raises:
        NotAnImageError, DicomReadError: as ``read_header`` (which handles every file the fast path
            does not read exactly).
    """
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            buf = f.read(_FIRST_READ)
            while True:
                try:
                    ds, found_pixels, pixel_length, pixel_end = _parse(buf, file_size)
                    break
                except _NeedMore:
                    if len(buf) >= file_size:
                        raise _Fallback from None  # cut inside the header
                    buf += f.read(max(len(buf), _FIRST_READ))
    except (_Fallback, OSError, UnicodeDecodeError, struct.error, KeyError, ValueError):
        return read_header(path)
    try:
        header = header_from_dataset(ds, path)  # type: ignore[arg-type]
    except (AttributeError, TypeError, KeyError):
        return read_header(path)  # the loader looks at something this view lacks: stay correct
    if not found_pixels or (pixel_end is not None and pixel_end > file_size):
        return read_header(path)  # no pixel data, or cut inside it: the loader says what it is
    if pixel_length is not None and header.transfer_syntax in _UNCOMPRESSED:
        expected = (header.rows * header.cols * header.number_of_frames * header.samples_per_pixel
                    * max(header.bits_allocated, 1) + 7) // 8
        if pixel_length < expected:
            return read_header(path)
    return header
