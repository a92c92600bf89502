"""``model.members``: a deep ensemble in one model, its training semantics, and a run that trains one."""
from __future__ import annotations

import copy

import pytest
import torch

from models.ensemble import MemberEnsemble
from models.factory import create_model
from models.sources import read_weights
from models.transfer import build_param_groups
from pipeline.config import ConfigError, config_from_dict, with_changes
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.launch import train
from pipeline.train.objectives import TaskLoss
from pipeline.train.run_dir import build_model, load_run
from train_helpers import narrow_resnets, small_config, write_blob_manifest


def _ensemble(members: int = 3, **options) -> MemberEnsemble:
    torch.manual_seed(0)
    return create_model("resnet10", 2, 1, 2, small_input=True, widen_factor=0.125, members=members, **options)


def test_prediction_is_the_mean_of_the_members_logits_and_training_returns_each():
    model = _ensemble().eval()
    x = torch.randn(5, 1, 16, 16)
    each = torch.stack([m(x) for m in model.members], dim=1)
    assert torch.allclose(model(x), each.mean(dim=1), atol=1e-6)
    assert not torch.allclose(each[:, 0], each[:, 1])  # members start from different random weights
    assert model.train()(x).shape == (5, 3, 2) and len(model.members) == 3


def test_each_member_trains_exactly_as_it_would_alone():
    """SGD on the ensemble's loss moves member k as SGD on member k's own loss moves a copy of it."""
    model = _ensemble(2)
    alone = copy.deepcopy(model.members[1])
    loss_fn = TaskLoss("binary")
    together = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    single = torch.optim.SGD(alone.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(6, 1, 16, 16, generator=gen), torch.randint(0, 2, (6,), generator=gen)
        model.train()
        alone.train()
        pred = model(x)
        loss = loss_fn(pred, y)
        own = [float(loss_fn(pred[:, k].detach(), y)) for k in range(2)]
        assert float(loss.detach()) == pytest.approx(sum(own) / 2, rel=1e-6)  # logged value: the members' mean
        together.zero_grad()
        loss.backward()
        together.step()
        single.zero_grad()
        loss_fn(alone(x), y).backward()
        single.step()
    for (name, a), b in zip(model.members[1].state_dict().items(), alone.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_stages_hold_every_member_and_freezing_reaches_all_of_them():
    model = _ensemble(2)
    groups = model.param_groups()
    assert [name for name, _ in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert sum(len(p) for _, p in groups) == len(list(model.parameters()))
    heads = dict(groups)["head"]
    assert {id(p) for p in heads} == {id(p) for m in model.members for p in m.classifier.parameters()}
    model.set_frozen(["stem", "stage1", "stage2", "stage3", "stage4"])
    model.train()
    for member in model.members:
        assert not member.net.conv1.weight.requires_grad and not member.net.bn1.training
        assert member.classifier.fc.weight.requires_grad
    probe = config_from_dict({"transfer": {"strategy": "linear-probe"}}).transfer
    only_heads = build_param_groups(model, probe, 1e-3, 0.0)
    assert [g["name"] for g in only_heads] == ["head"] and len(only_heads[0]["params"]) == 4


def test_rebuilt_from_model_info_and_checked_in_the_config():
    model = _ensemble(2)
    info = {"name": "resnet10", "spatial_dims": 2, "in_channels": 1, "num_outputs": 2, "options": dict(model.options)}
    rebuilt = build_model(info)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))
    assert config_from_dict({"model": {"members": 4}}).model.members == 4
    with pytest.raises(ConfigError, match="members"):
        config_from_dict({"model": {"members": 0}})
    with pytest.raises(ConfigError, match="members"):
        create_model("resnet10", 2, 1, 2, members=2.5)


def test_a_run_trains_saves_and_reloads_an_ensemble(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=16, n_val=7, n_test=0)
    cfg = with_changes(small_config(2, epochs=2), data={"num_workers": 0}, model={"members": 2})
    result = train(cfg, tmp_path / "run", manifest=manifest)
    assert result.best_epoch is not None
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["model_info"]["options"]["members"] == 2
    assert {k.split(".")[1] for k in best["model"]} == {"0", "1"}
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, MemberEnsemble) and not run.model.training
    # a later run may start from it: an ensemble takes member k from member k, a single network the first member
    source = read_weights(f"run:{tmp_path / 'run'}", model_name="resnet10")
    assert (source.meta["members"], source.meta["member"]) == (2, 0)
    assert torch.equal(source.state["net.conv1.weight"], best["model"]["members.0.net.conv1.weight"])
    again = create_model("resnet10", 2, 1, 2, f"run:{tmp_path / 'run'}", small_input=True, widen_factor=0.125,
                         members=3)
    for k, member in enumerate(again.members):
        assert torch.equal(member.net.conv1.weight, best["model"][f"members.{k % 2}.net.conv1.weight"])
    assert again.weights_report.meta["member"] == 0 and "member_states" not in again.weights_report.meta
    single = create_model("resnet10", 2, 1, 2, f"run:{tmp_path / 'run'}", small_input=True, widen_factor=0.125)
    assert torch.equal(single.net.conv1.weight, best["model"]["members.0.net.conv1.weight"])
