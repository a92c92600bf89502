"""Augmentation sets in 2D and 3D."""
from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose, RandBiasFieldd, Randomizable, RandRotate90d

from pipeline.errors import ConfigError
from transforms.augment import AUGMENT_SETS, augment_transforms

SIZES = {2: (16, 16), 3: (16, 16, 8)}


def _image(dims: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand((2, *SIZES[dims]), generator=g)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["light", "medium", "heavy"])
def test_sets_keep_shape_and_dtype_and_change_the_image(name, dims):
    chain = Compose(augment_transforms(["image"], name, prob=1.0, size=SIZES[dims], modality="mr"))
    chain.set_random_state(seed=3)
    img = _image(dims)
    out = chain({"image": img.clone()})["image"]
    assert tuple(out.shape) == tuple(img.shape)
    assert out.dtype == torch.float32
    assert not torch.allclose(torch.as_tensor(out), img)
    assert isinstance(chain.transforms[0], Randomizable)


@pytest.mark.parametrize("dims", [2, 3])
def test_probability_zero_leaves_the_image_untouched(dims):
    chain = Compose(augment_transforms(["image"], "heavy", prob=0.0, size=SIZES[dims], modality="mr"))
    img = _image(dims)
    torch.testing.assert_close(torch.as_tensor(chain({"image": img.clone()})["image"]), img)


def test_none_is_empty_and_unknown_set_is_a_config_error():
    assert augment_transforms(["image"], "none", 0.5, (8, 8)) == []
    with pytest.raises(ConfigError, match="light"):
        augment_transforms(["image"], "extreme", 0.5, (8, 8))
    assert set(AUGMENT_SETS) == {"none", "light", "medium", "heavy"}


def test_bias_field_only_for_mr_and_heavy():
    def kinds(name, modality):
        return {type(t) for t in augment_transforms(["image"], name, 0.5, (8, 8, 8), modality)}

    assert RandBiasFieldd in kinds("heavy", "mr")
    assert RandBiasFieldd not in kinds("heavy", "ct")
    assert RandBiasFieldd not in kinds("medium", "mr")


def test_rot90_only_when_in_plane_is_square():
    def has_rot90(size):
        return any(isinstance(t, RandRotate90d) for t in augment_transforms(["image"], "light", 0.5, size))

    assert has_rot90((16, 16)) and has_rot90((16, 16, 4))
    assert not has_rot90((16, 12))
    chain = Compose(augment_transforms(["image"], "medium", 1.0, (16, 12)))
    assert chain({"image": torch.rand(1, 16, 12)})["image"].shape == (1, 16, 12)


@pytest.mark.parametrize("dims", [2, 3])
def test_same_seed_same_augmentation(dims):
    def run(seed):
        chain = Compose(augment_transforms(["image"], "heavy", 0.7, SIZES[dims], "mr"))
        chain.set_random_state(seed=seed)
        return [torch.as_tensor(chain({"image": _image(dims)})["image"]) for _ in range(3)]

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("shape, axes", [((3, 6, 6), (0, 1)), ((1, 5, 5, 4), (0, 1)), ((2, 4, 4, 4), (1, 2))])
def test_light_flips_and_turns_equal_monai(shape, axes):
    """LightFlipd / LightRotate90d: MONAI's draws, values, affine and pixdim, the input left as it was."""
    import numpy as np
    from monai.data import MetaTensor
    from monai.transforms import RandFlipd

    from transforms.augment import LightFlipd, LightRotate90d

    affine = torch.tensor([[0.7, 0.1, 0, 5], [0, 1.3, 0.2, -3], [0.1, 0, 2.5, 7], [0, 0, 0, 1]], dtype=torch.float64)
    values = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    pixdim = np.array([1, 0.7, 1.3, 2.5, 1, 1, 1, 1], np.float32)
    pairs = [(RandFlipd("image", prob=0.5, spatial_axis=a), LightFlipd("image", prob=0.5, spatial_axis=a))
             for a in range(len(shape) - 1)]
    pairs.append((RandRotate90d("image", prob=0.5, max_k=3, spatial_axes=axes),
                  LightRotate90d("image", prob=0.5, max_k=3, spatial_axes=axes)))
    for monai_t, light_t in pairs:
        monai_t.set_random_state(7)
        light_t.set_random_state(7)
        changed = 0
        for _ in range(12):
            given = MetaTensor(values.clone(), affine=affine.clone(), meta={"pixdim": pixdim.copy()})
            want = monai_t({"image": MetaTensor(values.clone(), affine=affine.clone(), meta={"pixdim": pixdim.copy()})})
            got = light_t({"image": given})["image"]
            assert torch.equal(got.as_tensor(), want["image"].as_tensor())
            assert torch.equal(got.affine, want["image"].affine) and got.applied_operations == []
            np.testing.assert_array_equal(got.meta["pixdim"], want["image"].meta["pixdim"])
            assert torch.equal(given.affine, affine) and given.meta["pixdim"].tolist() == pixdim.tolist()
            changed += not torch.equal(got.as_tensor(), values)
        assert 0 < changed < 12  # prob 0.5: some calls turned or flipped, some not


def test_flip_axes_and_turns_choose_the_symmetries():
    """An oriented image (flip_axes [1], no turns) is only ever mirrored along axis 1, never turned or upended."""
    ramp = (torch.arange(16.0).view(1, 4, 4) + 100 * torch.arange(4.0).view(1, 4, 1))  # rows and columns differ
    seen = set()
    chain = Compose(augment_transforms(["image"], "light", 0.5, (4, 4), flip_axes=(1,), turns=False))
    chain.set_random_state(seed=0)
    for _ in range(40):
        out = torch.as_tensor(chain({"image": ramp.clone()})["image"])
        seen.add("same" if torch.equal(out, ramp) else "mirrored" if torch.equal(out, ramp.flip(2)) else "other")
    assert seen == {"same", "mirrored"}
    kinds = [type(t).__name__ for t in augment_transforms(["image"], "medium", 0.5, (8, 8), flip_axes=(), turns=False)]
    assert not any(k.startswith("Light") for k in kinds)
    default = augment_transforms(["image"], "light", 0.5, (8, 8, 8))
    assert [getattr(t, "flipper", None) and t.flipper.spatial_axis for t in default[:2]] == [0, 1]


@pytest.mark.parametrize("axes, dims", [((2,), 2), ((0, 0), 2), ((-1,), 3), ((3,), 3)])
def test_flip_axes_outside_the_image_are_a_config_error(axes, dims):
    from transforms.config import TransformsConfig

    size = (8,) * dims
    with pytest.raises(ConfigError, match=r"transforms.flip_axes.*give axes from 0 to"):
        TransformsConfig(spatial_dims=dims, size=size, flip_axes=axes)
    assert TransformsConfig(spatial_dims=dims, size=size, flip_axes=()).flip_axes == ()
