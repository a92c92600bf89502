"""2D picture files (PNG, JPEG, TIFF, BMP) read with Pillow, as a MONAI ``ImageReader``.

Why Pillow (and not MONAI's ``PILReader``, imageio or tifffile): Pillow is already a dependency, reads
every format asked for (8- and 16-bit PNG, baseline and progressive JPEG, TIFF including 16-bit grey
``I;16``, BMP, palette images), and ``Image.open`` reads only the header, so the size can be checked
against :func:`transforms.limits.max_voxels` before a pixel is decoded. MONAI's ``PILReader`` decodes
first, applies no EXIF orientation and keeps palette indices as values; imageio adds a dependency over
Pillow for these formats; tifffile reads TIFF only.

What a file becomes (values as stored, never rescaled):

=======================  =========================================================
file                      array
=======================  =========================================================
grey 8-bit (``L``)        (x, y) uint8
grey 16-bit (``I;16``)    (x, y) uint16 (PNG, TIFF)
grey 32-bit (``I``/``F``) (x, y) int32 / float32
1-bit (``1``)             (x, y) uint8, 0 or 255
grey + alpha (``LA``)     (x, y) uint8, alpha dropped
RGB, CMYK, YCbCr          (x, y, 3) uint8, as Pillow's ``convert("RGB")``
RGBA                      (x, y, 3) uint8, alpha dropped (as ``convert("RGB")``, torchvision's loader)
palette (``P``)           grey (x, y) when every palette entry is grey, else (x, y, 3): colours, not indices
=======================  =========================================================

Axes follow the other readers: x runs along a row (left -> right), y down the rows, so ``array[x, y]`` is
``image.getpixel((x, y))``; the affine is the identity (1 mm pixels: a picture file holds no patient
geometry), so ``orientation: RAS`` keeps the picture as it is displayed. EXIF orientation (camera and phone
photographs, some scanners) is applied first, so the array is the picture as a viewer shows it. A file with
several frames (multi-page TIFF) is refused: one file is one image.

Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) is set to the same voxel limit, so a
picture that passes :func:`picture_header` is never refused by Pillow, and one that does not is refused
by both.

The MONAI readers (:class:`PictureReader`, :class:`transforms.readers.RadpipeReader`) take one colour picture
as (3, x, y) with ``original_channel_dim`` 0 (``load_picture(..., channel_first=True)``): made from Pillow's
(rows, columns, 3) array in one copy, it costs ~0.9 ms less per 512 x 512 JPEG than the (x, y, 3) copy, and
MONAI's ``EnsureChannelFirst`` keeps it without a copy of its own.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from pipeline.errors import ImageReadError
from transforms.limits import ImageRefusedError, check_claimed_size, max_voxels

#: File name endings read as pictures (lower case).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Pillow modes read as one grey channel, and their numpy type.
_GREY_TYPES = {"L": np.uint8, "I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16, "I;16N": np.uint16,
               "I": np.int32, "F": np.float32}
_BANDS = {"1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
          "RGBA": 4, "RGBX": 4, "CMYK": 4}
_BAND_BYTES = {"I": 4, "F": 4}
_ORIENTATION = 0x0112  # the EXIF tag


def is_picture(path: str | os.PathLike) -> bool:
    """True when the name ends in one of :data:`PICTURE_SUFFIXES` (any case)."""
    return str(path).lower().endswith(PICTURE_SUFFIXES)


def _pillow() -> Any:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_voxels()  # Pillow's own bomb guard: the same limit as every other reader
    return Image


def picture_header(path: str | os.PathLike) -> tuple[tuple[int, int], str, int]:
    """Open a picture as far as its header and check its size, decoding no pixel.

    Returns:
        ``((width, height), mode, frames)`` as the file claims them.

    Raises:
        ImageReadError: not a picture Pillow can read (the message names the file and the reason).
        ImageTooLargeError: width x height x samples over the voxel limit (``RADPIPE_MAX_VOXELS``).
    """
    with _open(path) as img:
        return _checked(path, img)


def _open(path: str | os.PathLike) -> Any:
    Image = _pillow()
    try:
        return Image.open(path)
    except Image.DecompressionBombError as e:  # not reached with the limits in step; kept as a refusal anyway
        raise ImageRefusedError(f"{path}: {e}; refused before decoding") from e
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: no such file; check the path") from e
    except (OSError, ValueError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise ImageReadError(f"{path}: not a picture Pillow can read ({_short(e, path)}); check the file is a "
                             "complete PNG, JPEG, TIFF or BMP") from e


def _short(e: BaseException, path: str | os.PathLike) -> str:
    return " ".join(str(e).replace(repr(str(path)), "").replace(str(path), "").split())[:300] or type(e).__name__


def _checked(path: str | os.PathLike, img: Any) -> tuple[tuple[int, int], str, int]:
    width, height = (int(s) for s in img.size)
    mode = str(img.mode)
    bands = _BANDS.get(mode, len(img.getbands()))
    check_claimed_size(path, (width, height, bands), _BAND_BYTES.get(mode, 2 if mode.startswith("I;16") else 1),
                       mode, axes="width x height x samples")
    if width < 1 or height < 1:
        raise ImageReadError(f"{path}: picture of {width}x{height} pixels holds no image")
    return (width, height), mode, int(getattr(img, "n_frames", 1) or 1)


def _grey_palette(img: Any) -> bool:
    palette = img.getpalette() or []
    triples = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool(triples.size) and bool((triples == triples[:, :1]).all())


def _pixels(img: Any, channel_first: bool = False) -> np.ndarray:
    """(x, y[, 3]) array of a loaded picture, by the table of the module docstring; (3, x, y) for colour
    with ``channel_first``."""
    mode = img.mode
    if mode == "P":
        img = img.convert("L" if _grey_palette(img) else "RGB")
    elif mode in ("1", "LA", "PA"):
        img = img.convert("L")
    elif mode not in _GREY_TYPES and mode != "RGB":
        img = img.convert("RGB")
    array = np.asarray(img)
    if array.ndim == 3 and channel_first:
        # (rows, columns, 3) -> (3, x, y) in one copy: a plane at a time, ~0.9 ms less on a 512 x 512 picture than
        # the (x, y, 3) copy below (whose 3-byte pixels copy slowly), and MONAI then needs no copy of its own
        return np.ascontiguousarray(array.transpose(2, 1, 0))
    if img.mode in _GREY_TYPES:
        array = array.astype(np.dtype(_GREY_TYPES[img.mode]).newbyteorder("="), copy=False)
    return np.ascontiguousarray(np.swapaxes(array, 0, 1))  # (rows, columns) -> (x, y)


def load_picture(path: str | os.PathLike,
                 channel_first: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a picture file: header checked, pixels decoded, EXIF orientation applied.

    Args:
        path: the picture file.
        channel_first: give a colour picture as (3, x, y) (``original_channel_dim`` 0), the layout MONAI's
            ``EnsureChannelFirst`` then keeps without a copy; grey pictures stay (x, y).

    Returns:
        ``(array, affine, meta)``: array (x, y) or (x, y, 3) (module docstring), 4x4 identity affine, and the
        metadata the other readers give (``spatial_shape``, ``pixdim``, ``original_channel_dim`` -1 for colour,
        ``photometric_original`` = the file's Pillow mode, ...).

    Raises:
        ImageReadError: unreadable, truncated, or several frames.
        ImageTooLargeError: over the voxel limit (checked on the header, before decoding).
    """
    from PIL import ImageOps

    with _open(path) as img:
        _, mode, frames = _checked(path, img)
        if frames > 1:
            raise ImageReadError(f"{path}: holds {frames} frames (pages); radpipe reads one image per file: save "
                                 "each frame as its own file")
        try:
            img.load()
            upright = ImageOps.exif_transpose(img) if img.getexif().get(_ORIENTATION, 1) != 1 else img
            array = _pixels(upright, channel_first)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageReadError(f"{path}: cannot decode the picture ({_short(e, path)}); the file is damaged or "
                                 "truncated: copy it again") from e
    return array, np.eye(4), picture_meta(array, str(path), mode, channel_first)


