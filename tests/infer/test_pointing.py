"""The pointing game on synthetic maps: world coordinates through the affine, radius + one voxel, correct calls only."""
from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest

from pipeline.errors import ManifestError
from pipeline.infer.cam import cam_stem
from pipeline.infer.pointing import (
    Lesion,
    is_hit,
    peak_world,
    pointing_game,
    read_lesions,
    voxel_mm,
)

# RAS grid of 6 mm voxels, flipped x (as a LPS scan reoriented), origin away from 0
AFFINE = np.array([[-6.0, 0, 0, 90.0], [0, 6.0, 0, -100.0], [0, 0, 6.0, -350.0], [0, 0, 0, 1.0]])


def _map(peak: tuple[int, int, int]) -> np.ndarray:
    cam = np.zeros((32, 32, 24), dtype=np.float32)
    cam[peak] = 1.0
    cam[0, 0, 0] = 0.5
    return cam


def test_peak_goes_through_the_affine_and_tolerance_is_one_voxel() -> None:
    point = peak_world(_map((10, 20, 5)), AFFINE)
    np.testing.assert_allclose(point, [90 - 60.0, -100 + 120.0, -350 + 30.0])
    assert voxel_mm(AFFINE) == 6.0
    lesion = Lesion(30.0 + 20.0, 20.0, -320.0, 13.9)  # 20 mm away: radius 13.9 + 6 = 19.9 misses, 14.1 hits
    assert not is_hit(point, [lesion], 6.0)
    assert is_hit(point, [Lesion(50.0, 20.0, -320.0, 14.1)], 6.0)
    assert is_hit(point, [lesion, Lesion(30.0, 20.0, -320.0, 1.0)], 6.0)  # any lesion of the series


def _write(tmp_path, rows, lesions, maps):
    cam_dir = tmp_path / "cam"
    cam_dir.mkdir()
    for series_id, peak in maps.items():
        nib.save(nib.Nifti1Image(_map(peak), AFFINE), cam_dir / f"{cam_stem(series_id)}.cam.nii.gz")
    pred = tmp_path / "pred.csv"
    with pred.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["series_id", "series_key", "label", "pred", "status"])
        writer.writeheader()
        writer.writerows(rows)
    truth = tmp_path / "lesions.csv"
    with truth.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["series_key", "x", "y", "z", "radius_mm"])
        writer.writerows(lesions)
    return pred, cam_dir, truth


def test_hit_rate_counts_correct_positive_calls_only(tmp_path) -> None:
    rows = [
        {"series_id": "a/1.json", "series_key": "SE-a", "label": "lesion", "pred": "lesion", "status": "ok"},  # hit
        {"series_id": "b/1.json", "series_key": "SE-b", "label": "lesion", "pred": "lesion", "status": "ok"},  # miss
        {"series_id": "c/1.json", "series_key": "SE-c", "label": "lesion", "pred": "normal", "status": "ok"},  # FN
        {"series_id": "d/1.json", "series_key": "SE-d", "label": "normal", "pred": "lesion", "status": "ok"},  # FP
        {"series_id": "e/1.json", "series_key": "SE-e", "label": "lesion", "pred": "lesion", "status": "ok"},  # no map
    ]
    lesions = [("SE-a", 30.0, 20.0, -320.0, 10.0), ("SE-b", -60.0, 20.0, -320.0, 10.0),
               ("SE-c", 30.0, 20.0, -320.0, 10.0), ("SE-e", 0.0, 0.0, 0.0, 5.0)]
    maps = {"a/1.json": (10, 20, 5), "b/1.json": (10, 20, 5), "c/1.json": (10, 20, 5), "d/1.json": (1, 1, 1)}
    pred, cam_dir, truth = _write(tmp_path, rows, lesions, maps)
    result = pointing_game(pred, cam_dir, read_lesions(truth), "lesion")
    assert (result.n_cases, result.n_hits, result.rate) == (2, 1, 0.5)
    assert [c["hit"] for c in result.cases] == [True, False]
    assert result.cases[1]["distance_mm"] == pytest.approx(90.0) and result.cases[1]["allowed_mm"] == 16.0
    assert result.missing == ["SE-e"]
    assert math.isnan(pointing_game(pred, cam_dir, {}, "other").rate)


def test_truth_file_is_checked(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("series_key,x,y,z\nSE-a,1,2,3\n")
    with pytest.raises(ManifestError, match="radius_mm"):
        read_lesions(bad)
    bad.write_text("series_key,x,y,z,radius_mm\nSE-a,1,2,three,4\n")
    with pytest.raises(ManifestError, match="line 2"):
        read_lesions(bad)
