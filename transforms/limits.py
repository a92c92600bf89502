"""Size limits for images read from untrusted files: a claimed size is refused before memory is allocated.

Every image format states its size in a header: NIfTI ``dim`` and ``datatype``, the NRRD/MHA size and
pixel type, DICOM Rows x Columns x frames x samples. A header can lie: 85 bytes of gzip-compressed
NIfTI may claim 1800 x 1800 x 1000 int16 (6 GiB), and 1 MB of gzip stream decodes to 1 GiB of zeros.
The readers check the claim here before they decode anything, so a bomb costs a few kilobytes.

The limit is a number of voxels (every value counts: time points, channels and colour samples too),
because what a run holds in memory grows with the voxel count (radpipe converts to float32, resamples
and crops) rather than with the stored type. The default, :data:`DEFAULT_MAX_VOXELS` = 512 x 512 x 2048
(about 537 million voxels, 2 GiB as float32), holds the largest volumes of routine radiology (a
whole-body CT of 2000 thin slices, a tomosynthesis stack, a 4D MR of a few hundred million voxels)
while refusing the bombs above (1800 x 1800 x 1000 is 6x the limit, 1024^3 voxels 2x). A larger real
image (4D perfusion CT, micro-CT) is loaded after raising ``RADPIPE_MAX_VOXELS``.

Example:
    >>> check_claimed_size("a.nii", (512, 512, 300), 2, "int16")
    157286400
"""
from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DicomReadError, ImageReadError

MAX_VOXELS_ENV = "RADPIPE_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 512 * 512 * 2048
MAX_HEADER_BYTES = 64 << 20  # NIfTI header + extensions (vox_offset): extensions hold kilobytes of text
MAX_FILL_RATIO = 4  # DICOM series: missing slices filled in at most this many times the present ones (min. 64)
_NUMBER = re.compile(r"\d+(?:_\d{3})*(?:\.\d+)?(?:[eE]\+?\d{1,2})?")
_parsed: dict[str, int] = {}


class ImageRefusedError(ImageReadError, DicomReadError):
    """An image (any format, DICOM included) refused before decoding: its header's sizes cannot be trusted.

    Reading it anyway, with any reader, could exhaust memory; :class:`~transforms.readers.RadpipeReader`
    makes MONAI's ``LoadImage`` raise it rather than try its other readers.
    """


class ImageTooLargeError(ImageRefusedError):
    """A header claims more voxels than the limit (``RADPIPE_MAX_VOXELS``) allows."""


def parse_max_voxels(text: str) -> int:
    """The voxel limit a ``RADPIPE_MAX_VOXELS`` value sets: a positive whole number.

    Accepts ``1073741824``, ``1_073_741_824`` and scientific notation that gives a whole number
    (``1e9``, ``2.5e8``).

    Raises:
        ConfigError: anything else (empty, negative, zero, fractional, not a number).

    Example:
        >>> parse_max_voxels("2.5e8")
        250000000
    """
    raw = text.strip()
    value = None
    if _NUMBER.fullmatch(raw):
        mantissa, _, exponent = raw.replace("_", "").lower().partition("e")
        whole, _, fraction = mantissa.partition(".")
        digits, scale = int(whole + fraction), int(exponent or 0) - len(fraction)
        value = digits * 10 ** scale if scale >= 0 else (digits // 10 ** -scale
                                                         if digits % 10 ** -scale == 0 else None)
    if not value:
        raise ConfigError(f"{MAX_VOXELS_ENV}={text!r}: expected a positive whole number of voxels (e.g. "
                          f"1073741824 or 1e9); unset it for the default {DEFAULT_MAX_VOXELS:,} (512x512x2048)")
    return value


