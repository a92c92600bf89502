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
