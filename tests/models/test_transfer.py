from __future__ import annotations

import pytest
import torch

from models import TransferSchedule, build_param_groups, create_model
from pipeline.config import TransferConfig


def _model():
    torch.manual_seed(0)
    return create_model("resnet10", 2, 1, 3, widen_factor=0.25, small_input=True)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _step(model, optimizer, steps=2):
    x = torch.randn(4, 1, 16, 16)
    y = torch.tensor([0, 1, 2, 1])
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _stage_keys(model, stage):
    modules = dict(model.stages())[stage]
    ids = {id(t) for m in modules for t in list(m.parameters()) + list(m.buffers())}
    state = model.state_dict(keep_vars=True)
    return [k for k, v in state.items() if id(v) in ids]


def test_layer_wise_learning_rates_follow_the_config():
    model = _model()
    cfg = TransferConfig(strategy="finetune", head_lr=0.01, layer_decay=0.5)
    groups = build_param_groups(model, cfg, base_lr=1e-3, weight_decay=0.05)
    assert [g["name"] for g in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == pytest.approx(0.01)
    assert lrs["stage4"] == pytest.approx(1e-3 * 0.5)
    assert lrs["stage3"] == pytest.approx(1e-3 * 0.25)
    assert lrs["stem"] == pytest.approx(1e-3 * 0.5**5)
    assert all(g["weight_decay"] == 0.05 for g in groups)
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]
    assert [g["name"] for g in optimizer.param_groups] == [g["name"] for g in groups]
    flat = build_param_groups(model, TransferConfig(), base_lr=2e-4, weight_decay=0.0)
    assert {g["lr"] for g in flat} == {2e-4}


def test_linear_probe_moves_only_the_head_and_keeps_batchnorm_statistics():
    model = _model()
    cfg = TransferConfig(strategy="linear-probe")
    schedule = TransferSchedule(model, cfg)
    groups = build_param_groups(model, cfg, base_lr=0.1, weight_decay=0.5)
    assert [g["name"] for g in groups] == ["head"]
    assert all(not p.requires_grad for p in model.net.parameters())
    before = _snapshot(model)
    _step(model, torch.optim.AdamW(groups))
    assert schedule.on_epoch_start(1) == ["head"]
    model.train()  # as MONAI's SupervisedTrainer does every iteration
    assert not model.net.bn1.training and not model.net.layer4[0].bn2.training
    assert model.classifier.training
    _step(model, torch.optim.AdamW(groups))
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("classifier."):
            assert not torch.equal(after[key], value), key
        else:
            assert torch.equal(after[key], value), f"{key} moved"  # weights and BN running statistics


@pytest.mark.parametrize("optimizer_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_gradual_unfreezes_from_the_top_and_frozen_stages_do_not_move(optimizer_cls):
    model = _model()
    cfg = TransferConfig(strategy="gradual", unfreeze_every=2, layer_decay=0.7)
    schedule = TransferSchedule(model, cfg)
    assert schedule.trainable_stages(0) == schedule.trainable_stages(1) == ["head"]
    assert schedule.trainable_stages(2) == ["stage4", "head"]
    assert schedule.trainable_stages(5) == ["stage3", "stage4", "head"]
    assert schedule.trainable_stages(99) == model.stage_names()
    groups = build_param_groups(model, cfg, base_lr=0.05, weight_decay=0.1)
    assert len(groups) == 6
    kwargs = {"momentum": 0.9} if optimizer_cls is torch.optim.SGD else {}
    optimizer = optimizer_cls(groups, **kwargs)
    assert schedule.on_epoch_start(2) == ["stage4", "head"]
    before = _snapshot(model)
    _step(model, optimizer)
    after = model.state_dict()
    assert model.frozen_stages == {"stem", "stage1", "stage2", "stage3"}
    for stage in ("stem", "stage1", "stage2", "stage3"):
        for key in _stage_keys(model, stage):
            assert torch.equal(after[key], before[key]), f"{key} of frozen {stage} moved"
    for stage in ("stage4", "head"):
        moved = [k for k in _stage_keys(model, stage) if not torch.equal(after[k], before[k])]
        assert moved, f"{stage} did not train"
    assert model.net.layer4[0].bn1.training and not model.net.layer3[0].bn1.training
    assert all(p.grad is None for p in model.net.layer1.parameters())


def test_finetune_trains_everything():
    model = _model()
    schedule = TransferSchedule(model, TransferConfig(strategy="finetune"))
    assert schedule.trainable_stages(0) == model.stage_names() and not model.frozen_stages
    before = _snapshot(model)
    _step(model, torch.optim.SGD(build_param_groups(model, TransferConfig(), 0.05, 0.0)))
    after = model.state_dict()
    assert not torch.equal(after["net.conv1.weight"], before["net.conv1.weight"])
    assert not torch.equal(after["net.bn1.running_mean"], before["net.bn1.running_mean"])


def test_set_frozen_rejects_unknown_stages():
    model = _model()
    with pytest.raises(ValueError, match="unknown stage"):
        model.set_frozen(["stage9"])
    model.set_frozen(["stem"])
    model.set_frozen([])
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert model.net.bn1.training
