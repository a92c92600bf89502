"""Pixel values of the synthetic series: the default test pattern and the Image Pixel module."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian


def default_pattern(n_timepoints: int, n_slices: int, rows: int, cols: int, *, dtype: str = "int16",
                    seed: int = 0) -> np.ndarray:
    """A deterministic (t, z, y, x) pattern in which flips, permutations and shifts all show.

    A ramp along every axis (different step per axis) plus seeded noise, clipped to ``dtype``.
    """
    rng = np.random.default_rng(seed)
    t, z, y, x = np.meshgrid(np.arange(n_timepoints), np.arange(n_slices), np.arange(rows), np.arange(cols),
                             indexing="ij")
    values = 2 * x + 5 * y + 37 * z + 211 * t + rng.integers(0, 17, size=x.shape)
    info = np.iinfo(np.dtype(dtype))
    return np.clip(values % (min(info.max, 32000) + 1), info.min, info.max).astype(dtype)


def set_pixels(ds: Dataset, pixels: np.ndarray, transfer_syntax: str, photometric: str) -> None:
    """Set the Image Pixel attributes and the (possibly compressed) pixel data of ``ds``.

    Args:
        ds: the dataset to complete.
        pixels: stored values, (frames, y, x) or (y, x); their dtype gives BitsAllocated and PixelRepresentation.
        transfer_syntax: native syntaxes are written byte by byte in their byte order; others are encoded by
            pydicom (RLE natively, JPEG 2000 through pylibjpeg-openjpeg).
        photometric: the PhotometricInterpretation.
    """
    dtype = pixels.dtype
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = ds.BitsStored = 8 * dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype.newbyteorder("<"))).tobytes()
    elif transfer_syntax == ExplicitVRBigEndian:
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype.newbyteorder(">"))).tobytes()
    else:
        ds.compress(transfer_syntax, np.ascontiguousarray(pixels))
