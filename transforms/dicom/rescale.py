"""Stored pixel values to modality values: RescaleSlope/Intercept per plane, a modality LUT, and Philips'
floating-point scaling (:func:`philips_floating_point`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from transforms.dicom.geometry import SeriesInfo
from transforms.dicom.slice_header import SliceHeader

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def result_dtype(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray) -> np.dtype:
    """Integer output when the rescale is integral and the result fits; float32 otherwise."""
    integral = np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))
    if not integral or stored.dtype.kind == "f":
        return np.dtype(np.float32)
    lo, hi = (float(stored.min()), float(stored.max())) if stored.size else (0.0, 0.0)
    ends = np.concatenate([lo * slopes + intercepts, hi * slopes + intercepts])
    for dtype in (stored.dtype, np.dtype(np.int16), np.dtype(np.int32)):
        info = np.iinfo(dtype)
        if info.min <= ends.min() and ends.max() <= info.max:
            return dtype
    return np.dtype(np.float64)


def plane_rescale(ds: Mapping[str, Any] | Dataset, header: SliceHeader | None,
                   frame: int | None) -> tuple[float, float]:
    if frame is not None and header is not None and header.frames and frame < len(header.frames):
        if "RescaleSlope" not in ds:  # enhanced objects keep it in PixelValueTransformationSequence
            return header.frames[frame].slope, header.frames[frame].intercept
    slope = float(ds.get("RescaleSlope", ds.get("DoseGridScaling", 1.0)) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def philips_floating_point(rescale: tuple[float, float], header: SliceHeader | None) -> tuple[float, float]:
    """The (slope, intercept) giving Philips' floating-point value FP = (stored x RS + RI) / (RS x SS).

    RS, RI: the DICOM rescale of ``rescale``; SS: the private scale slope (2005,100E). Unchanged for a
    file that is not Philips' or holds no scale slope.
    """
    slope, intercept = rescale
    scale = header.philips_scale_slope if header is not None else None
    if not scale or "PHILIPS" not in header.manufacturer.upper() or not slope:
        return rescale
    return 1.0 / scale, intercept / (slope * scale)


def uses_philips_scale(series: SeriesInfo) -> bool:
    """True when the series' files are Philips' and hold the private scale slope (2005,100E)."""
    return any(h.philips_scale_slope and "PHILIPS" in h.manufacturer.upper() for h in series.headers)


def rescale_planes(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, written: np.ndarray,
                   datasets: dict[str, Mapping[str, Any] | Dataset], series: SeriesInfo) -> np.ndarray:
    """Modality values of the stored planes (t, z, y, x[, c]): a modality LUT when a file has one, else each
    plane's slope and intercept; filled (missing) slices get the volume's minimum."""
    lut_ds = next((ds for ds in datasets.values() if "ModalityLUTSequence" in ds), None)
    if lut_ds is not None:
        from pydicom.pixels import apply_modality_lut

        volume = apply_modality_lut(stored, lut_ds).astype(np.float32)
    else:
        dtype = result_dtype(stored[written], slopes[written], intercepts[written])
        expand = (slice(None), slice(None)) + (None,) * (stored.ndim - 2)
        if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
            volume = stored.astype(dtype, copy=False)
        elif np.all(slopes == slopes.flat[0]) and np.all(intercepts == intercepts.flat[0]):
            volume = stored.astype(dtype) * dtype.type(slopes.flat[0]) + dtype.type(intercepts.flat[0])
        else:
            volume = (stored.astype(dtype) * slopes[expand].astype(dtype) + intercepts[expand].astype(dtype))
        volume = volume.astype(dtype, copy=False)
    if series.filled_slices:
        fill = volume[:, [z for z in range(volume.shape[1]) if z not in set(series.filled_slices)]].min()
        volume[:, list(series.filled_slices)] = fill
    return volume
