"""The pointing game: does a Grad-CAM's maximum fall inside the finding it explains?

For every case that is truly positive **and** predicted positive (a correct positive call) and has a map
written by ``radpipe predict --cam``, the map's maximum voxel is taken to world coordinates with the map's
NIfTI affine (RAS millimetres) and counted a **hit** when it lies within the lesion's radius plus one voxel
of the map's grid (its largest spacing) of a lesion centre of that series. The hit rate is hits / cases.

Truth comes from a CSV with one row per lesion: ``series_key``, ``x``, ``y``, ``z`` (RAS mm) and
``radius_mm`` (``radpipe demo`` writes ``DIR/truth/lesions.csv``). Predictions are matched to it by their
``series_key`` column; the map of a row is ``<cam_dir>/<cam_stem(series_id)>.cam.nii.gz``.

>>> import numpy as np
>>> affine = np.diag([2.0, 2.0, 3.0, 1.0])
>>> is_hit(peak_world(np.pad(np.ones((1, 1, 1)), 2), affine), [Lesion(4.0, 4.0, 6.0, 1.0)], voxel_mm(affine))
True
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ManifestError
from pipeline.infer.cam import cam_stem

LESION_COLUMNS = ("series_key", "x", "y", "z", "radius_mm")


@dataclass(frozen=True)
class Lesion:
    """A lesion: centre (RAS mm) and radius (mm)."""

    x: float
    y: float
    z: float
    radius_mm: float


@dataclass
class PointingResult:
    """The outcome of :func:`pointing_game`.

    Attributes:
        n_cases: correct positive calls with a map and a lesion in the truth.
        n_hits: those whose map maximum lies in a lesion.
        cases: per case: ``series_key``, ``hit``, ``distance_mm`` (to the nearest lesion centre), ``allowed_mm``.
        missing: series keys of correct positive calls without a map or without a lesion in the truth.
    """

    n_cases: int = 0
    n_hits: int = 0
    cases: list[dict[str, object]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Hits / cases (nan without cases)."""
        return self.n_hits / self.n_cases if self.n_cases else math.nan


def read_lesions(path: str | Path) -> dict[str, list[Lesion]]:
    """The lesions of a truth CSV by series key.

    Raises:
        ManifestError: the file lacks a column of :data:`LESION_COLUMNS` or holds a value that is not a number.
    """
    lesions: dict[str, list[Lesion]] = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LESION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {missing}; a lesion truth file has {list(LESION_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                lesion = Lesion(*(float(row[c]) for c in LESION_COLUMNS[1:]))
            except ValueError as e:
                raise ManifestError(f"{path} line {line}: x, y, z and radius_mm must be numbers ({e})") from e
            lesions.setdefault(row["series_key"].strip(), []).append(lesion)
    return lesions


def peak_world(cam: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm, the affine's frame) of the map's maximum voxel (first in C order on ties)."""
    index = np.unravel_index(int(np.argmax(cam)), cam.shape)
    voxel = np.zeros(3)
    voxel[: len(index)] = index
    return (np.asarray(affine, dtype=float) @ np.r_[voxel, 1.0])[:3]


def voxel_mm(affine: np.ndarray) -> float:
    """The largest voxel spacing of an affine (mm)."""
    return float(np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0).max())


def is_hit(point: np.ndarray, lesions: Sequence[Lesion], tolerance_mm: float) -> bool:
    """Whether ``point`` lies within ``radius + tolerance_mm`` of one of ``lesions``."""
    return any(_distance(point, lesion) <= lesion.radius_mm + tolerance_mm for lesion in lesions)


def _distance(point: np.ndarray, lesion: Lesion) -> float:
    return float(np.linalg.norm(np.asarray(point, dtype=float) - [lesion.x, lesion.y, lesion.z]))


def pointing_game(predictions: str | Path, cam_dir: str | Path, lesions: dict[str, list[Lesion]],
                  positive_class: str, label_column: str = "label") -> PointingResult:
    """Score the maps of ``radpipe predict --cam`` against lesion centres (see the module docstring).

    Args:
        predictions: the predictions CSV (``series_id``, ``series_key``, ``pred``, the label column).
        cam_dir: the ``--cam`` folder.
        lesions: the truth by series key (:func:`read_lesions`).
        positive_class: the class whose correct calls are scored.
        label_column: the truth column; without it, a case is positive when its series has a lesion.
    """
    import nibabel as nib

    result = PointingResult()
    with Path(predictions).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        key = (row.get("series_key") or "").strip()
        truth = row[label_column].strip() == positive_class if label_column in row else key in lesions
        if row.get("status", "ok") != "ok" or not truth or row.get("pred", "").strip() != positive_class:
            continue
        cam_file = Path(cam_dir) / f"{cam_stem(row.get('series_id') or key)}.cam.nii.gz"
        if key not in lesions or not cam_file.is_file():
            result.missing.append(key)
            continue
        image = nib.load(cam_file)
        point = peak_world(np.asarray(image.dataobj, dtype=np.float32), image.affine)
        tolerance = voxel_mm(image.affine)
        hit = is_hit(point, lesions[key], tolerance)
        nearest = min(lesions[key], key=lambda lesion: _distance(point, lesion))
        result.n_cases += 1
        result.n_hits += hit
        result.cases.append({"series_key": key, "hit": hit, "distance_mm": round(_distance(point, nearest), 1),
                             "allowed_mm": round(nearest.radius_mm + tolerance, 1)})
    return result
