"""Intensity presets on known values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from pipeline.config import TransformsConfig
from pipeline.errors import ConfigError
from transforms.intensity import (
    CT_WINDOWS,
    PRESETS,
    MultiWindowd,
    foreground_threshold,
    get_preset,
    intensity_transforms,
    modality_of,
)


def _apply(name: str, values, **cfg_fields) -> torch.Tensor:
    cfg = TransformsConfig(intensity=name, **cfg_fields)
    img = torch.as_tensor(np.asarray(values, dtype=np.float32))[None]
    return Compose(intensity_transforms(["image"], cfg))({"image": img})["image"][0]


def test_ct_lung_maps_known_hu_values():
    out = _apply("ct-lung", [-600.0, -1350.0, 150.0, 1000.0, -3000.0, -975.0])
    np.testing.assert_allclose(out.numpy(), [0.5, 0.0, 1.0, 1.0, 0.0, 0.25], atol=1e-6)


@pytest.mark.parametrize("name", sorted(CT_WINDOWS))
def test_every_ct_window_maps_level_to_half_and_clips(name):
    level, width = CT_WINDOWS[name]
    out = _apply(name, [level, level - width / 2, level + width / 2, level + width, level - width])
    np.testing.assert_allclose(out.numpy(), [0.5, 0.0, 1.0, 1.0, 0.0], atol=1e-6)


def test_ct_custom_uses_the_configured_window():
    out = _apply("ct-custom", [40.0, -160.0, 240.0, 500.0], window=(40.0, 400.0))
    np.testing.assert_allclose(out.numpy(), [0.5, 0.0, 1.0, 1.0], atol=1e-6)


def test_ct_custom_without_window_is_a_config_error():
    with pytest.raises(ConfigError, match="transforms.window"):
        _apply("ct-custom", [0.0])


def test_mr_zscore_normalises_foreground_only():
    rng = np.random.default_rng(0)
    img = np.zeros((20, 20), np.float32)
    img[5:15, 5:15] = rng.normal(300.0, 40.0, (10, 10))
    out = _apply("mr-zscore", img).numpy()
    inside = out[5:15, 5:15]
    assert inside.mean() == pytest.approx(0.0, abs=1e-5)
    assert inside.std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[img == 0] == 0.0)


@pytest.mark.parametrize("name, low, high", [("mr-percentile", 0.5, 99.5), ("xray-percentile", 1.0, 99.0)])
def test_percentile_presets_clip_to_unit_range(name, low, high):
    values = np.arange(1001, dtype=np.float32)
    values[-1] = 1e6  # an outlier far above the upper percentile
    out = _apply(name, values).numpy()
    p_low, p_high = np.percentile(values, [low, high])
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[int(round(p_low)) - 1] == 0.0
    mid = 500
    np.testing.assert_allclose(out[mid], (mid - p_low) / (p_high - p_low), rtol=1e-4)


def test_minmax_and_none():
    np.testing.assert_allclose(_apply("minmax", [-5.0, 0.0, 15.0]).numpy(), [0.0, 0.25, 1.0])
    np.testing.assert_allclose(_apply("none", [-5.0, 0.0, 15.0]).numpy(), [-5.0, 0.0, 15.0])


def test_multi_window_stacks_one_channel_per_window():
    cfg = TransformsConfig(windows=("ct-lung", "ct-abdomen", "ct-bone"))
    img = torch.tensor([[-600.0, 40.0, 400.0]])
    out = Compose(intensity_transforms(["image"], cfg))({"image": img})["image"]
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out[:, 0].numpy(), [0.5, 0.0, 0.0], atol=1e-6)  # -600 HU
    np.testing.assert_allclose(out[1].numpy(), [0.0, 0.5, 1.0], atol=1e-6)  # abdomen window
    assert out[2, 2] == pytest.approx(0.5)  # bone window at its level


def test_multi_window_keeps_input_channels_window_by_window():
    out = MultiWindowd(["image"], [(0.0, 100.0), (100.0, 100.0)])({"image": torch.tensor([[0.0], [100.0]])})["image"]
    np.testing.assert_allclose(out[:, 0].numpy(), [0.5, 1.0, 0.0, 0.5])


def test_unknown_preset_lists_known_ones_and_a_close_match():
    with pytest.raises(ConfigError) as info:
        get_preset("ct-lungs")
    message = str(info.value)
    assert "Did you mean 'ct-lung'" in message
    for name in PRESETS:
        assert name in message


def test_windows_must_be_ct_presets_and_exclude_intensity():
    with pytest.raises(ConfigError, match="not a CT window preset"):
        intensity_transforms(["image"], TransformsConfig(windows=("ct-lung", "mr-zscore")))
    with pytest.raises(ConfigError, match="both set"):
        intensity_transforms(["image"], TransformsConfig(intensity="ct-lung", windows=("ct-bone",)))


def test_modality_drives_the_foreground_rule():
    assert modality_of(TransformsConfig(intensity="ct-brain")) == "ct"
    assert modality_of(TransformsConfig(windows=("ct-lung",))) == "ct"
    assert modality_of(TransformsConfig(intensity="mr-zscore")) == "mr"
    assert foreground_threshold(TransformsConfig(intensity="ct-lung")) == -500.0
    assert foreground_threshold(TransformsConfig(intensity="mr-percentile")) == 0.0
