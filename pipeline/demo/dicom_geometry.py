"""Geometry of the synthetic series: orientations, slice positions and acquisition order.

See :mod:`pipeline.demo.dicom_series` for the convention (LPS millimetres, ``data[t, z, y, x]``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAMED_ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}


def orientation_cosines(orientation: str | Sequence[float]) -> np.ndarray:
    """Six direction cosines (row, then column) for a named or explicit orientation.

    Args:
        orientation: ``"axial"``, ``"coronal"``, ``"sagittal"`` or 6 numbers (normalised here).

    Returns:
        A float array of shape (6,) with both vectors unit length.

    Raises:
        ValueError: unknown name, wrong length, or parallel/degenerate vectors.
    """
    if isinstance(orientation, str):
        if orientation not in NAMED_ORIENTATIONS:
            raise ValueError(f"orientation {orientation!r} unknown; expected one of {sorted(NAMED_ORIENTATIONS)}"
                             " or 6 direction cosines")
        return np.array(NAMED_ORIENTATIONS[orientation], dtype=float)
    cos = np.asarray(orientation, dtype=float).reshape(-1)
    if cos.size != 6:
        raise ValueError(f"orientation needs 6 direction cosines, got {cos.size}")
    row, col = cos[:3], cos[3:]
    if np.linalg.norm(row) == 0 or np.linalg.norm(col) == 0:
        raise ValueError("orientation vectors must be non-zero")
    row = row / np.linalg.norm(row)
    col = col - row * np.dot(row, col)  # make the column vector orthogonal to the row vector
    if np.linalg.norm(col) < 1e-6:
        raise ValueError("orientation row and column vectors are parallel")
    return np.concatenate([row, col / np.linalg.norm(col)])


def series_geometry(*, n_slices: int, orientation: str | Sequence[float] = "axial",
                    origin: Sequence[float] = (0.0, 0.0, 0.0), slice_spacing: float = 2.5,
                    gantry_tilt_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Direction cosines (6,) and per-slice ImagePositionPatient (n_slices, 3) that ``write_series`` uses.

    A gantry tilt rotates the image plane about the row axis by ``gantry_tilt_deg`` while slice
    positions still advance along the untilted normal (the table axis), as on a tilted CT.
    """
    cos = orientation_cosines(orientation)
    row, col = cos[:3], cos[3:]
    stack_dir = np.cross(row, col)
    if gantry_tilt_deg:
        angle = np.deg2rad(gantry_tilt_deg)
        col = col * np.cos(angle) + stack_dir * np.sin(angle)
        cos = np.concatenate([row, col])
    positions = np.asarray(origin, dtype=float) + np.arange(n_slices)[:, None] * slice_spacing * stack_dir
    return cos, positions


def instance_order(n_slices: int, order: str) -> list[int]:
    """Spatial slice indices in acquisition (InstanceNumber) order.

    Args:
        n_slices: spatial slice positions.
        order: ``"ascending"`` (along the normal), ``"descending"`` or ``"interleaved"`` (odd indices first).

    Raises:
        ValueError: an unknown ``order``.
    """
    if order == "ascending":
        return list(range(n_slices))
    if order == "descending":
        return list(range(n_slices - 1, -1, -1))
    if order == "interleaved":
        return list(range(1, n_slices, 2)) + list(range(0, n_slices, 2))
    raise ValueError(f"order {order!r} unknown; expected 'ascending', 'descending' or 'interleaved'")
