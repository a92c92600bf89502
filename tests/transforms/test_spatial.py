"""Spatial steps: checks, reorientation, resampling, foreground crop, 2D slicing and size."""
from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from pipeline.config import TransformsConfig
from pipeline.errors import ConfigError, ImageReadError
from transforms.spatial import (
    CheckImaged,
    Reorientd,
    SameGridd,
    SliceTo2Dd,
    crop_foreground_transforms,
    foreground_mask,
    size_transforms,
    spacing_transforms,
)


def _load(path, key="image"):
    return LoadImaged([key], image_only=True, ensure_channel_first=True)({key: str(path)})


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def test_4d_image_is_rejected_naming_the_file(tmp_path):
    path = _nifti(tmp_path / "perfusion.nii.gz", np.zeros((6, 6, 4, 3)))
    with pytest.raises(ImageReadError, match="perfusion.nii.gz.*4D image"):
        CheckImaged(["image"], spatial_dims=3)(_load(path))


def test_2d_image_under_3d_model_is_a_config_error(tmp_path):
    path = _nifti(tmp_path / "xray.nii.gz", np.zeros((8, 8)))
    data = _load(path)
    assert CheckImaged(["image"], spatial_dims=2)(data) is data
    with pytest.raises(ConfigError, match="spatial_dims: 2"):
        CheckImaged(["image"], spatial_dims=3)(data)


def test_reorient_flips_lps_volume_to_ras_and_handles_2d_quietly(tmp_path):
    vol = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    path = _nifti(tmp_path / "lps.nii.gz", vol, np.diag([-1.0, -1.0, 1.0, 1.0]))
    out = Reorientd(["image"], "RAS")(_load(path))["image"]
    np.testing.assert_array_equal(out[0].numpy(), vol[::-1, ::-1, :])
    flat = _load(_nifti(tmp_path / "flat.nii.gz", np.ones((5, 7))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Reorientd(["image"], "RAS")(flat)["image"].shape == (1, 5, 7)


def test_two_spacing_values_resample_in_plane_only(tmp_path):
    path = _nifti(tmp_path / "v.nii.gz", np.ones((10, 10, 6)), np.diag([2.0, 2.0, 5.0, 1.0]))
    cfg = TransformsConfig(spacing=(1.0, 1.0))
    out = Compose(spacing_transforms(["image"], cfg))(_load(path))["image"]
    assert out.shape[-1] == 6
    assert out.shape[1] in (19, 20)
    np.testing.assert_allclose(out.pixdim.numpy(), [1.0, 1.0, 5.0])
    assert spacing_transforms(["image"], TransformsConfig()) == []


def test_foreground_crop_uses_threshold_and_first_column():
    ct = torch.full((1, 10, 10, 4), -1000.0)
    ct[:, 2:6, 3:8, 1:3] = 40.0
    other = torch.arange(400, dtype=torch.float32).reshape(1, 10, 10, 4)
    out = Compose(crop_foreground_transforms(["ct", "pet"], threshold=-500.0))({"ct": ct, "pet": other})
    assert out["ct"].shape == (1, 4, 5, 2)
    np.testing.assert_array_equal(out["pet"].numpy(), other[:, 2:6, 3:8, 1:3].numpy())
    assert set(out) == {"ct", "pet"}


def test_empty_foreground_keeps_the_whole_image():
    assert bool(foreground_mask(torch.zeros(1, 3, 3)).all())
    out = Compose(crop_foreground_transforms(["image"], 0.0))({"image": torch.zeros(1, 5, 6)})["image"]
    assert out.shape == (1, 5, 6)


def test_same_grid_is_required_for_several_columns():
    with pytest.raises(ImageReadError, match="not on the grid"):
        SameGridd(["a", "b"])({"a": torch.zeros(1, 4, 4, 4), "b": torch.zeros(1, 4, 4, 5)})


def _volume(depth=5):
    return MetaTensor(torch.arange(4 * 3 * depth, dtype=torch.float32).reshape(1, 4, 3, depth))


def test_middle_slice_is_axial_with_the_slice_origin():
    vol = _volume()
    vol.affine = torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0], dtype=torch.float64))
    out = SliceTo2Dd(["image"], "middle")({"image": vol})["image"]
    np.testing.assert_array_equal(out.numpy(), vol[..., 2].numpy())
    assert out.affine[2, 3] == 5.0
    assert vol.affine[2, 3] == 0.0


def test_slab_gives_slices_as_channels_and_repeats_edges():
    vol = _volume(depth=5)
    out = SliceTo2Dd(["image"], "slab", slab=3)({"image": vol})["image"]
    assert out.shape == (3, 4, 3)
    for c, z in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(out[c].numpy(), vol[0, ..., z].numpy())
    thin = SliceTo2Dd(["image"], "slab", slab=5)({"image": _volume(depth=1)})["image"]
    assert thin.shape == (5, 4, 3)
    assert all(torch.equal(thin[c], thin[0]) for c in range(5))


def test_all_slices_become_samples_and_2d_passes_through():
    out = SliceTo2Dd(["image"], "all")({"image": _volume(depth=4), "label": 1})
    assert isinstance(out, list) and len(out) == 4
    assert [s["slice_index"] for s in out] == [0, 1, 2, 3]
    assert all(s["label"] == 1 and s["image"].shape == (1, 4, 3) for s in out)
    flat = torch.ones(1, 4, 3)
    assert SliceTo2Dd(["image"], "all")({"image": flat})[0]["slice_index"] == 0
    assert SliceTo2Dd(["image"], "middle")({"image": flat})["image"] is flat


def test_all_slices_need_equal_depth_across_columns():
    with pytest.raises(ImageReadError, match="differ in slices"):
        SliceTo2Dd(["a", "b"], "all")({"a": _volume(4), "b": _volume(5)})


@pytest.mark.parametrize("resize, size", [("resize", (8, 6)), ("crop-pad", (8, 6)), ("resize", (8, 6, 4)),
                                          ("crop-pad", (2, 6, 9))])
def test_size_transforms_reach_the_configured_size(resize, size):
    cfg = TransformsConfig(spatial_dims=len(size), size=size, resize=resize)
    img = torch.rand(1, 5, 7) if len(size) == 2 else torch.rand(1, 5, 7, 3)
    out = Compose(size_transforms(["image"], cfg))({"image": img})["image"]
    assert tuple(out.shape) == (1, *size)
    if resize == "crop-pad" and len(size) == 3:
        assert out[0, :, :, 0].abs().sum() == 0  # zero padding in the slice axis
