from __future__ import annotations

import pytest
import torch
from weight_tables import randomise_batchnorm, torchvision_resnet

from models import create_model
from models.adapt import adapt_input_channels, describe_channel_adaptation, inflate_kernel
from pipeline.config import Config, save_config, with_changes
from pipeline.errors import WeightsError


def test_channel_adaptation_rules():
    w = torch.randn(4, 3, 3, 3)
    assert torch.allclose(adapt_input_channels(w, 1, "sum"), w.sum(1, keepdim=True))
    assert torch.allclose(adapt_input_channels(w, 1, "mean"), w.mean(1, keepdim=True))
    six = adapt_input_channels(w, 6, "sum")
    assert torch.allclose(six, torch.cat([w, w], 1) / 2)
    two = adapt_input_channels(w, 2, "sum")
    assert torch.allclose(two, w[:, :2] * 1.5)
    mean4 = adapt_input_channels(w, 4, "mean")
    assert mean4.shape == (4, 4, 3, 3) and torch.allclose(mean4[:, 3], w.mean(1))
    assert describe_channel_adaptation(3, 1, "sum") == "stem rgb->1 by sum"
    with pytest.raises(ValueError, match="allowed: sum, mean"):
        adapt_input_channels(w, 1, "max")


def test_inflate_kernel_modes():
    w = torch.randn(5, 2, 3, 3)
    mean = inflate_kernel(w, 3, "mean")
    assert mean.shape == (5, 2, 3, 3, 3) and torch.allclose(mean.sum(2), w)
    centre = inflate_kernel(w, 7, "centre")
    assert torch.equal(centre[:, :, 3], w) and centre[:, :, :3].abs().sum() == 0 and centre[:, :, 4:].abs().sum() == 0
    with pytest.raises(ValueError, match="2D convolution kernel"):
        inflate_kernel(torch.randn(5, 2, 3, 3, 3), 3)


