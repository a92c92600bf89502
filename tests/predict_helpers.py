"""Tiny trained runs and image folders for the evaluate / predict / CAM tests and the benchmark.

:func:`make_run` trains a run with :func:`pipeline.train.launch.train` (one epoch on a few small NIfTI
volumes), so the run directory has exactly the format ``radpipe train`` writes.
"""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.config import config_from_dict


def volume(seed: int, shape: tuple[int, ...] = (20, 20, 10), symmetric: bool = False) -> np.ndarray:
    """A CT-like volume in HU (soft tissue with noise and a bright blob)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(40.0, 30.0, size=shape).astype(np.float32)
    centre = [int(rng.integers(3, s - 3)) if s > 6 else s // 2 for s in shape]
    data[tuple(slice(max(0, c - 2), c + 2) for c in centre)] += 150.0
    if symmetric:
        for axis in range(data.ndim):
            data = (data + np.flip(data, axis)) / 2
    return data


def write_nifti(path: Path, data: np.ndarray, spacing: tuple[float, ...] = (1.5, 1.5, 3.0)) -> Path:
    """Save ``data`` as NIfTI with a diagonal affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing[:3], 1.0])), str(path))
    return path


def write_run(run_dir: Path, *, size: tuple[int, ...] = (16, 16, 8), model: str = "resnet10",
              intensity: str = "ct-abdomen", seed: int = 0) -> Path:
    """Write a run directory in ``radpipe train``'s format with random, seeded weights (no training)."""
    import torch

    from pipeline.train.checkpoint import atomic_save
    from pipeline.config import save_config
    from pipeline.manifest.labels import LabelMap
    from pipeline.train.run_dir import build_model

    cfg = config_from_dict({
        "data": {"task": "binary", "classes": ["no", "yes"]},
        "transforms": {"spatial_dims": 3, "size": list(size), "intensity": intensity, "augment": "none"},
        "model": {"name": model, "small_input": True},
        "train": {"batch_size": 4, "device": "cpu", "amp": False},
    })
    info = {"name": model, "spatial_dims": 3, "in_channels": 1, "num_outputs": 2, "options": {"small_input": True}}
    torch.manual_seed(seed)
    net = build_model(info)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    LabelMap("binary", ("no", "yes"), ("label",)).save(run_dir / "labels.json")
    atomic_save({"model": net.state_dict(), "epoch": 1, "best_metric": 0.5, "model_info": info},
                run_dir / "checkpoints" / "best.pt")
    return run_dir


def make_run(run_dir: Path, *, size: tuple[int, ...] = (16, 16, 8), model: str = "resnet10",
             intensity: str = "ct-abdomen", n_cases: int = 8, seed: int = 0) -> Path:
    """Train a binary ``no`` / ``yes`` run for one epoch on ``n_cases`` small volumes; return its directory."""
    from pipeline.train.launch import train

    data = run_dir.parent / f"{run_dir.name}-data"
    rows = []
    for i in range(n_cases):
        write_nifti(data / f"t{i}.nii.gz", volume(100 + i))
        rows.append({"image": f"t{i}.nii.gz", "label": "yes" if i % 2 else "no", "patient_id": f"p{i}",
                     "split": "val" if i >= n_cases - 4 else "train"})
    manifest = data / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cfg = config_from_dict({
        "data": {"manifest": str(manifest), "task": "binary", "cache": "none", "num_workers": 0},
        "transforms": {"spatial_dims": 3, "size": list(size), "intensity": intensity, "augment": "none"},
        "model": {"name": model, "small_input": True},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "amp": False, "tensorboard": False, "seed": seed,
                  "scheduler": "none"},
    })
    train(cfg, run_dir)
    return run_dir


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file (a predictions file, an index) as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