def max_voxels() -> int:
    """The voxel limit: ``RADPIPE_MAX_VOXELS`` when set, else :data:`DEFAULT_MAX_VOXELS`.

    Raises:
        ConfigError: ``RADPIPE_MAX_VOXELS`` is set to something other than a positive whole number.
    """
    text = os.environ.get(MAX_VOXELS_ENV, "")
    if not text:
        return DEFAULT_MAX_VOXELS
    if text not in _parsed:
        _parsed[text] = parse_max_voxels(text)
    return _parsed[text]


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. ``'6.0 GiB'``."""
    if n < 1024:
        return f"{n} B"
    size, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024:
            break
    return f"{size:.1f} {unit}"


def check_claimed_size(where: str | os.PathLike, shape: Sequence[int], itemsize: int, dtype: str = "",
                       *, axes: str = "") -> int:
    """Refuse an image whose header claims more voxels than :func:`max_voxels` allows.

    Args:
        where: the file (or series folder) the claim comes from, named in the message.
        shape: the claimed shape, every axis (time, channels, samples included).
        itemsize: bytes per value once decoded.
        dtype: the claimed type, for the message (e.g. ``"int16"``).
        axes: what the axes are, for the message (e.g. ``"Columns x Rows x frames x samples"``).

    Returns:
        The decoded size in bytes.

    Raises:
        ImageTooLargeError: over the limit (the message names the file, shape, type, size, limit and fix).
        ImageRefusedError: a negative size.
        ConfigError: ``RADPIPE_MAX_VOXELS`` is malformed.
    """
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        raise ImageRefusedError(f"{where}: header claims a negative size {'x'.join(map(str, dims))}; the header is "
                                "damaged; refused")
    voxels = math.prod(dims) if dims else 0
    decoded = voxels * int(itemsize)
    limit = max_voxels()
    if voxels > limit:
        claimed = "x".join(map(str, dims)) + (f" ({axes})" if axes else "")
        raise ImageTooLargeError(
            f"{where}: header claims {claimed} {dtype or f'{itemsize}-byte'} values ({voxels:,} voxels, "
            f"{human_bytes(decoded)} decoded), over the limit of {limit:,} voxels ({MAX_VOXELS_ENV}); refused "
            f"before decoding. If the image is real, raise {MAX_VOXELS_ENV} (e.g. {MAX_VOXELS_ENV}={voxels})")
    return decoded


def gap_fill_problem(n_present: int, n_grid: float, plane_voxels: int, span: str) -> str:
    """Why the missing slices of a DICOM series should not be filled in ('' when they may).

    A series whose slice positions leave gaps gets the missing slices filled; one wild position
    (e.g. 1e7 mm) would make the grid, and the volume, unbounded. Filling is refused when the grid
    is over the voxel limit or when more than :data:`MAX_FILL_RATIO` times the present slices are missing.

    Args:
        n_present: slices present.
        n_grid: slices on the regular grid through them (present + missing).
        plane_voxels: Rows x Columns.
        span: where the positions lie, for the message.
    """
    missing, voxels = n_grid - n_present, n_grid * plane_voxels
    if missing < 1 or missing <= MAX_FILL_RATIO * max(n_present, 64) and voxels <= max_voxels():
        return ""
    return (f"slice positions ({span}) span a grid of {n_grid:,.0f} slices for {n_present} present ({voxels:,.0f} "
            f"voxels, limit {max_voxels():,} ({MAX_VOXELS_ENV}) and at most {MAX_FILL_RATIO}x as many missing "
            "slices as present); a slice position is wrong; the series cannot be assembled")


@dataclass(frozen=True)
class ImageHeader:
    """What a NIfTI / NRRD / MHA header claims, checked against the limit.

    Attributes:
        path: the file.
        shape: the claimed shape in the format's own order (NIfTI: x, y, z[, t...]; ITK: x, y, z[, components]).
        dtype: the stored type's name.
        itemsize: bytes per stored value.
        decoded_bytes: the decoded data's size.
        data_offset: where the data starts in the (decompressed) file; 0 when the format does not say.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    decoded_bytes: int
    data_offset: int = 0


def _nifti_classes() -> tuple[Any, ...]:
    from nibabel.nifti1 import Nifti1Header
    from nibabel.nifti2 import Nifti2Header

    return Nifti1Header, Nifti2Header


