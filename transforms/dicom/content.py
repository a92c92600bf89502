"""What a DICOM file's image holds, to tell copies of one image from different images: :func:`pixel_digest`."""
from __future__ import annotations

import hashlib

from transforms.dicom.fields import pixel_data_bytes
from transforms.dicom.raw import UNCOMPRESSED_LE, NotFast, parse_file
from transforms.dicom.slice_header import SliceHeader


def pixel_digest(header: SliceHeader) -> str | None:
    """The SHA-256 of the pixel data of ``header.path`` as stored (compressed or not).

    Two files with one SOPInstanceUID are copies when their digests match (file meta, private tags
    and the order of elements may differ between copies; the image does not).

    Returns:
        The hex digest, or ``None`` when the pixel data cannot be read whole: missing, cut short, or
        shorter than Rows x Columns x frames x samples x bits (a damaged file).
    """
    try:
        parsed, buf, size = parse_file(header.path, whole=True)
    except NotFast:
        return _digest_with_pydicom(header)
    except OSError:
        return None
    offset = parsed.pixel_offset
    if offset is None:
        return None
    length = parsed.pixel_length if parsed.pixel_length is not None else size - offset
    if offset + length > size:
        return None
    if parsed.transfer_syntax in UNCOMPRESSED_LE and parsed.pixel_length is not None and length < _expected(header):
        return None
    return hashlib.sha256(buf[offset:offset + length]).hexdigest()


def _expected(header: SliceHeader) -> int:
    return pixel_data_bytes(header.rows, header.cols, header.number_of_frames, header.samples_per_pixel,
                            header.bits_allocated)


def _digest_with_pydicom(header: SliceHeader) -> str | None:
    """The digest of a file the byte reader cannot read (big endian, deflated, mosaic, enhanced, ...)."""
    from transforms.dicom.headers import read_dataset  # pydicom: only for the rare files that need it

    try:
        ds = read_dataset(header.path, header_only=False)
        data = ds.get("PixelData") or ds.get("FloatPixelData") or ds.get("DoubleFloatPixelData")
    except Exception:  # noqa: BLE001 - any failure to read the pixels back means: not readable
        return None
    if not data:
        return None
    if not ds.file_meta.get("TransferSyntaxUID", "").is_compressed and len(data) < _expected(header):
        return None
    return hashlib.sha256(bytes(data)).hexdigest()
