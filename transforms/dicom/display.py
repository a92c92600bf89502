"""The display window a radiograph carries: VOI LUT or WindowCenter/WindowWidth (DICOM PS3.3 C.11.2).

CR, DX and MG images are stored with a wide raw range and read with the window their header gives (a
VOI LUT, or WindowCenter/WindowWidth with VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID).
:func:`apply_display_window` maps modality values (after RescaleSlope/Intercept) through it onto
[0, 1], 1 drawn brightest: what a viewer shows. MONOCHROME1 files arrive inverted by the loader (bright
means high); the window is applied to the values as stored and the result inverted, as a viewer does.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from transforms.dicom.header_values import as_float, as_int, as_text


def window_of(ds: Mapping[str, Any]) -> tuple[float, float, str] | None:
    """The first (center, width, function) of a header; ``None`` without a usable window."""
    center, width = as_float(ds.get("WindowCenter")), as_float(ds.get("WindowWidth"))  # the first of several
    if center is None or width is None or not np.isfinite(center) or not np.isfinite(width) or width < 1:
        return None
    return center, width, (as_text(ds, "VOILUTFunction").upper() or "LINEAR")


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map ``values`` through a VOI window onto [0, 1] (PS3.3 C.11.2.1.2 and C.11.2.1.3)."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0).astype(np.float32)
    if width <= 1:
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0).astype(np.float32)


def stored_range(ds: Mapping[str, Any], default_bits: int = 16) -> tuple[int, int]:
    """The lowest and highest stored value BitsStored and PixelRepresentation allow."""
    bits = as_int(ds.get("BitsStored")) or default_bits
    signed = (as_int(ds.get("PixelRepresentation")) or 0) == 1
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _uninvert(values: np.ndarray, ds: Mapping[str, Any], slope: float, intercept: float) -> np.ndarray:
    """The modality values of a MONOCHROME1 image as stored, from the loader's inverted ones."""
    lo, hi = stored_range(ds)
    return slope * (lo + hi) + 2.0 * intercept - values.astype(np.float64)


def apply_display_window(values: np.ndarray, ds: Mapping[str, Any]) -> tuple[np.ndarray, str]:
    """``values`` (modality units, as the loader gives them) through the header's display window.

    Args:
        values: the rescaled values of the image (any shape).
        ds: its header values (a keyword mapping or a pydicom ``Dataset``).

    Returns:
        ``(image in [0, 1] as float32, what was applied)``; without a VOI LUT or window in the header,
        the range BitsStored allows is mapped onto [0, 1] (said in the second value).
    """
    slope = as_float(ds.get("RescaleSlope")) or 1.0
    intercept = as_float(ds.get("RescaleIntercept")) or 0.0
    inverted = as_text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1"
    original = _uninvert(values, ds, slope, intercept) if inverted else values.astype(np.float64)
    lut = ds.get("VOILUTSequence") if hasattr(ds, "dir") else None  # a pydicom Dataset (the byte reader refuses LUTs)
    if lut:
        from pydicom.pixels import apply_voi_lut

        item = lut[0]
        bits = int(item.LUTDescriptor[2]) or 16
        out = apply_voi_lut(original, ds, index=0).astype(np.float64) / float((1 << bits) - 1)
        shown, how = np.clip(out, 0.0, 1.0).astype(np.float32), "VOI LUT"
    elif (found := window_of(ds)) is not None:
        center, width, function = found
        shown, how = window(original, center, width, function), f"window {center:g}/{width:g} {function}"
    else:
        lo, hi = stored_range(ds)
        low, high = slope * lo + intercept, slope * hi + intercept
        shown = np.clip((original - low) / (high - low), 0.0, 1.0).astype(np.float32)
        how = "no VOI LUT or window in the header: the stored range"
    return (1.0 - shown if inverted else shown).astype(np.float32), how
