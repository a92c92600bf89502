"""Shared pytest fixtures: synthetic DICOM series, NIfTI files, dcm2niix reference conversions."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest



@pytest.fixture
def dicom_series(tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory: ``dicom_series(name, **write_series_kwargs)`` writes a synthetic series under ``tmp_path/name``."""
    from pipeline.demo.synthetic_dicom import series_args, write_series

    def make(name: str = "series", **kwargs: Any) -> list[Path]:
        kwargs.setdefault("rows", 24)
        kwargs.setdefault("cols", 20)
        kwargs.setdefault("n_slices", 6)
        return write_series(tmp_path / name, *series_args(**kwargs))

    return make


@pytest.fixture
def ct_series(dicom_series: Callable[..., list[Path]]) -> list[Path]:
    """A small axial CT series (20 columns x 24 rows x 6 slices), shuffled file names."""
    return dicom_series("ct")


@pytest.fixture
def nifti_file(tmp_path: Path) -> Path:
    """A small 3D NIfTI (int16, 1 x 1.5 x 3 mm, translated) at ``tmp_path/image.nii.gz``."""
    import nibabel as nib

    data = (np.arange(8 * 7 * 5, dtype=np.int16).reshape(8, 7, 5) * 3) - 50
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-4.0, 10.0, 2.5)
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _dcm2niix_path() -> Path | None:
    from dicom_reference import dcm2niix_binary

    return dcm2niix_binary()


@pytest.fixture
def dcm2niix(tmp_path: Path) -> Callable[[Path], list[Path]]:
    """Factory: ``dcm2niix(folder)`` converts a DICOM folder with dcm2niix and returns the NIfTI files made.

    Skips the test when the dcm2niix binary (the ``dcm2niix`` wheel) is not installed.
    """
    binary = _dcm2niix_path()
    if binary is None:
        pytest.skip("dcm2niix binary not found (pip install dcm2niix); reference comparison skipped")

    def convert(folder: Path) -> list[Path]:
        out = tmp_path / f"dcm2niix_{Path(folder).name}"
        out.mkdir(exist_ok=True)
        subprocess.run([str(binary), "-z", "n", "-b", "y", "-f", "%s_%e", "-o", str(out), str(folder)],
                       check=True, capture_output=True, timeout=120)
        return sorted(out.glob("*.nii"))

    return convert


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test with one torch thread (small models train faster and reproducibly on a shared CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

