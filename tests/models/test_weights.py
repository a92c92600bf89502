from __future__ import annotations

import hashlib
import json
import urllib.error

import pytest
import torch
from weight_tables import medicalnet_resnet, torchvision_densenet121, torchvision_resnet

import models.sources as sources
from models import create_model, load_pretrained
from models.sources import parse_source, read_weights
from pipeline.config import Config, save_config
from pipeline.errors import WeightsError


def _save(obj, path):
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """A torchvision resnet18 file, written once for the module."""
    return _save(torchvision_resnet(18), tmp_path_factory.mktemp("tv") / "resnet18.pth")


def _assert_all_loaded(model, report):
    counts = report.counts()
    assert counts["total"] == len(list(model.net.parameters())) > 0
    assert counts["loaded"] == counts["total"]
    assert counts["adapted"] == counts["new"] == 0
    assert report.loaded_fraction == 1.0
    assert not report.unexpected
    assert all(e["status"] == "new" for e in report.head.values()) and report.head


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_loads_every_backbone_parameter(tmp_path, depth):
    state = torchvision_resnet(depth)
    path = _save(state, tmp_path / f"resnet{depth}.pth")
    model = create_model(f"resnet{depth}", 2, 3, 4, pretrained=f"torchvision:{path}")
    report = model.weights_report
    _assert_all_loaded(model, report)
    assert set(report.dropped) == {"fc.weight", "fc.bias"}
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.kind == "torchvision" and report.path == str(path)
    ours = model.state_dict()
    for key in ("conv1.weight", "layer1.0.bn1.running_var", "layer4.1.conv2.weight", "layer2.0.downsample.0.weight"):
        assert torch.equal(ours[f"net.{key}"], state[key])
    assert model.classifier.fc.out_features == 4
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"]["loaded"] == data["counts"]["total"]
    assert data["backbone"]["net.conv1.weight"]["status"] == "loaded"


@pytest.mark.parametrize("old_style", [False, True])
def test_torchvision_densenet121_loads_every_backbone_parameter(tmp_path, old_style):
    state = torchvision_densenet121(old_style=old_style)
    path = _save(state, tmp_path / "densenet121.pth")
    model = create_model("densenet121", 2, 3, 2, pretrained=f"torchvision:{path}")
    _assert_all_loaded(model, model.weights_report)
    name = "norm.1" if old_style else "norm1"
    assert torch.equal(
        model.state_dict()["net.features.denseblock3.denselayer7.layers.norm1.running_mean"],
        state[f"features.denseblock3.denselayer7.{name}.running_mean"],
    )
    assert set(model.weights_report.dropped) == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("depth,shortcut", [(18, "A"), (10, "B"), (50, "B")])
def test_medicalnet_loads_every_backbone_parameter_with_its_shortcut(tmp_path, depth, shortcut):
    ckpt = medicalnet_resnet(depth, counters=depth != 10, dtype=torch.float16 if depth == 50 else torch.float32)
    path = _save(ckpt, tmp_path / f"resnet_{depth}.pth")
    model = create_model(f"resnet{depth}", 3, 1, 2, pretrained=f"medicalnet:{path}")
    assert model.options["shortcut_type"] == shortcut
    _assert_all_loaded(model, model.weights_report)
    assert all(k.startswith("module.conv_seg.") for k in model.weights_report.dropped)
    assert torch.equal(model.net.layer3[0].conv1.weight, ckpt["state_dict"]["module.layer3.0.conv1.weight"].float())
    out = model.eval()(torch.randn(1, 1, 16, 16, 16))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_medicalnet_shortcut_a_file_refused_by_a_shortcut_b_model(tmp_path):
    path = _save(medicalnet_resnet(18), tmp_path / "resnet_18.pth")
    with pytest.raises(WeightsError) as e:
        create_model("resnet18", 3, 1, 2, pretrained=f"medicalnet:{path}", shortcut_type="B")
    message = str(e.value)
    assert "net.layer2.0.downsample.0.weight: missing from the file" in message
    assert "15 problem(s)" in message  # 3 downsamples x (conv weight + BatchNorm weight, bias, mean, var)


def test_wrong_file_fails_naming_the_keys(r18):
    path = r18
    with pytest.raises(WeightsError) as e:
        create_model("resnet34", 2, 3, 2, pretrained=f"torchvision:{path}")
    message = str(e.value)
    assert "do not fit resnet34" in message and str(path) in message
    assert "net.layer1.2.conv1.weight: missing from the file" in message
    assert "... and" in message and "more" in message  # first 20 shown, then the count
    assert "model.strict: false" in message


