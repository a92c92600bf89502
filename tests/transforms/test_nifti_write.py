"""transforms.nifti_write: the bytes nibabel writes (header and voxels), read back by nibabel as written."""
from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from transforms.nifti_write import nifti1_header, save_nifti

RNG = np.random.default_rng(0)
CASES = {
    "int16_lps_flip_shear": (np.arange(60, dtype=np.int16).reshape(3, 4, 5),
                             [[-0.7, 0, 0, 10], [0, -0.7, 0.1, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]], None),
    "float32_diagonal": (RNG.random((4, 3, 2)).astype(np.float32), np.diag([1.0, 2.0, 3.0, 1.0]), None),
    "float64_left_handed": (RNG.random((4, 3, 2)), np.diag([-1.0, 2.0, 3.0, 1.0]), None),
    "uint16_4d_sagittal": (RNG.integers(0, 4000, (3, 3, 2, 4)).astype(np.uint16),
                           [[0, 0, -1.2, 5], [0.9, 0, 0, 6], [0, -0.9, 0, 7], [0, 0, 0, 1]], 2.5),
    "uint8_oblique": (RNG.integers(0, 200, (5, 5, 3)).astype(np.uint8),
                      [[0.8, 0.1, 0, 1], [-0.1, 0.8, 0.2, 2], [0, -0.2, 3, 3], [0, 0, 0, 1]], None),
    "int8": (RNG.integers(-100, 100, (5, 5, 3)).astype(np.int8), np.diag([0.5, 0.5, 0.5, 1.0]), None),
}


def _nibabel_bytes(volume: np.ndarray, affine: np.ndarray, temporal_spacing: float | None) -> bytes:
    """What radpipe convert wrote with nibabel before this module."""
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    if volume.ndim == 4 and temporal_spacing:
        zooms = list(image.header.get_zooms())
        zooms[3] = float(temporal_spacing)
        image.header.set_zooms(zooms)
    buffer = io.BytesIO()
    image.to_file_map(image.make_file_map({"image": buffer, "header": buffer}))
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_file_is_byte_for_byte_what_nibabel_writes(tmp_path, name):
    volume, affine, temporal = CASES[name]
    affine = np.asarray(affine, dtype=float)
    expected = _nibabel_bytes(volume, affine, temporal)
    assert nifti1_header(volume.shape, volume.dtype, affine, temporal) == expected[:352]
    save_nifti(volume, affine, tmp_path / "v.nii", temporal)
    save_nifti(volume, affine, tmp_path / "v.nii.gz", temporal)
    assert (tmp_path / "v.nii").read_bytes() == expected
    assert gzip.decompress((tmp_path / "v.nii.gz").read_bytes()) == expected
    back = nib.load(tmp_path / "v.nii.gz")
    assert np.array_equal(np.asanyarray(back.dataobj), volume) and back.get_data_dtype() == volume.dtype
    assert np.allclose(back.header.get_sform(), affine, atol=1e-6) and int(back.header["qform_code"]) == 1


def test_big_endian_input_is_written_little_endian(tmp_path):
    volume = np.arange(24, dtype=">i2").reshape(2, 3, 4)
    save_nifti(volume, np.eye(4), tmp_path / "b.nii")
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "b.nii").dataobj), volume.astype("<i2"))


def test_unsupported_dtypes_and_shapes_are_refused():
    with pytest.raises(ValueError, match="complex128"):
        nifti1_header((2, 2, 2), np.dtype("complex128"), np.eye(4))
    with pytest.raises(ValueError, match="dimensions"):
        nifti1_header((1,) * 8, np.dtype("int16"), np.eye(4))
