"""Compare a volume with a dcm2niix NIfTI voxel by voxel through world coordinates (used by the loader tests)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np


def dcm2niix_binary() -> Path | None:
    """The dcm2niix executable of this environment (the ``dcm2niix`` wheel beside Python), or on PATH."""
    beside = Path(sys.executable).parent / "dcm2niix"
    if beside.is_file():
        return beside
    found = shutil.which("dcm2niix")
    return Path(found) if found else None


def world_mismatch(array: np.ndarray, affine: np.ndarray, nifti: Path) -> tuple[float, float]:
    """Map every voxel of ``array`` (x, y, z[, t]) through ``affine`` into the voxel grid of ``nifti``.

    dcm2niix may flip or permute axes, so voxels are matched by their RAS position, not their index.

    Returns:
        (largest distance in mm between a voxel's position and the nearest reference voxel centre,
        largest absolute value difference); the value difference is ``inf`` when a voxel falls
        outside the reference grid.
    """
    import nibabel as nib

    ref = nib.load(str(nifti))
    ref_data = np.asarray(ref.get_fdata())
    ours = array.reshape(array.shape + (1,) * (3 - array.ndim)) if array.ndim < 3 else array
    ours = ours.reshape(ours.shape[:3] + (-1,))
    ref_data = ref_data.reshape(ref_data.shape[:3] + (-1,))
    if ours.shape[3] != ref_data.shape[3]:
        return 0.0, float("inf")
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in ours.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    theirs = (world - ref.affine[:3, 3]) @ np.linalg.inv(ref.affine[:3, :3]).T
    nearest = np.rint(theirs)
    distance = float(np.abs((nearest - theirs) @ ref.affine[:3, :3].T).max())
    nearest = nearest.astype(int)
    if ((nearest < 0) | (nearest >= np.array(ref_data.shape[:3]))).any():
        return distance, float("inf")
    values = ref_data[nearest[:, 0], nearest[:, 1], nearest[:, 2]]
    return distance, float(np.abs(ours.reshape(-1, ours.shape[3]) - values).max())
