"""The demo's ground truth of where the lesions are: ``DIR/truth/lesions.csv``, for the pointing game.

One row per lesion series of the export and of ``new_scans``: ``series_key`` (the pseudonymised key that
``radpipe scan`` and ``radpipe predict`` write for the series, so the file joins their outputs without a UID in
clear), the lesion centre ``x``, ``y``, ``z`` in RAS millimetres (the world frame of NIfTI files and of
``predict --cam`` maps) and ``radius_mm``.

The phantom draws a lesion in its own frame (:func:`pipeline.demo.phantom.phantom_hu`: ``x`` along the
columns and ``y`` along the rows, both centred on the image; ``z`` from the first slice's lower edge). The
series are axial (row direction +x, column direction +y of DICOM's LPS frame) with the first slice at
``origin_z``, so the centre is ``(x, y, origin_z + z - spacing / 2)`` in LPS, and RAS flips the first two.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.files import atomic_open
from pipeline.pseudonym import Pseudonymiser

LESIONS_FILE = Path("truth") / "lesions.csv"
COLUMNS = ("series_key", "x", "y", "z", "radius_mm")


def lesion_ras(lesion: dict[str, float], origin_z: float, slice_spacing: float) -> tuple[float, float, float]:
    """A phantom lesion's centre in RAS mm (see the module docstring).

    >>> lesion_ras({"x_mm": 10.0, "y_mm": -20.0, "z_mm": 30.0}, origin_z=-350.0, slice_spacing=5.0)
    (-10.0, 20.0, -322.5)
    """
    return -lesion["x_mm"], -lesion["y_mm"], origin_z + lesion["z_mm"] - slice_spacing / 2.0


def lesion_rows(series: Iterable[dict[str, Any]], pseudonymiser: Pseudonymiser) -> list[dict[str, str]]:
    """Rows of ``lesions.csv`` for the series that carry a lesion.

    Args:
        series: dicts with ``series_uid``, the lesion (``lesion_mm`` or ``lesion``: the phantom's centre and
            radius, empty without lesion), ``origin_z`` and ``slice_thickness`` (the export's ``cases`` and
            ``new_scans``' ``good_series``).
        pseudonymiser: the one ``radpipe scan`` uses (the same secret gives the same keys).
    """
    rows = []
    for item in series:
        lesion = item.get("lesion_mm", item.get("lesion"))
        if not isinstance(lesion, dict) or not lesion:
            continue
        x, y, z = lesion_ras(lesion, float(item["origin_z"]), float(item["slice_thickness"]))
        rows.append({"series_key": pseudonymiser.key(item["series_uid"], "series"), "x": f"{x:.2f}",
                     "y": f"{y:.2f}", "z": f"{z:.2f}", "radius_mm": f"{lesion['radius_mm']:.2f}"})
    return rows


def write_lesions(out_dir: str | Path, series: Iterable[dict[str, Any]],
                  pseudonymiser: Pseudonymiser | None = None) -> Path:
    """Write ``out_dir/truth/lesions.csv`` (see :func:`lesion_rows`); returns its path."""
    path = Path(out_dir) / LESIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = lesion_rows(series, pseudonymiser or Pseudonymiser())
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path