def test_greyscale_stem_equals_rgb_stem_on_repeated_channels(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet(18, seed=3), path)
    rgb = create_model("resnet18", 2, 3, 2, pretrained=f"torchvision:{path}").eval()
    grey = create_model("resnet18", 2, 1, 2, pretrained=f"torchvision:{path}").eval()
    entry = grey.weights_report.backbone["net.conv1.weight"]
    assert entry["status"] == "adapted" and entry["how"] == "stem rgb->1 by sum"
    assert grey.weights_report.counts()["adapted"] == 1
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(grey.net.conv1(x), rgb.net.conv1(x.repeat(1, 3, 1, 1)), atol=1e-5)
        assert torch.allclose(grey.features(x), rgb.features(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)
    mean = create_model("resnet18", 2, 1, 2, pretrained=f"torchvision:{path}", channel_adapt="mean")
    assert torch.allclose(mean.net.conv1.weight * 3, grey.net.conv1.weight, atol=1e-6)
    six = create_model("resnet18", 2, 6, 2, pretrained=f"torchvision:{path}").eval()
    with torch.no_grad():
        six_features = six.features(x.repeat(1, 6, 1, 1))
        assert torch.allclose(six_features, rgb.features(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def _run_from(model, run_dir, name):
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"model": model.state_dict()}, run_dir / "checkpoints" / "best.pt")
    cfg = with_changes(Config(), model={"name": name}, transforms={"spatial_dims": 2, "size": [32, 32]})
    save_config(cfg, run_dir / "config.yaml")
    return f"run:{run_dir}"


def _volume_of(image: torch.Tensor, depth: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, depth, H, W), every slice the same image."""
    return image.unsqueeze(2).expand(-1, -1, depth, -1, -1).contiguous()


@pytest.mark.parametrize("small_input,depth,size", [(False, 16, 64), (True, 8, 12)])
def test_centre_inflation_gives_the_2d_features_at_every_depth(tmp_path, small_input, depth, size):
    torch.manual_seed(0)
    options = {"widen_factor": 0.25, "small_input": small_input}
    model2d = create_model("resnet10", 2, 1, 2, **options)
    randomise_batchnorm(model2d)
    source = _run_from(model2d, tmp_path / "run2d", "resnet10")
    model3d = create_model("resnet10", 3, 1, 2, pretrained=source, inflate="centre", **options)
    report = model3d.weights_report
    assert report.backbone["net.conv1.weight"]["how"] == f"inflated 2D->3D centre, depth {3 if small_input else 7}"
    assert report.counts()["new"] == 0 and report.counts()["adapted"] > 0
    model2d.eval()
    model3d.eval()
    image = torch.randn(2, 1, size, size)
    with torch.no_grad():
        maps2d = model2d.forward_features(image)
        maps3d = model3d.forward_features(_volume_of(image, depth))
    assert maps3d.shape[2] >= 1 and maps3d.shape[3:] == maps2d.shape[2:]
    for d in range(maps3d.shape[2]):
        assert torch.allclose(maps3d[:, :, d], maps2d, atol=1e-4, rtol=1e-4), f"depth position {d}"


def test_mean_inflation_matches_2d_away_from_the_ends(tmp_path):
    torch.manual_seed(1)
    options = {"widen_factor": 0.25, "small_input": True}
    model2d = create_model("resnet10", 2, 1, 2, **options)
    randomise_batchnorm(model2d, seed=1)
    model3d = create_model("resnet10", 3, 1, 2, pretrained=_run_from(model2d, tmp_path / "r", "resnet10"),
                           inflate="mean", **options)
    model2d.eval()
    model3d.eval()
    image = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        maps2d = model2d.forward_features(image)
        maps3d = model3d.forward_features(_volume_of(image, 64))
    # output position d of layer4 (stride 8) sees input slices 8d-24 .. 8d+24: inside the volume for d = 3, 4
    assert maps3d.shape[2] == 8
    for d in (3, 4):
        assert torch.allclose(maps3d[:, :, d], maps2d, atol=1e-4, rtol=1e-4), f"depth position {d}"
    assert not torch.allclose(maps3d[:, :, 0], maps2d, atol=1e-3)  # the zero padding at the ends shows


def test_imagenet_weights_start_a_3d_greyscale_model(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet(18), path)
    model = create_model("resnet18", 3, 1, 2, pretrained=f"torchvision:{path}")
    report = model.weights_report
    assert report.backbone["net.conv1.weight"]["how"] == "stem rgb->1 by sum; inflated 2D->3D mean, depth 7"
    assert report.backbone["net.layer1.0.conv1.weight"]["how"] == "inflated 2D->3D mean, depth 3"
    assert report.backbone["net.layer2.0.downsample.0.weight"]["how"] == "inflated 2D->3D mean, depth 1"
    assert report.backbone["net.layer1.0.bn1.weight"]["status"] == "loaded"
    counts = report.counts()
    assert counts["adapted"] == 20 and counts["loaded"] == 40 and counts["new"] == 0  # 20 convs, 40 BN params


def test_3d_weights_cannot_start_a_2d_model(tmp_path):
    model3d = create_model("resnet10", 3, 1, 2, widen_factor=0.25)
    run = tmp_path / "run3d"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": model3d.state_dict()}, run / "checkpoints" / "best.pt")
    save_config(with_changes(Config(), model={"name": "resnet10"}), run / "config.yaml")
    with pytest.raises(WeightsError, match="3D weights cannot start a 2D model"):
        create_model("resnet10", 2, 1, 2, pretrained=f"run:{run}", widen_factor=0.25)


def test_small_input_stem_cannot_take_a_7x7_stem_unless_not_strict(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet(18), path)
    with pytest.raises(WeightsError, match="small_input builds a 3x3 stem"):
        create_model("resnet18", 2, 1, 2, pretrained=f"torchvision:{path}", small_input=True)
    model = create_model("resnet18", 2, 1, 2, pretrained=f"torchvision:{path}", small_input=True, strict=False)
    assert model.weights_report.backbone["net.conv1.weight"]["status"] == "new"
    assert model.weights_report.counts()["new"] == 1