def nifti_header(path: str | os.PathLike) -> ImageHeader:
    """Read and check a NIfTI-1/2 header (``.nii`` or ``.nii.gz``) without touching the voxel data.

    Reads the fixed header, walks the extensions' size fields (nibabel reads extensions into memory
    as their sizes say: a size below 8 or beyond the data offset would make it read the whole
    stream), checks the shape x type against the voxel limit and, for an uncompressed file, that the
    file holds the data the header claims. What passes can be read with ``nibabel.load`` and
    ``dataobj`` in about the decoded size: nibabel reads exactly the claimed bytes, however long the
    gzip stream.

    Raises:
        ImageReadError: not a NIfTI header (or gzip stream).
        ImageRefusedError: damaged extension sizes, a data offset over :data:`MAX_HEADER_BYTES`, or an
            uncompressed file shorter than its header claims.
        ImageTooLargeError: the claimed data is over the voxel limit.
    """
    p = Path(path)
    compressed = p.name.lower().endswith(".gz")
    try:
        import gzip  # not at module level: the DICOM scan imports this module and never opens a NIfTI

        with (gzip.open(p, "rb") if compressed else open(p, "rb")) as f:
            block = f.read(544)
            header, size = _parse_nifti(block)
            if header is None:
                raise ImageReadError(f"{p}: cannot read NIfTI (not a NIfTI-1 or NIfTI-2 header: the file "
                                     f"starts with {block[:8]!r}); check the file is complete")
            shape = tuple(int(s) for s in header.get_data_shape())
            dtype = header.get_data_dtype()
            offset = int(header["vox_offset"])
            if offset > MAX_HEADER_BYTES:
                raise ImageRefusedError(f"{p}: NIfTI data offset (vox_offset) {offset:,} bytes is over "
                                        f"{human_bytes(MAX_HEADER_BYTES)}; the header is damaged or built to "
                                        "exhaust memory; refused")
            if block[size:size + 1] not in (b"", b"\x00"):
                _walk_extensions(f, p, size + 4, offset, header.endianness)
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - gzip, struct and nibabel raise many types on damaged headers
        raise ImageReadError(f"{p}: cannot read NIfTI ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                             "check the file is complete") from e
    decoded = check_claimed_size(p, shape, dtype.itemsize, str(dtype))
    if not compressed:
        check_file_holds(p, p.stat().st_size, offset, decoded, f"{'x'.join(map(str, shape))} {dtype}")
    return ImageHeader(str(p), shape, str(dtype), int(dtype.itemsize), decoded, offset)


def _parse_nifti(block: bytes) -> tuple[Any, int]:
    """The nibabel header class instance for the first bytes of a NIfTI file (None if neither), and its size."""
    for klass in _nifti_classes():
        size = klass.template_dtype.itemsize
        if len(block) >= size and klass.may_contain_header(block[:size]):
            return klass(block[:size], check=True), size  # check=True: the fixes nibabel.load applies
    return None, 0


def _walk_extensions(f: Any, path: Path, start: int, offset: int, endianness: str) -> None:
    """Check each extension's size field the way nibabel will read it, skipping (not keeping) the contents."""
    remaining = offset - start
    if remaining < 0:
        raise ImageRefusedError(f"{path}: NIfTI header flags extensions but vox_offset {offset} leaves no room "
                                "for them (nibabel would read extensions to the end of the file); the header is "
                                "damaged")
    position = start
    f.seek(start)
    while remaining >= 16:
        head = f.read(8)
        if len(head) < 8:
            return  # cut short: nibabel.load reports it
        esize = struct.unpack(endianness + "i", head[:4])[0]
        if esize < 8 or esize > remaining:
            raise ImageRefusedError(f"{path}: NIfTI extension at byte {position} claims {esize} bytes, outside "
                                    f"8..{remaining} (the room before the data at vox_offset {offset}); the header "
                                    "is damaged; refused")
        f.seek(esize - 8, os.SEEK_CUR)
        position += esize
        remaining -= esize


def check_file_holds(where: str | os.PathLike, file_size: int, offset: int, needed: int, claim: str) -> None:
    """Refuse an uncompressed file shorter than its header's data offset plus claimed data.

    Raises:
        ImageRefusedError: the file is shorter than ``offset + needed`` bytes; the message names both sizes.
    """
    if file_size < offset + needed:
        raise ImageRefusedError(f"{where}: header claims {claim} data, {offset + needed:,} bytes with the header "
                                f"({needed:,} from byte {offset:,}), but the file holds {file_size:,} bytes; the "
                                "file is truncated or its header is wrong; copy or export it again")


_ITK_ITEMSIZE = {"8": 1, "16": 2, "32": 4, "64": 8}


def itk_header(path: str | os.PathLike) -> tuple[Any, ImageHeader]:
    """Read and check an NRRD / MHA / MHD header with SimpleITK, without reading the pixels.

    Returns:
        The ``SimpleITK.ImageFileReader`` (``Execute()`` reads the image) and the checked claim
        (shape x, y[, z...][, components]).

    Raises:
        ImageReadError: SimpleITK cannot read the header.
        ImageTooLargeError: the claimed size is over the voxel limit.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ImageReadError(f"{path}: cannot read with SimpleITK ({' '.join(str(e).split())[:300]}); check the "
                             "file and, for .mhd/.nhdr, that its data file sits beside it") from e
    components = int(reader.GetNumberOfComponents())
    shape = tuple(int(s) for s in reader.GetSize()) + ((components,) if components > 1 else ())
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.findall(r"(8|16|32|64)", pixel)
    itemsize = _ITK_ITEMSIZE[bits[-1]] * (2 if "complex" in pixel else 1) if bits else 8
    decoded = check_claimed_size(path, shape, itemsize, pixel)
    return reader, ImageHeader(str(path), shape, pixel, itemsize, decoded)


def check_image_header(path: str | os.PathLike) -> ImageHeader | None:
    """Check the header of a NIfTI, NRRD, MHA or MHD file against the limits, reading no voxel data.

    For callers that look at an image before loading it (``validate-manifest``, ``predict``'s input
    listing): call this before ``nibabel.load`` / ``SimpleITK``, which themselves may read a
    damaged header's extensions into memory. DICOM inputs (files, folders, ``*.series.json``) are
    checked by the series loader, which knows the whole series: this returns None for them.

    Returns:
        The checked claim, or None for a path that is not NIfTI / NRRD / MHA / MHD.

    Raises:
        ImageReadError: unreadable header (the message says why).
        ImageRefusedError: damaged size fields or a file shorter than its header claims (subclass of the above).
        ImageTooLargeError: over the voxel limit (:func:`check_claimed_size`; subclass of the above).
    """
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return nifti_header(path)
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        return itk_header(path)[1]
    return None
