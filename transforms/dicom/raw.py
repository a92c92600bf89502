"""DICOM header values and the pixel data's place, straight from a file's bytes.

pydicom builds a full ``Dataset`` (tag objects, value conversion and validation per element), which
costs several times more than reading the file. Scanning an export or loading a series needs some
forty plain values per file, so :func:`parse_bytes` walks the elements of the common encodings
(implicit and explicit VR little endian, compressed pixel data included) with :mod:`struct`, decodes
only the tags of :data:`~transforms.dicom.header_values.HEADER_TAGS` into a plain ``keyword -> value``
mapping (values as pydicom gives them: text, numbers, lists) and notes where the pixel data lies.
:func:`transforms.dicom.native.native_pixels` turns that pixel data into the array pydicom's ``pixel_array``
gives for uncompressed little-endian greyscale images.

Anything unusual (no preamble, big endian, deflated, other character sets, sequences the header
needs such as multi-frame functional groups, modality LUTs, Siemens mosaics, DICOMDIR, truncation,
odd structure) raises :class:`NotFast`: the caller reads the file with pydicom, which also raises the
errors.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

from transforms.dicom.header_values import HEADER_KEYWORDS, PRIVATE_KEYWORDS
from transforms.dicom.sop import media_class_reason

FIRST_READ = 16384
UNCOMPRESSED_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
# present: the values this module gives are not the whole story (pixel value mapping pydicom applies)
_REFUSED = {0x00283000, 0x3004000E, 0x00283010}  # ModalityLUTSequence, DoseGridScaling, VOILUTSequence
_ENCODINGS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_BINARY = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4), "FL": ("f", 4), "FD": ("d", 8)}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_HEAD = struct.Struct("<HH2sH").unpack_from
_HEAD_IMPLICIT = struct.Struct("<HHI").unpack_from
_U32 = struct.Struct("<I").unpack_from
_FALLBACK_SYNTAXES = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflated


_WANTED = {tag: (keyword, vr) for keyword, (tag, vr) in (HEADER_KEYWORDS | PRIVATE_KEYWORDS).items()}
_WANTED[_CHARSET] = ("SpecificCharacterSet", "CS")
_STOP = {tag for tag, (_, vr) in _WANTED.items() if vr == "SQ"} | _REFUSED


class NotFast(Exception):
    """This file cannot be read exactly from its bytes; read it with pydicom."""


class NotDicom(NotFast):
    """The file is not DICOM: no preamble with 'DICM', and its first bytes are no element of group 0002 or 0008."""


NOT_DICOM = "not a DICOM file (no 'DICM' marker and no DICOM identifiers); leave it out of the export"
# The first two bytes of a file written without preamble: group 0002 or 0008, either byte order; gzip.
_HEADLESS_STARTS = {b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08", b"\x1f\x8b"}


class NotAnImage(NotFast):
    """The file meta's SOP class never holds an image (DICOMDIR, SR, RT plan, ...): ``args[0]`` says what it is."""


class NeedMore(Exception):
    """The buffer ends inside the header; read more of the file."""


@dataclass(frozen=True)
class ParsedFile:
    """What :func:`parse_bytes` found in a file.

    Attributes:
        values: header values by keyword (``SpecificCharacterSet`` included when present).
        transfer_syntax: the file meta's TransferSyntaxUID.
        media_sop_class: the file meta's MediaStorageSOPClassUID.
        has_pixels: the file holds a (7FE0,0010) Pixel Data element.
        pixel_offset: where the pixel data's value starts (``None`` without pixel data).
        pixel_length: the value's length (``None``: encapsulated or absent).
        elements: the raw elements ``values`` were decoded from (tag -> (VR or None, bytes)), in file
            order, without the SpecificCharacterSet (in ``values``); what two files share, byte for byte.
        encoding: the Python codec of the file's SpecificCharacterSet (:func:`decode_values` uses it).
    """

    values: dict[str, Any]
    transfer_syntax: str
    media_sop_class: str
    has_pixels: bool
    pixel_offset: int | None
    pixel_length: int | None
    elements: dict[int, tuple[bytes | None, bytes]] = field(default_factory=dict)
    encoding: str = "latin-1"


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
        raise NotFast from e
    if not number.is_integer():
        raise NotFast  # pydicom keeps a non-integral IS as text
    return int(number)


