"""Native pixel data as arrays: what pydicom's ``pixel_array`` gives for uncompressed little-endian greyscale images.

The header parser (:mod:`transforms.dicom.raw`) notes where the pixel data lies; these functions turn its bytes
into the stored values, as the loader of a series needs them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from transforms.dicom.raw import UNCOMPRESSED_LE, NotFast, ParsedFile

_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


def native_pixels(parsed: ParsedFile, buf: bytes, rows: int, cols: int, frames: int) -> np.ndarray:
    """The stored values of an uncompressed little-endian greyscale image, as pydicom's ``pixel_array``.

    Returns:
        A writeable array (frames, rows, cols), unused high bits cleared (unsigned) or sign-extended
        (signed) as pydicom does.

    Raises:
        NotFast: any other image (compressed, colour, 1-bit, cut short, ...).
    """
    v = parsed.values
    if (parsed.transfer_syntax not in UNCOMPRESSED_LE or parsed.pixel_offset is None or parsed.pixel_length is None
            or (v.get("SamplesPerPixel") or 1) != 1
            or str(v.get("PhotometricInterpretation", "")).strip().upper() not in ("MONOCHROME1", "MONOCHROME2")):
        raise NotFast
    available = min(parsed.pixel_length, len(buf) - parsed.pixel_offset)
    return stored_array(buf, parsed.pixel_offset, available, (frames, rows, cols), v.get("BitsAllocated"),
                        v.get("PixelRepresentation") or 0, v.get("BitsStored"))


def stored_array(buf: bytes, offset: int, available: int, shape: tuple[int, int, int], bits: Any, signed: Any,
                 stored: Any) -> np.ndarray:
    """Native little-endian greyscale pixels of ``shape`` (frames, rows, cols) at ``buf[offset:]``.

    Raises:
        NotFast: an unsupported BitsAllocated / PixelRepresentation, or fewer than the ``available`` bytes needed.
    """
    dtype = _DTYPES.get((bits, signed)) if isinstance(bits, int) and isinstance(signed, int) else None
    count = shape[0] * shape[1] * shape[2]
    if dtype is None or min(shape) <= 0 or count * (bits // 8) > available:
        raise NotFast  # cut short: pydicom says how
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
    arr = arr.astype(arr.dtype.newbyteorder("="))  # a writeable copy in native order
    if isinstance(stored, int) and 0 < stored < bits:
        shift = bits - stored
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr
