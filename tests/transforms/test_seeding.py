"""Per-case re-seeding: the same states and draws as MONAI's ``set_random_state``, or MONAI's call itself."""
from __future__ import annotations

import copy

import pytest
import torch
from monai.transforms import Compose, MapTransform, Randomizable

from transforms.augment import augment_transforms
from transforms.seeding import Reseeder

SIZES = {2: (16, 16), 3: (12, 12, 8)}


def _image(dims: int) -> torch.Tensor:
    return torch.rand((1, *SIZES[dims]), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["light", "medium", "heavy"])
def test_reseeding_gives_monai_s_draws_case_after_case(name, dims):
    chain = Compose(augment_transforms(["image"], name, prob=0.5, size=SIZES[dims], modality="mr"))
    theirs = copy.deepcopy(chain)
    reseed = Reseeder(chain)
    assert reseed.fast
    img = _image(dims)
    changed = 0
    for seed in (0, 1, 7, 2**31 - 1, 123_456_789, 42):
        theirs.set_random_state(seed=seed)
        reseed(seed)
        a, b = theirs({"image": img.clone()})["image"], chain({"image": img.clone()})["image"]
        torch.testing.assert_close(torch.as_tensor(b), torch.as_tensor(a), rtol=0, atol=0)
        changed += not torch.equal(torch.as_tensor(a), img)
    assert changed >= 4  # the draws differ from case to case and do change the image


class _OddSeeding(Randomizable, MapTransform):
    """Seeds what it wraps with seed + 1: not MONAI's rule, so the fast path must not be used."""

    def __init__(self) -> None:
        MapTransform.__init__(self, ["image"])
        self.inner = _Noise()

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.inner.set_random_state(None if seed is None else seed + 1, state)
        return self

    def __call__(self, data):
        return self.inner(data)


class _Noise(Randomizable):
    def __call__(self, data):
        return {**data, "image": data["image"] + float(self.R.uniform())}


def test_a_chain_that_seeds_otherwise_falls_back_to_monai_s_call():
    chain = Compose([_OddSeeding()])
    theirs = copy.deepcopy(chain)
    reseed = Reseeder(chain)
    assert not reseed.fast
    reseed(5)
    theirs.set_random_state(seed=5)
    img = torch.zeros(1, 4, 4)
    assert torch.equal(chain({"image": img})["image"], theirs({"image": img})["image"])

