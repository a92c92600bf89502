"""The default MedMNIST recipes: epochs from the image budget, the stem by size, what import-medmnist writes,
and data_manifests/medmnist_{2d,3d}.yaml kept equal to them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.manifest.medmnist import import_medmnist
from pipeline.manifest.medmnist_recipe import RECIPES, describe_recipe, recipe, recipe_epochs

PRESETS = Path(__file__).resolve().parents[2] / "data_manifests"


@pytest.mark.parametrize("dims", [2, 3])
def test_epochs_follow_the_budget_between_floor_and_cap(dims):
    r = RECIPES[dims]
    n = r.budget_images // 10
    assert recipe_epochs(dims, n) == min(10, r.max_epochs)
    assert recipe_epochs(dims, 1) == r.max_epochs
    assert recipe_epochs(dims, 0) == r.max_epochs
    assert recipe_epochs(dims, r.budget_images * 100) == r.min_epochs
    train = recipe(dims, n)["train"]
    assert train["epochs"] == recipe_epochs(dims, n)
    assert train["warmup_epochs"] == (1 if train["epochs"] >= r.warmup_from else 0)
    assert train["val_every"] == max(1, round(train["epochs"] / r.validations))


@pytest.mark.parametrize("dims", [2, 3])
def test_float32_up_to_fp32_images_then_bf16(dims):
    assert recipe(dims, 1)["train"]["cpu_bf16"] is False
    if dims == 2:
        assert recipe(2, 600)["train"]["cpu_bf16"] is False  # 100 x 600 = 60,000 images: the last fp32 run
        assert recipe(2, 601)["train"]["cpu_bf16"] is True
        assert recipe(2, 546)["train"]["cpu_bf16"] is False  # BreastMNIST: 100 x 546 = 54,600 images
        assert recipe(2, 4708)["train"]["cpu_bf16"] is True  # PneumoniaMNIST: 18 x 4,708 = 84,744 images
        assert "float32" in describe_recipe(2, 546) and "bf16" in describe_recipe(2, 4708)
    else:
        assert recipe(3, 1188)["train"]["cpu_bf16"] is False  # AdrenalMNIST3D: 8 x 1,188 = 9,504 volumes
        assert recipe(3, 7000)["train"]["cpu_bf16"] is True  # the 2-epoch floor: 14,000 volumes


def test_small_input_stem_only_up_to_64_px():
    small = RECIPES[2].model.get("small_input", False)
    assert recipe(2, 1000, (28, 28))["model"]["small_input"] is small
    assert recipe(2, 1000, (64, 64))["model"]["small_input"] is small
    assert recipe(2, 1000, (128, 128))["model"]["small_input"] is False
    assert recipe(2, 1000, (224, 224))["model"]["name"] == RECIPES[2].model["name"]


def test_recipes_are_valid_configs_and_described(tmp_path):
    for dims in (2, 3):
        arrays = {}
        for split, n in (("train", 12), ("val", 4), ("test", 4)):
            arrays[f"{split}_images"] = np.zeros((n, *(8,) * dims), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None].astype(np.uint8)
        np.savez(tmp_path / f"tiny{dims}.npz", **arrays)
        import_medmnist(tmp_path / f"tiny{dims}.npz", tmp_path / f"out{dims}")
        cfg = load_config(tmp_path / f"out{dims}" / "config.yaml")
        expected = recipe(dims, 12, (8,) * dims)
        assert cfg.model.name == expected["model"]["name"] and cfg.model.small_input == expected["model"]["small_input"]
        for key, value in expected["train"].items():
            assert getattr(cfg.train, key) == value, key
        for key, value in expected["transforms"].items():
            assert getattr(cfg.transforms, key) == (tuple(value) if isinstance(value, list) else value), key
        assert cfg.transforms.size == tuple(expected["transforms"]["size"]) and cfg.transforms.intensity == "minmax"
        assert cfg.eval.tta is bool(expected["eval"].get("tta", False))
        assert expected["transforms"]["size"] == [max(8, RECIPES[dims].min_size)] * dims
        line = describe_recipe(dims, 12, (8,) * dims)
        assert expected["model"]["name"] in line and f"{expected['train']['epochs']} epochs of 12" in line
        assert ("flip TTA" in line) is bool(expected["eval"].get("tta"))


@pytest.mark.parametrize("name, dims, n_train", [("medmnist_2d.yaml", 2, 4708), ("medmnist_3d.yaml", 3, 1188)])
def test_data_manifests_presets_equal_the_recipe(name, dims, n_train):
    """The example configs show the recipe import-medmnist writes for PneumoniaMNIST and AdrenalMNIST3D."""
    cfg = load_config(PRESETS / name)
    expected = recipe(dims, n_train, (28,) * dims)
    assert cfg.model.name == expected["model"]["name"] and cfg.model.small_input == expected["model"]["small_input"]
    for key, value in expected["train"].items():
        assert getattr(cfg.train, key) == value, key
    for key, value in expected["transforms"].items():
        assert getattr(cfg.transforms, key) == (tuple(value) if isinstance(value, list) else value), key
    assert cfg.transforms.spatial_dims == dims and cfg.transforms.intensity == "minmax"
    assert cfg.eval.tta is bool(expected["eval"].get("tta", False))
