"""The ImageNet transfer presets of data_manifests/: each loads, builds its ResNet-50 from (fake, offline)
torchvision weights with a new head, trains what its strategy says, and its chain gives ImageNet-normalised input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import sources
from models.factory import create_from_config
from models.transfer import TransferSchedule, build_param_groups
from pipeline.config import load_config
from tests.weight_tables import torchvision_resnet
from transforms.chains import eval_chain
from transforms.intensity import IMAGENET_MEAN, IMAGENET_STD

PRESETS = Path(__file__).resolve().parents[2] / "data_manifests"
NAMES = ("imagenet_transfer_2d", "imagenet_linear_probe_2d", "imagenet_finetune_2d")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("weights")
    (cache / "torchvision").mkdir()
    dest = cache / "torchvision" / sources.TORCHVISION_FILES["resnet50"]
    torch.save(torchvision_resnet(50), dest)
    record = {"size": dest.stat().st_size, "sha256": sources.file_sha256(dest)}  # as a download records it
    dest.with_name(dest.name + ".sha256.json").write_text(json.dumps(record))
    return cache


@pytest.mark.parametrize("name", NAMES)
def test_preset_builds_imagenet_resnet50_with_a_new_head(name, weights_dir, monkeypatch):
    monkeypatch.setenv("RADPIPE_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setattr(sources, "_download", lambda *a, **k: pytest.fail("tests never download"))
    cfg = load_config(PRESETS / f"{name}.yaml")
    t = cfg.transforms
    assert (t.spatial_dims, t.size, t.intensity, t.channels) == (2, (224, 224), "imagenet", "rgb")
    model = create_from_config(cfg.model, 2, 3, 2, t.size)
    report = model.weights_report
    assert report is not None and report.loaded_fraction > 0.99  # every backbone tensor; fc left out
    assert model.net.conv1.weight.shape == (64, 3, 7, 7)
    expected = torchvision_resnet(50)["conv1.weight"]
    torch.testing.assert_close(model.net.conv1.weight.detach(), expected)
    groups = build_param_groups(model, cfg.transfer, cfg.train.lr, cfg.train.weight_decay)
    TransferSchedule(model, cfg.transfer)
    trained = sum(p.numel() for g in groups for p in g["params"])
    head = sum(p.numel() for p in model.classifier.parameters())
    if cfg.transfer.strategy == "linear-probe":
        assert trained == head == 2048 * 2 + 2
        assert not any(p.requires_grad for p in model.net.parameters())
    else:
        assert trained > 20_000_000
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 2)
    if name == "imagenet_transfer_2d":
        assert (cfg.train.optimizer, cfg.train.lr, cfg.train.scheduler) == ("adam", 0.001, "none")


def test_imagenet_intensity_matches_torchvision_normalize(tmp_path):
    cfg = load_config(PRESETS / "imagenet_transfer_2d.yaml")
    rgb = np.zeros((224, 224, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.full((224, 224), 51, np.uint8)).save(tmp_path / "g.png")
    chain = eval_chain(cfg.transforms)
    colour = chain({"image": str(tmp_path / "c.png"), "label": 0})["image"]
    for c, value in enumerate((255, 128, 0)):
        assert float(colour[c].mean()) == pytest.approx((value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-4)
    grey = chain({"image": str(tmp_path / "g.png"), "label": 0})["image"]
    assert tuple(grey.shape) == (3, 224, 224)  # channels: rgb repeats a grey picture
    assert float(grey[2].mean()) == pytest.approx((0.2 - IMAGENET_MEAN[2]) / IMAGENET_STD[2], abs=1e-4)


def test_imagenet_transfer_flips_as_random_horizontal_flip(tmp_path):
    """The preset's augmentation gives the picture or its left-right mirror (as PIL draws it), nothing else."""
    from transforms.chains import train_chain

    cfg = load_config(PRESETS / "imagenet_transfer_2d.yaml")
    picture = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    Image.fromarray(picture).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "m.png")
    plain = eval_chain(cfg.transforms)
    as_is, mirrored = (plain({"image": str(tmp_path / n), "label": 0})["image"] for n in ("p.png", "m.png"))
    chain = train_chain(cfg.transforms)
    chain.set_random_state(seed=1)
    seen = []
    for _ in range(12):
        out = chain({"image": str(tmp_path / "p.png"), "label": 0})["image"]
        seen.append("as-is" if torch.equal(out, as_is) else "mirror" if torch.equal(out, mirrored) else "other")
    assert set(seen) == {"as-is", "mirror"}