def test_wrong_file_non_strict_reports_new_keys(r18):
    path = r18
    model = create_model("resnet34", 2, 3, 2, pretrained=f"torchvision:{path}", strict=False)
    report = model.weights_report
    counts = report.counts()
    assert counts["new"] > 0 and counts["loaded"] > 0
    assert report.backbone["net.layer1.2.conv1.weight"]["status"] == "new"
    assert report.backbone["net.layer1.0.conv1.weight"]["status"] == "loaded"


def test_unexpected_keys_are_an_error_when_strict_and_reported_otherwise(tmp_path):
    state = torchvision_resnet(18)
    state["layer2.0.downsample.0.bias"] = torch.zeros(128)
    path = _save(state, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="layer2.0.downsample.0.bias: in the file but fits no key"):
        create_model("resnet18", 2, 3, 2, pretrained=f"torchvision:{path}")
    model = create_model("resnet18", 2, 3, 2, pretrained=f"torchvision:{path}", strict=False)
    assert model.weights_report.unexpected == ["layer2.0.downsample.0.bias"]


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    path = _save({"conv1.weight": torch.zeros(1), "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        create_model("resnet18", 2, 3, 2, pretrained=f"file:{path}")
    assert not marker.exists()


def test_offline_download_failure_says_which_file_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RADPIPE_OFFLINE", raising=False)

    def offline(url, dest, hash_prefix=""):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sources, "_download", offline)
    with pytest.raises(WeightsError) as e:
        create_model("resnet18", 2, 1, 2, pretrained="torchvision")
    message = str(e.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(tmp_path / "cache" / "torchvision" / "resnet18-f37072fd.pth") in message
    with pytest.raises(WeightsError) as e:
        create_model("resnet18", 3, 1, 2, pretrained="medicalnet:resnet_18")
    message = str(e.value)
    assert "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet18/resolve/main/resnet_18.pth" in message
    assert str(tmp_path / "cache" / "medicalnet" / "resnet_18.pth") in message


def test_cached_file_is_used_without_download(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RADPIPE_WEIGHTS_DIR", str(cache))
    (cache / "medicalnet").mkdir(parents=True)
    torch.save(medicalnet_resnet(10), cache / "medicalnet" / "resnet_10.pth")

    def no_download(url, dest, hash_prefix=""):
        raise AssertionError("downloaded although the file is cached")

    monkeypatch.setattr(sources, "_download", no_download)
    model = create_model("resnet10", 3, 1, 2, pretrained="medicalnet")
    assert model.weights_report.loaded_fraction == 1.0
    assert model.weights_report.path == str(cache / "medicalnet" / "resnet_10.pth")


def test_download_with_wrong_hash_is_discarded(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RADPIPE_OFFLINE", raising=False)

    def fake(url, dest, hash_prefix=""):
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision_resnet(18), dest)

    monkeypatch.setattr(sources, "_download", fake)
    with pytest.raises(WeightsError, match="expected it to start with f37072fd"):
        create_model("resnet18", 2, 3, 2, pretrained="torchvision:resnet18")
    assert not (tmp_path / "cache" / "torchvision" / "resnet18-f37072fd.pth").exists()


def _serve(tmp_path, monkeypatch, obj, file, template="TORCHVISION_URL"):
    """Serve ``obj`` (saved with torch.save) as ``file`` at a file:// URL in place of the download address."""
    source = tmp_path / "served" / file
    source.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, source)
    monkeypatch.setattr(sources, template, source.parent.as_uri() + "/{file}")
    monkeypatch.setenv("RADPIPE_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RADPIPE_OFFLINE", raising=False)
    return source


def test_a_download_with_the_wrong_hash_never_reaches_the_cache(tmp_path, monkeypatch):
    _serve(tmp_path, monkeypatch, torchvision_resnet(18), "resnet18-f37072fd.pth")  # real torch.hub download
    with pytest.raises(WeightsError, match="wrong sha256.*expected it to start with f37072fd"):
        create_model("resnet18", 2, 3, 2, pretrained="torchvision:resnet18")
    folder = tmp_path / "cache" / "torchvision"
    assert not folder.exists() or list(folder.iterdir()) == []  # neither the file nor a temporary


def test_a_cached_file_is_checked_again_on_every_use(tmp_path, monkeypatch):
    source = _serve(tmp_path, monkeypatch, medicalnet_resnet(10), "resnet_10.pth", template="MEDICALNET_URL")
    model = create_model("resnet10", 3, 1, 2, pretrained="medicalnet")
    cached = tmp_path / "cache" / "medicalnet" / "resnet_10.pth"
    record = json.loads((cached.parent / "resnet_10.pth.sha256.json").read_text())
    assert model.weights_report.loaded_fraction == 1.0 and record["sha256"] == sources.file_sha256(source)
    assert create_model("resnet10", 3, 1, 2, pretrained="medicalnet").weights_report.loaded_fraction == 1.0
    state = torch.load(cached, weights_only=True)
    state["state_dict"]["module.conv1.weight"].fill_(0.5)  # altered in place: same size, other content
    torch.save(state, cached)
    with pytest.raises(WeightsError, match="corrupt or altered and was deleted"):
        create_model("resnet10", 3, 1, 2, pretrained="medicalnet")
    assert not cached.exists()
    wrong = cached.parent.parent / "torchvision" / "resnet18-f37072fd.pth"
    wrong.parent.mkdir(exist_ok=True)
    torch.save(torchvision_resnet(18), wrong)  # placed by hand under the name of the real file: hash checked
    with pytest.raises(WeightsError, match="expected sha256 f37072fd"):
        create_model("resnet18", 2, 3, 2, pretrained="torchvision")


def _write_run(run_dir, model, name, spatial_dims):
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epoch": 3, "best_metric": 0.8}, run_dir / "checkpoints" / "best.pt")
    cfg = Config()
    from pipeline.config import with_changes

    transforms = {"spatial_dims": spatial_dims, "size": [32] * spatial_dims}
    cfg = with_changes(cfg, model={"name": name}, transforms=transforms)
    save_config(cfg, run_dir / "config.yaml")


def test_run_source_transfers_the_backbone_and_makes_a_new_head(tmp_path):
    source = create_model("resnet18", 2, 1, 2, widen_factor=0.25)
    _write_run(tmp_path / "run", source, "resnet18", 2)
    target = create_model("resnet18", 2, 1, 2, pretrained=f"run:{tmp_path / 'run'}", widen_factor=0.25)
    _assert_all_loaded(target, target.weights_report)
    assert torch.equal(target.net.layer4[1].conv2.weight, source.net.layer4[1].conv2.weight)
    assert not torch.equal(target.classifier.fc.weight, source.classifier.fc.weight)
    assert set(target.weights_report.dropped) == {"classifier.fc.weight", "classifier.fc.bias"}
    assert target.weights_report.meta == {"model_name": "resnet18", "spatial_dims": 2}
    with pytest.raises(WeightsError, match="trained 'resnet18' but the model is 'resnet34'"):
        create_model("resnet34", 2, 1, 2, pretrained=f"run:{tmp_path / 'run'}")
    with pytest.raises(WeightsError, match="no checkpoints/best.pt"):
        (tmp_path / "empty").mkdir()
        create_model("resnet18", 2, 1, 2, pretrained=f"run:{tmp_path / 'empty'}")


def test_bundle_source_maps_by_name_and_checks_the_network(tmp_path):
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=5)
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    (bundle / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 5}}))
    model = create_model("densenet121", 2, 1, 3, pretrained=f"bundle:{bundle}")
    _assert_all_loaded(model, model.weights_report)
    assert model.weights_report.meta["network"] == "DenseNet121"
    assert set(model.weights_report.dropped) == {"class_layers.out.weight", "class_layers.out.bias"}
    with pytest.raises(WeightsError, match="holds a DenseNet121 network but the model is resnet18"):
        create_model("resnet18", 2, 1, 3, pretrained=f"bundle:{bundle}")