def picture_meta(array: np.ndarray, filename: str, mode: str, channel_first: bool = False) -> dict[str, Any]:
    """The metadata of a picture, with the fields and types of :class:`transforms.readers.RadpipeReader`'s.

    ``channel_first``: a colour ``array`` is (3, x, y) (``original_channel_dim`` 0); ``dim`` still lists
    (x, y, 3), as for the channel-last array.
    """
    colour = array.ndim == 3
    shape = (*array.shape[1:], array.shape[0]) if colour and channel_first else array.shape
    pixdim = np.ones(8, dtype=np.float32)
    dim = np.ones(8, dtype=np.int16)
    dim[0] = len(shape)
    dim[1:1 + len(shape)] = shape
    channel_dim = (0 if channel_first else -1) if colour else float("nan")
    meta: dict[str, Any] = {
        "affine": np.eye(4), "original_affine": np.eye(4), "spatial_shape": np.asarray(shape[:2]),
        "pixdim": pixdim, "dim": dim, "space": "RAS", "original_channel_dim": channel_dim,
        "filename_or_obj": filename, "time_axis": -1, "temporal_spacing": float("nan"), "n_timepoints": 1,
    }
    meta.update({k: "" for k in ("modality", "series_description", "manufacturer", "model", "body_part",
                                 "orientation_label", "series_kind", "problems")})
    meta.update({"status": "ok", "series_number": -1, "photometric_original": mode})
    return meta


class PictureReader(ImageReader):
    """MONAI reader for PNG, JPEG, TIFF and BMP files (see the module docstring).

    ``LoadImage(reader=PictureReader(), ensure_channel_first=True)`` gives (1, x, y) for grey files and
    (3, x, y) for colour ones; a list of files is stacked on a new first axis (they must share one size).
    A picture over the voxel limit, damaged or with several frames is refused in :meth:`get_data`, not in
    :meth:`read`: MONAI's ``LoadImage`` would otherwise try its other readers, which would decode it (or a
    multi-page file's first page).
    """

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True when every name ends in one of :data:`PICTURE_SUFFIXES`."""
        return all(is_picture(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Read one picture or a list of them; an error is kept for :meth:`get_data` to raise."""
        try:
            paths = ensure_tuple(data)
            images = [load_picture(p, channel_first=len(paths) == 1) for p in paths]
        except ImageReadError as e:  # refusals included (ImageRefusedError is one)
            return e
        return images[0] if len(images) == 1 else images

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The array and metadata of what :meth:`read` returned.

        Raises:
            ImageRefusedError: :meth:`read` refused the picture (over the voxel limit).
            ImageReadError: :meth:`read` could not read it, or listed pictures differ in size.
        """
        if isinstance(img, ImageReadError):
            raise img
        if isinstance(img, tuple):
            return img[0], dict(img[2])
        arrays = [i[0] for i in img]
        if len({a.shape for a in arrays}) > 1:
            raise ImageReadError(f"pictures {[i[2]['filename_or_obj'] for i in img]} differ in size "
                                 f"{[a.shape for a in arrays]}; pictures stacked as channels must share one size")
        meta = dict(img[0][2])
        meta["original_channel_dim"] = 0
        return np.stack(arrays), meta