def _numeric(integer: bool) -> Any:  # DS (decimal string) or IS (integer string): one value or a list
    def decode(raw: bytes, encoding: str) -> Any:
        text = raw.decode("latin-1").strip(" \x00")
        if not text:
            return None
        if "\\" not in text:
            return _number(text, integer)
        return [_number(p, integer) for p in text.split("\\")]
    return decode


def _binary(code: str, width: int) -> Any:
    one = struct.Struct(f"<{code}").unpack_from

    def decode(raw: bytes, encoding: str) -> Any:
        n = len(raw) // width
        if n == 1:
            return one(raw)[0]
        return list(struct.unpack(f"<{n}{code}", raw[: n * width])) if n else None
    return decode


_DECODERS: dict[str, Any] = {
    **{vr: _text for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UI", "PN")},
    **{vr: _text_each for vr in ("SH", "LO", "UC")},
    **{vr: _single for vr in ("LT", "ST", "UT", "UR")},
    "DS": _numeric(False), "IS": _numeric(True),
    **{vr: _binary(code, width) for vr, (code, width) in _BINARY.items()},
}
_DECODING = {tag: (keyword, vr.encode("ascii"), _DECODERS.get(vr)) for tag, (keyword, vr) in _WANTED.items()}


def _skip_undefined(buf: bytes, pos: int, implicit: bool) -> int:
    """Position after an undefined-length sequence starting at ``pos`` (its first item)."""
    while True:
        if pos + 8 > len(buf):
            raise NeedMore
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000):
            raise NotFast
        if length != 0xFFFFFFFF:
            pos += length
            continue
        pos = _walk(buf, pos, implicit, {}, item=True)[0]


def _walk(buf: bytes, pos: int, implicit: bool, out: dict[int, tuple[bytes | None, bytes]],
          item: bool = False) -> tuple[int, bool, int | None]:
    """Walk elements from ``pos``; collect the raw values of wanted tags into ``out`` (tag -> (VR or None, bytes)).

    Returns:
        The position after the walk (after the item delimiter for ``item``; at the pixel data
        value otherwise), whether the pixel data element was reached, and its length (``None``
        when absent or encapsulated).
    """
    size = len(buf)
    wanted, stop, long_vrs, head, head_implicit, u32 = _WANTED, _STOP, _LONG_VRS, _HEAD, _HEAD_IMPLICIT, _U32
    while True:  # the hottest loop of a scan: names bound locally, one unpack per element
        if pos + 8 > size:
            if pos == size and not item:
                return pos, False, None
            raise NeedMore
        if implicit:
            group, elem, length = head_implicit(buf, pos)
            vr = None
            start = pos + 8
        else:
            group, elem, vr, length = head(buf, pos)
            start = pos + 8
            if vr in long_vrs:
                if pos + 12 > size:
                    raise NeedMore
                length = u32(buf, start)[0]
                start = pos + 12
        if group == 0xFFFE:
            if item and elem == 0xE00D:
                return pos + 8, False, None
            raise NotFast
        tag = group << 16 | elem
        if not item:
            if tag == _PIXEL_DATA:
                return start, True, (None if length == 0xFFFFFFFF else length)
            if tag in stop:
                raise NotFast  # functional groups, directory records, LUTs: let pydicom read them
        if length == 0xFFFFFFFF:
            if vr not in (None, b"SQ", b"UN"):
                raise NotFast
            pos = _skip_undefined(buf, start, implicit)
            continue
        end = start + length
        if end > size:
            raise NeedMore
        if not item and tag in wanted:
            out[tag] = (vr, buf[start:end])
        pos = end


