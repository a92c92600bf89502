from __future__ import annotations

import pytest
import torch

from models import create_from_config, create_model, list_models
from models.backbone import Backbone
from pipeline.config import Config, with_changes
from pipeline.errors import ConfigError, UnknownModelError

# the heavier variants run with the slow tests (CI runs both)
SLOW = {("densenet121", 3), ("efficientnet-b4", 3), ("vit-b16", 2), ("vit-b16", 3)}
SLOW |= {(f"efficientnet-b{i}", d) for i in (1, 2, 3) for d in (2, 3)}
CASES = [
    pytest.param(info.name, d, id=f"{info.name}-{d}d", marks=[pytest.mark.slow] if (info.name, d) in SLOW else [])
    for info in list_models()
    for d in info.dims
]


def _input(name: str, dims: int, channels: int = 1) -> torch.Tensor:
    # DenseNet halves 5 times; EfficientNet's static "same" padding needs >= 32 voxels
    size = 32 if dims == 2 or name.startswith(("densenet", "efficientnet")) else 16
    return torch.randn(1, channels, *([size] * dims))


def _options(name: str, dims: int) -> dict:
    return {"img_size": 32 if dims == 2 else 16} if name.startswith("vit") else {}


@pytest.mark.parametrize("name,dims", CASES)
def test_every_registry_name_builds_and_runs(name, dims):
    torch.manual_seed(0)
    model = create_model(name, dims, 1, 3, **_options(name, dims))
    assert isinstance(model, Backbone)
    assert (model.name, model.spatial_dims, model.in_channels, model.num_classes) == (name, dims, 1, 3)
    x = _input(name, dims)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()
    assert features.shape == (1, model.feature_dim)
    assert torch.allclose(model.classifier(features), logits, atol=1e-5)
    assert model.get_submodule(model.cam_layer) is not None
    assert isinstance(model.get_submodule(model.stem_conv), torch.nn.modules.conv._ConvNd)
    groups = model.param_groups()
    assert [g for g, _ in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    ids = [id(p) for _, params in groups for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(params for _, params in groups)
    assert {id(p) for p in groups[-1][1]} == {id(p) for p in model.classifier.parameters()}
    assert model.weights_report.kind == "none" and model.weights_report.counts()["new"] > 0


def test_small_input_stem_keeps_resolution():
    # standard stems divide by 32; small-input stems (3x3 conv, stride 1, no max-pool) by 8 (EfficientNet 16)
    for name, size, expected in (("resnet18", 16, 2), ("densenet121", 16, 2), ("seresnet50", 16, 2),
                                 ("efficientnet-b0", 32, 2)):
        small = create_model(name, 2, 1, 2, small_input=True).eval()
        with torch.no_grad():
            maps = small.forward_features(torch.randn(1, 1, size, size))
        assert maps.shape[-2:] == (expected, expected), name
    resnet = create_model("resnet18", 2, 1, 2, small_input=True)
    assert resnet.net.conv1.kernel_size == (3, 3) and resnet.net.conv1.stride == (1, 1) and resnet.net.no_max_pool
    vit = create_model("vit-s16", 2, 1, 2, small_input=True, img_size=28)
    assert vit.options["patch_size"] == 4 and vit.net.patch_embedding.position_embeddings.shape[1] == 49


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError) as e:
        create_model("resnet81", 2, 1, 2)
    assert isinstance(e.value, KeyError)
    assert "Did you mean 'resnet18'" in str(e.value)
    with pytest.raises(UnknownModelError, match="efficientnet-b0"):
        create_model("efficientnet_b0", 2, 1, 2)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="'small_inputs' is not accepted by resnet18 \\(did you mean 'small_input'"):
        create_model("resnet18", 2, 1, 2, small_inputs=True)
    with pytest.raises(ConfigError, match="spatial_dims 4 is not supported"):
        create_model("resnet18", 4, 1, 2)
    with pytest.raises(ConfigError, match="shortcut_type must be 'A' or 'B'"):
        create_model("resnet18", 2, 1, 2, shortcut_type="C")
    with pytest.raises(ConfigError, match="num_classes must be"):
        create_model("densenet121", 2, 1, 0)


def test_reset_classifier_and_dropout():
    model = create_model("resnet10", 2, 1, 2, dropout=0.3)
    assert isinstance(model.classifier.dropout, torch.nn.Dropout) and model.classifier.dropout.p == 0.3
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.classifier.fc.out_features == 7 and model.classifier.dropout.p == 0.3
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 7)


def test_list_models_rows():
    rows = {row.name: row for row in list_models()}
    assert {"resnet10", "resnet18", "resnet34", "resnet50", "densenet121", "seresnet50", "vit-b16"} <= set(rows)
    assert {f"efficientnet-b{i}" for i in range(5)} <= set(rows)
    assert rows["resnet18"].dims == (2, 3) and "medicalnet" in rows["resnet18"].sources
    assert "torchvision" not in rows["resnet10"].sources and "torchvision" in rows["densenet121"].sources
    name, dims, sources, notes = rows["resnet50"]
    assert name == "resnet50" and notes


def test_create_from_config_reads_the_model_section():
    cfg = with_changes(
        Config(),
        model={"name": "vit-s16", "small_input": True, "dropout": 0.2},
        transforms={"spatial_dims": 2, "size": [32, 32]},
    )
    model = create_from_config(cfg.model, cfg.transforms.spatial_dims, in_channels=2, num_classes=4,
                               image_size=cfg.transforms.size)
    assert (model.name, model.spatial_dims, model.in_channels, model.num_classes) == ("vit-s16", 2, 2, 4)
    assert model.options["img_size"] == [32, 32] and model.classifier.dropout.p == 0.2
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 2, 32, 32)).shape == (1, 4)
