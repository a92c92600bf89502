"""A synthetic public source dataset for the demo's pretraining step.

The demo shows the transfer-learning recipe end to end: a backbone is first trained on a
"public" dataset (this one: NIfTI CT-like volumes where half hold a dark, hypodense cyst),
then its weights start the model of the hospital task (bright, hyperdense lesions). Both
tasks need the same low-level features (a local blob that differs from soft tissue), so the
transfer is real; neither task's data reaches the other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SOFT_TISSUE_HU = 40.0
AIR_HU = -1000.0


def _phantom(rng: np.random.Generator, shape: tuple[int, int, int], cyst: bool) -> np.ndarray:
    """One body-like volume in HU: an ellipse of soft tissue in air, noise, and maybe a cyst."""
    nx, ny, nz = shape
    x, y, z = np.meshgrid(
        np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), np.linspace(-1, 1, nz), indexing="ij"
    )
    ax, ay = rng.uniform(0.7, 0.9), rng.uniform(0.55, 0.8)
    body = (x / ax) ** 2 + (y / ay) ** 2 <= 1.0
    vol = np.where(body, SOFT_TISSUE_HU, AIR_HU).astype(np.float32)
    vol += rng.normal(0.0, rng.uniform(8.0, 20.0), size=shape).astype(np.float32)
    if cyst:
        r = rng.uniform(0.12, 0.25)
        cx, cy = rng.uniform(-0.4, 0.4) * ax, rng.uniform(-0.4, 0.4) * ay
        cz = rng.uniform(-0.5, 0.5)
        inside = ((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 0.8) ** 2) <= r**2
        vol[inside & body] -= rng.uniform(50.0, 90.0)
    return vol


def write_source_dataset(
    out_dir: str | Path,
    n_cases: int = 120,
    shape: tuple[int, int, int] = (48, 48, 32),
    seed: int = 1,
) -> Path:
    """Write ``n_cases`` NIfTI volumes and a manifest with an official split.

    Args:
        out_dir: folder to write into (created).
        n_cases: number of volumes; half hold a cyst.
        shape: volume shape (x, y, z).
        seed: seed of the generator: the same seed writes the same files.

    Returns:
        The path of ``manifest.csv`` (columns ``image, label, patient_id, split``).
    """
    import nibabel as nib
    import pandas as pd

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    rows = []
    for i in range(n_cases):
        cyst = i % 2 == 1
        vol = _phantom(rng, shape, cyst)
        name = f"images/case_{i:04d}.nii.gz"
        nib.save(nib.Nifti1Image(np.round(vol).astype(np.int16), affine), str(out / name))
        split = "val" if i % 5 == 0 else "train"
        rows.append({"image": name, "label": "cyst" if cyst else "normal", "patient_id": f"src{i:04d}", "split": split})
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
