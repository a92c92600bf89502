"""Mixed precision: bf16 autocast on a CPU (``train.cpu_bf16``), in training, precise BN and inference."""
from __future__ import annotations

import pytest
import torch

import pipeline.train.precision as precision
from pipeline.config import with_changes
from pipeline.infer.batching import Predictor
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.launch import train
from pipeline.train.precision import CpuAutocast, amp_dtype, amp_settings, uses_channels_last
from train_helpers import metric_rows, narrow_resnets, small_config, write_blob_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that computes bf16 natively (bf16 is emulated where it does not: slower, same results)."""
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)


def test_cpu_bf16_needs_the_flag_amp_and_a_native_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)
    assert amp_dtype(CPU) is None and amp_dtype(CPU, cpu_bf16=True) == torch.bfloat16
    on = with_changes(small_config(2), train={"cpu_bf16": True})
    assert amp_settings(on, CPU) == (True, {"dtype": torch.bfloat16})
    assert amp_settings(with_changes(on, train={"amp": False}), CPU) == (False, {})
    assert amp_settings(small_config(2), CPU) == (False, {})
    assert uses_channels_last(on, CPU) and not uses_channels_last(small_config(2), CPU)
    assert not uses_channels_last(with_changes(small_config(3), train={"cpu_bf16": True}), CPU)
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: False)  # emulated bf16 is slower: stay in fp32
    assert amp_dtype(CPU, cpu_bf16=True) is None and amp_settings(on, CPU) == (False, {})


def test_cpu_autocast_runs_convolutions_in_bf16_and_returns_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    x = torch.rand(4, 1, 12, 12)
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = CpuAutocast(net)(x)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    torch.testing.assert_close(out, net(x), atol=0.05, rtol=0.05)
    out.sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.dtype == torch.float32


def test_a_bf16_run_with_augmentation_and_precise_bn_learns_and_saves_a_plain_fp32_model(
        tmp_path, monkeypatch, bf16_cpu):
    narrow_resnets(monkeypatch)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_test=0)
    cfg = with_changes(small_config(2, epochs=4, lr=3e-3, cpu_bf16=True, precise_bn=2),
                       transforms={"augment": "medium"})
    result = train(cfg, tmp_path / "run", manifest=manifest)
    assert result.best_metric is not None and result.best_metric > 0.8
    assert len(metric_rows(tmp_path / "run" / "metrics.csv")) == 4
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert not any(k.startswith("module.") for k in best["model"])
    assert {v.dtype for v in best["model"].values() if v.is_floating_point()} == {torch.float32}


def test_predictor_follows_the_run_s_cpu_bf16(bf16_cpu):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    images = torch.rand(6, 1, 10, 10)
    plain = Predictor(net, "binary", CPU)(images)
    fast_predictor = Predictor(net, "binary", CPU, cpu_bf16=True)
    fast = fast_predictor(images)
    assert fast_predictor.amp_dtype == torch.bfloat16 and fast.dtype == plain.dtype
    assert abs(fast - plain).max() < 0.02 and abs(fast.sum(axis=1) - 1).max() < 1e-6
    assert Predictor(net, "binary", CPU, amp=False, cpu_bf16=True).amp_dtype is None


def test_the_head_runs_in_float32_under_autocast_so_close_cases_do_not_tie():
    from models.factory import create_model

    torch.manual_seed(0)
    model = create_model("resnet10", spatial_dims=2, in_channels=1, num_classes=2, widen_factor=0.25).eval()
    images = torch.rand(64, 1, 32, 32) * 0.01 + 0.5  # nearly identical images: logits within a narrow range
    with torch.no_grad():
        logits = CpuAutocast(model)(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = model.classifier(model.features(images))  # what a bf16 head gives
    assert logits.dtype == torch.float32
    assert len(torch.unique(logits[:, 1])) == 64
    assert len(torch.unique(rounded[:, 1].float())) < 64
