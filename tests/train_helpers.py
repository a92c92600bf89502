"""Synthetic learnable data and small configs for the training tests.

A case is a NIfTI image of noise; positives carry a bright 5-voxel blob at a random place.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, config_from_dict


def write_blob_manifest(
    root: Path,
    dims: int = 2,
    *,
    n_train: int = 24,
    n_val: int = 11,
    n_test: int = 4,
    size: int = 16,
    seed: int = 0,
    test_files_missing: bool = False,
) -> Path:
    """Write ``root/img/*.nii.gz`` and ``root/manifest.csv`` (image, label, patient_id, split)."""
    import nibabel as nib

    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for i, split in enumerate(splits):
        positive = i % 2 == 1
        image = rng.normal(0.0, 0.3, (size,) * dims).astype(np.float32)
        if positive:
            centre = rng.integers(3, size - 3, dims)
            image[tuple(slice(c - 2, c + 3) for c in centre)] += 2.0
        name = f"img/case{i:03d}.nii.gz"
        if split == "test" and test_files_missing:
            name = f"img/missing{i:03d}.nii.gz"
        else:
            volume = image[:, :, None] if dims == 2 else image
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(root / name))
        rows.append({"image": name, "label": "pos" if positive else "neg", "patient_id": f"P{i:03d}", "split": split})
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def small_config(dims: int = 2, size: int = 16, **train: Any) -> Config:
    """A CPU config for the blob task: resnet10 with the small-input stem, no augmentation."""
    values = {
        "data": {"task": "binary", "cache": "memory"},
        "transforms": {"spatial_dims": dims, "size": [size] * dims, "augment": "none", "orientation": ""},
        "model": {"name": "resnet10", "small_input": True},
        "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "device": "cpu", "tensorboard": False, **train},
    }
    return config_from_dict(values)


def narrow_resnets(monkeypatch: Any, widen_factor: float = 0.25) -> None:
    """Build registry ResNets with ``widen_factor`` channels so CPU tests run in seconds."""
    import models.factory as factory

    original = factory.create_model

    def create_model(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("resnet"):
            kwargs.setdefault("widen_factor", widen_factor)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(factory, "create_model", create_model)


def metric_rows(path: Path, drop: tuple[str, ...] = ("time_s", "images_per_s")) -> list[dict[str, float]]:
    """``metrics.csv`` rows as floats, without the timing columns."""
    with path.open(newline="") as f:
        return [{k: float(v) if v else float("nan") for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]
