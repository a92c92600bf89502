"""An abdominal CT phantom in HU, with or without a lesion, and its localizer projection."""
from __future__ import annotations

import numpy as np

#: Rows and columns of every phantom image.
ROWS = COLS = 64


def phantom_hu(rng: np.random.Generator, n_slices: int, pixel_spacing: float, slice_thickness: float,
               noise_hu: float, lesion: bool, lesion_hu: tuple[float, float] = (110.0, 180.0),
               ) -> tuple[np.ndarray, dict[str, float]]:
    """An abdominal CT phantom in HU, shape (z, y, x), z from feet to head, y from anterior to posterior.

    ``lesion_hu`` is the range of the lesion's contrast over the tissue it sits in: positive for a
    hyperdense lesion (the export's task), negative for a hypodense cyst (the demo's source task).

    Returns:
        The volume (float32) and the lesion's centre (mm, volume frame) and radius (empty without lesion).
    """
    z = (np.arange(n_slices) + 0.5) * slice_thickness
    c = (np.arange(COLS) - (COLS - 1) / 2) * pixel_spacing
    zz, yy, xx = np.meshgrid(z, c, c, indexing="ij")
    length = n_slices * slice_thickness
    a, b = rng.uniform(125, 155), rng.uniform(88, 108)  # body half-axes (x, y) mm
    r = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
    vol = np.full(zz.shape, -1000.0, dtype=np.float32)
    vol[r <= 1.0] = -95.0  # subcutaneous fat
    inner = np.sqrt((xx / (a - 14)) ** 2 + (yy / (b - 12)) ** 2) <= 1.0
    vol[inner] = 40.0  # soft tissue
    liver = (((xx + 0.42 * a) / (0.45 * a)) ** 2 + ((yy + 0.05 * b) / (0.62 * b)) ** 2 +
             ((zz - 0.75 * length) / (0.5 * length)) ** 2) <= 1.0
    vol[liver & inner] = 62.0
    lungs = (zz > 0.72 * length) & inner & (
        ((np.abs(xx) - 0.48 * a) / (0.34 * a)) ** 2 + ((yy + 0.1 * b) / (0.6 * b)) ** 2 <= 1.0)
    vol[lungs] = -840.0
    spine = (xx / 16.0) ** 2 + ((yy - 0.62 * b) / 16.0) ** 2 <= 1.0
    vol[spine] = 650.0
    info: dict[str, float] = {}
    if lesion:
        radius = rng.uniform(18.0, 32.0)
        cx = rng.uniform(-0.45, 0.45) * a
        cy = rng.uniform(-0.55, 0.15) * b
        cz = rng.uniform(0.2, 0.6) * length
        delta = rng.uniform(*lesion_hu)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2 + ((zz - cz) * 1.1) ** 2)
        blob = delta / (1.0 + np.exp((d - radius) / 2.5))
        vol += np.where(inner & ~lungs & ~spine, blob, 0.0).astype(np.float32)
        info = {"x_mm": float(cx), "y_mm": float(cy), "z_mm": float(cz), "radius_mm": float(radius),
                "delta_hu": float(delta)}
    vol += rng.normal(0.0, noise_hu, size=vol.shape).astype(np.float32)
    return vol, info


def localizer_projection(volume_hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two coronal projection images (2, rows, cols) of the volume, stored values (HU + 1024 scale)."""
    attenuation = np.clip(volume_hu + 1000.0, 0, None).mean(axis=1)  # (z, x)
    rows_idx = np.linspace(volume_hu.shape[0] - 1, 0, ROWS).round().astype(int)  # top of image = head
    image = attenuation[rows_idx] * 1.6
    return np.stack([image + rng.normal(0, 6, image.shape) for _ in range(2)]).round().astype(np.int16)
