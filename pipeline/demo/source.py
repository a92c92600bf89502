"""A synthetic "public" source dataset for the demo's pretraining step.

The demo shows the transfer-learning recipe end to end: a backbone is first trained on a
public-like dataset (this one: NIfTI abdominal CT phantoms where half hold a dark, hypodense
cyst), then its weights start the model of the hospital task (bright, hyperdense lesions).
Both tasks share anatomy, scale and the low-level features a lesion needs (a local blob that
differs from the tissue around it), so the transfer is real; neither task's data reaches the
other. The phantom is the export's (:func:`pipeline.demo.phantom.phantom_hu`), with the
lesion contrast reversed and a scanner of its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.demo.phantom import phantom_hu

CYST_HU = (-110.0, -70.0)
PIXEL_SPACING_MM = 5.8
SLICE_THICKNESS_MM = 5.0
NOISE_HU = 15.0


def nifti_affine(n_rows: int, n_cols: int, pixel_spacing: float, slice_thickness: float) -> np.ndarray:
    """RAS affine of a phantom stored as (x, y, z): x to the patient's left, y posterior, z to the head."""
    affine = np.diag([-pixel_spacing, -pixel_spacing, slice_thickness, 1.0])
    affine[:3, 3] = [(n_cols - 1) / 2 * pixel_spacing, (n_rows - 1) / 2 * pixel_spacing, 0.0]
    return affine


def write_source_dataset(out_dir: str | Path, n_cases: int = 100, n_slices: int = 30, seed: int = 1) -> Path:
    """Write ``n_cases`` NIfTI volumes (half with a cyst) and a manifest with a train/val split.

    Args:
        out_dir: folder to write into (created).
        n_cases: number of volumes; every second one holds a cyst.
        n_slices: slices per volume.
        seed: seed of the generator: the same seed writes the same files.

    Returns:
        The path of ``manifest.csv`` (columns ``image, label, patient_id, split``).
    """
    import nibabel as nib
    import pandas as pd

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_cases):
        cyst = i % 2 == 1
        hu, _ = phantom_hu(rng, n_slices, PIXEL_SPACING_MM, SLICE_THICKNESS_MM, NOISE_HU, cyst, lesion_hu=CYST_HU)
        volume = np.round(hu).astype(np.int16).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
        affine = nifti_affine(volume.shape[1], volume.shape[0], PIXEL_SPACING_MM, SLICE_THICKNESS_MM)
        name = f"images/case_{i:04d}.nii.gz"
        image = nib.Nifti1Image(volume, affine)
        image.header.set_xyzt_units("mm")
        nib.save(image, str(out / name))
        split = "val" if i % 5 in (0, 3) else "train"
        rows.append({"image": name, "label": "cyst" if cyst else "normal", "patient_id": f"src{i:04d}", "split": split})
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