def test_file_source_accepts_ddp_prefixes_and_plain_paths(tmp_path):
    source = create_model("efficientnet-b0", 2, 1, 2)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = _save({"state_dict": state}, tmp_path / "ddp.ckpt")
    model = create_model("efficientnet-b0", 2, 1, 2, pretrained=str(path))
    _assert_all_loaded(model, model.weights_report)
    assert model.weights_report.kind == "file"
    assert torch.equal(model.net._conv_head.weight, source.net._conv_head.weight)


def test_load_pretrained_on_an_existing_model(tmp_path, r18):
    path = r18
    model = create_model("resnet18", 2, 3, 2)
    assert model.weights_report.kind == "none" and model.weights_report.counts()["new"] == 60
    report = load_pretrained(model, f"torchvision:{path}")
    assert model.weights_report is report and report.counts()["loaded"] == 60
    assert json.loads(json.dumps(report.to_dict()))["sha256"] == report.sha256


def test_sources_that_do_not_apply_are_refused(tmp_path, r18):
    path = r18
    with pytest.raises(WeightsError, match="torchvision weights cannot start efficientnet-b0"):
        create_model("efficientnet-b0", 2, 3, 2, pretrained=f"torchvision:{path}")
    with pytest.raises(WeightsError, match="not understood"):
        parse_source("imagenet:resnet18")
    assert parse_source("/x/weights.pth") == ("file", "/x/weights.pth")
    assert parse_source("torchvision") == ("torchvision", "")
    with pytest.raises(WeightsError, match="not found"):
        read_weights(f"file:{tmp_path / 'missing.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        read_weights(f"file:{tmp_path / 'junk.pt'}")