def _meta(buf: bytes) -> tuple[dict[str, str], int]:
    if len(buf) < 144 or buf[128:132] != b"DICM":
        if buf[128:132] != b"DICM" and buf[:2] not in _HEADLESS_STARTS:
            raise NotDicom
        raise NotFast  # maybe an old file without preamble (or gzip): pydicom decides
    pos, meta = 132, {}
    while pos + 8 <= len(buf):
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return meta, pos
        vr = buf[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            length, head = _U32(buf, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from("<H", buf, pos + 6)[0], 8
        value = buf[pos + head:pos + head + length]
        if elem == 0x0010:
            meta["TransferSyntaxUID"] = value.decode("ascii").rstrip("\x00 ")
        elif elem == 0x0002:
            meta["MediaStorageSOPClassUID"] = value.decode("ascii").rstrip("\x00 ")
        pos += head + length
    raise NeedMore


def parse_bytes(buf: bytes, file_size: int, memo: dict[Any, Any] | None = None, decode: bool = True) -> ParsedFile:
    """Parse the header of a file whose first ``len(buf)`` bytes (of ``file_size``) are ``buf``.

    Args:
        buf: the bytes read so far.
        file_size: the file's size.
        memo: decoded values by raw element, shared by the files of one batch (the files of a series
            repeat most of their header: decoding each distinct value once halves the decoding).
            Values may then be shared between results: treat them as read-only.
        decode: decode the values now; False leaves ``values`` with the SpecificCharacterSet only, for
            :func:`decode_values` to fill with the tags the caller needs.

    Raises:
        NeedMore: ``buf`` ends inside the header and the file is longer: read more and call again.
        NotFast: the file needs pydicom (see the module docstring).
    """
    meta, pos = _meta(buf)
    reason = media_class_reason(meta.get("MediaStorageSOPClassUID", ""))
    if reason is not None:
        raise NotAnImage(reason)
    syntax = meta.get("TransferSyntaxUID", "")
    if not syntax or syntax in _FALLBACK_SYNTAXES:
        raise NotFast
    raw: dict[int, tuple[bytes | None, bytes]] = {}
    pixel_start, found_pixels, pixel_length = _walk(buf, pos, syntax == _IMPLICIT_LE, raw)
    if not found_pixels and len(buf) < file_size:
        raise NeedMore  # the walk stopped at the end of the buffer, not of the file
    charset_raw = raw.pop(_CHARSET, None)
    charset = charset_raw[1].decode("latin-1").strip("\x00 ") if charset_raw else ""
    if charset not in _ENCODINGS:
        raise NotFast
    parsed = ParsedFile({"SpecificCharacterSet": charset} if charset_raw is not None else {}, syntax,
                        meta.get("MediaStorageSOPClassUID", ""), found_pixels,
                        pixel_start if found_pixels else None, pixel_length, raw, _ENCODINGS[charset])
    if decode:
        decode_values(parsed, memo)
    return parsed


def decode_values(parsed: ParsedFile, memo: dict[Any, Any] | None = None,
                  tags: frozenset[int] | None = None) -> dict[str, Any]:
    """Decode the raw elements of ``parsed`` (only ``tags`` when given) into ``parsed.values``, and return it.

    Raises:
        NotFast: a value the decoders cannot read exactly, or a Siemens mosaic (it needs the CSA header).
    """
    values, encoding = parsed.values, parsed.encoding
    memo = {} if memo is None else memo
    try:
        for tag, (file_vr, data) in parsed.elements.items():
            if tags is not None and tag not in tags:
                continue
            key = (tag, file_vr, data, encoding)
            known = memo.get(key, memo)
            if known is not memo:
                values[_DECODING[tag][0]] = known
                continue
            keyword, vr_bytes, decoder = _DECODING[tag]
            if file_vr is not None and file_vr != vr_bytes and file_vr != b"UN":  # the file's own VR wins
                decoder = _DECODERS.get(file_vr.decode("ascii", "replace"))
            if decoder is None:
                raise NotFast
            values[keyword] = memo[key] = decoder(data, encoding)
    except (struct.error, UnicodeDecodeError, KeyError, ValueError) as e:
        raise NotFast from e
    image_type = values.get("ImageType")
    if image_type and "MOSAIC" in str(image_type).upper():
        raise NotFast  # mosaics need the Siemens CSA header
    return values


_SOP_INSTANCE_UID, _SERIES_INSTANCE_UID = 0x00080018, 0x0020000E


def instance_uids(buf: bytes) -> tuple[str, str]:
    """The SOPInstanceUID and SeriesInstanceUID of a Part 10 file's bytes ("" for one it lacks).

    Only the elements before (0020,000E) are walked and nothing else is decoded: a few microseconds a file,
    against a whole header parse (what ``radpipe pull`` needs to name and file each instance it receives).

    Raises:
        NotFast: no preamble, a big-endian or deflated syntax, or an element the walk cannot skip.
        NeedMore: the bytes end before (0020,000E) is passed.
    """
    meta, pos = _meta(buf)
    syntax = meta.get("TransferSyntaxUID", "")
    if not syntax or syntax in _FALLBACK_SYNTAXES:
        raise NotFast
    implicit, size, found = syntax == _IMPLICIT_LE, len(buf), {}
    while pos + 8 <= size:
        if implicit:
            group, elem, length = _HEAD_IMPLICIT(buf, pos)
            start = pos + 8
        else:
            group, elem, vr, length = _HEAD(buf, pos)
            start = pos + 8
            if not (vr.isalpha() and vr.isupper()):
                raise NotFast  # not explicit VR after all (the meta says so, the dataset does not): pydicom
            if vr in _LONG_VRS:
                if pos + 12 > size:
                    raise NeedMore
                length, start = _U32(buf, start)[0], pos + 12
        tag = group << 16 | elem
        if tag > _SERIES_INSTANCE_UID:
            return found.get(_SOP_INSTANCE_UID, ""), found.get(_SERIES_INSTANCE_UID, "")
        if length == 0xFFFFFFFF:
            pos = _skip_undefined(buf, start, implicit)
            continue
        pos = start + length
        if tag in (_SOP_INSTANCE_UID, _SERIES_INSTANCE_UID):
            if pos > size:
                raise NeedMore
            found[tag] = buf[start:pos].decode("ascii").strip("\x00 ")
    if pos == size:  # a header-only object that ends before (0020,000E)
        return found.get(_SOP_INSTANCE_UID, ""), found.get(_SERIES_INSTANCE_UID, "")
    raise NeedMore


def parse_file(path: str, *, whole: bool = False, memo: dict[Any, Any] | None = None, decode: bool = True
               ) -> tuple[ParsedFile, bytes, int]:
    """Read and parse one file: the header, the bytes read and the file's size.

    Args:
        path: the file.
        whole: read the whole file (to take its pixels too), not only as far as the header goes.
        memo, decode: see :func:`parse_bytes`.

    Raises:
        NotFast: the file needs pydicom (unusual encoding, cut inside the header, ...).
        OSError: the file cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY)  # unbuffered: one read for the header, no file object to build
    try:
        file_size = os.fstat(fd).st_size
        buf = _read(fd, file_size if whole else FIRST_READ)
        while True:
            try:
                return parse_bytes(buf, file_size, memo, decode), buf, file_size
            except NeedMore:
                if len(buf) >= file_size:
                    raise NotFast from None  # cut inside the header
                more = _read(fd, max(len(buf), FIRST_READ))
                if not more:
                    raise NotFast from None  # the file shrank while being read
                buf += more
            except (struct.error, UnicodeDecodeError, KeyError, ValueError) as e:
                raise NotFast from e
    finally:
        os.close(fd)


def _read(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from the file's current position (fewer only at its end)."""
    parts, got = [], 0
    while got < n:
        more = os.read(fd, n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
