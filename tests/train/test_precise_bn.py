"""Precise BN: running statistics recomputed from training batches, frozen stages kept, runs calibrated."""
from __future__ import annotations

import copy
import os
import socket

import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.config import with_changes
from pipeline.train.distributed import DistInfo
from pipeline.infer.evaluate import evaluate
from pipeline.train.precise_bn import recompute_bn_stats, training_batchnorms
from pipeline.train.launch import train
from train_helpers import metric_rows, narrow_resnets, small_config, write_blob_manifest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(6, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2),
    )


def _data(seed: int = 0, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 10, 10, generator=g) * 3.0 + 5.0
    y = (x[:, 0, 3:7, 3:7].mean(dim=(1, 2)) > 5.0).long()
    return x, y


def _trained(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A few high-LR steps: the weights move far faster than the 0.1-momentum running averages."""
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    net.train()
    for step in range(6):
        i = slice((step % 4) * 8, (step % 4) * 8 + 8)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i]), y[i]).backward()
        opt.step()
    return net


def _reference_stats(net: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """A copy whose BatchNorm statistics are the plain mean / unbiased variance of every layer's inputs."""
    ref = copy.deepcopy(net)
    ref.train()
    for m in ref.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d) and m.training]
    seen: dict[nn.Module, list[torch.Tensor]] = {bn: [] for bn in bns}
    hooks = [bn.register_forward_pre_hook(lambda m, a: seen[m].append(a[0].detach().clone())) for bn in bns]
    with torch.no_grad():
        for b in batches:
            ref(b)
    for h in hooks:
        h.remove()
    for bn in bns:
        values = torch.cat(seen[bn]).transpose(0, 1).reshape(bn.num_features, -1).double()
        bn.running_mean.copy_(values.mean(dim=1).float())
        bn.running_var.copy_(values.var(dim=1, unbiased=True).float())
    return ref


def _eval_out(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        return net(x)


def test_recomputed_stats_equal_the_data_statistics_and_change_the_eval_output():
    x, y = _data()
    net = _trained(x, y)
    batches = list(x.split(8)) + [x[:5]]  # uneven last batch: pooled over cases, not averaged per batch
    before = _eval_out(copy.deepcopy(net), x)
    reference = _eval_out(_reference_stats(net, batches), x)
    tracked = [m.num_batches_tracked.clone() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    rng = torch.get_rng_state()

    net.train()
    assert recompute_bn_stats(net, iter(batches)) == (2, 5)

    assert all(m.training for m in net.modules())  # modes restored, dropout included
    assert torch.equal(torch.get_rng_state(), rng)  # dropout was off: no random numbers drawn
    assert [m.num_batches_tracked for m in net.modules() if isinstance(m, nn.BatchNorm2d)] == tracked
    after = _eval_out(net, x)
    assert torch.allclose(after, reference, atol=1e-4, rtol=1e-4)
    assert (before - reference).abs().max() > 0.1  # the lagging running averages were measurably off
    assert (after.argmax(1) == y).float().mean() >= (before.argmax(1) == y).float().mean()


def test_eval_mode_batchnorm_is_left_alone_and_no_batchnorm_costs_nothing():
    x, y = _data()
    net = _trained(x, y)
    net.train()
    frozen = net[1]
    frozen.eval()  # as a frozen stage under linear-probe / gradual
    kept = {k: v.clone() for k, v in frozen.state_dict().items()}
    old_second = net[5].running_var.clone()
    assert training_batchnorms(net) == [net[5]]
    assert recompute_bn_stats(net, iter(x.split(8))) == (1, 4)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in kept.items())
    assert not frozen.training and net[5].training
    assert not torch.allclose(net[5].running_var, old_second)

    def never():
        raise AssertionError("batches loaded for a model without training BatchNorm")
        yield

    assert recompute_bn_stats(nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.1)), never()) == (0, 0)
    net.eval()
    assert recompute_bn_stats(net, never()) == (0, 0)


def test_frozen_backbone_keeps_its_statistics():
    from models.factory import create_model

    model = create_model("resnet10", 2, 1, 2, small_input=True, widen_factor=0.125)
    x = torch.randn(16, 1, 16, 16) * 2.0 + 0.5
    model.set_frozen([s for s in model.stage_names() if s != "head"])  # linear probe
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_bn_stats(model, iter(x.split(8))) == (0, 0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

    top = model.stage_names()[-2]
    model.set_frozen([s for s in model.stage_names() if s not in (top, "head")])  # gradual, one stage open
    model.train()
    layers, _ = recompute_bn_stats(model, iter(x.split(8)))
    changed = {k.rsplit(".", 1)[0] for k, v in model.state_dict().items()
               if k.endswith("running_var") and not torch.equal(v, state[k])}
    assert layers == len(changed) > 0
    top_modules = dict(model.stages())[top]
    top_bns = {id(m) for t in top_modules for m in t.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(model.get_submodule(name)) for name in changed} == top_bns


def _rank(rank: int, init: str, x: torch.Tensor, net: nn.Module, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        net.train()
        shard = x[rank * 16:(rank + 1) * 16]
        recompute_bn_stats(net, iter(shard.split(8)), dist_info=DistInfo(rank=rank, world_size=2))
        torch.save({k: v for k, v in net.state_dict().items() if "running" in k}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_pool_their_statistics(tmp_path):
    """Gloo, 2 processes with different halves of the data: both end with the statistics of all of it."""
    import torch.multiprocessing as mp

    x, y = _data()
    net = _trained(x, y)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    out = str(tmp_path / "stats")
    mp.spawn(_rank, args=(f"tcp://127.0.0.1:{port}", x, net, out), nprocs=2, join=True)
    single = copy.deepcopy(net)
    single.train()
    recompute_bn_stats(single, iter(x.split(8)))
    expected = {k: v for k, v in single.state_dict().items() if "running" in k}
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        for key, value in expected.items():
            assert torch.allclose(got[key], value, atol=1e-5, rtol=1e-5), (rank, key)


def test_run_with_precise_bn_is_calibrated_and_trains_identically(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=24, n_val=12, n_test=0)
    base = small_config(2, epochs=3, lr=1e-2, warmup_epochs=0)

    result = {}
    for name, batches in (("off", 0), ("on", 16)):
        run = tmp_path / name
        train(with_changes(base, train={"precise_bn": batches}), run, manifest=manifest)
        evaluate(run, manifest, tmp_path / f"{name}.csv", split="val", device="cpu", workers=0)
        df = pd.read_csv(tmp_path / f"{name}.csv")
        truth = (df["label"] == "pos").astype(float)
        result[name] = {"brier": float(((df["prob_pos"] - truth) ** 2).mean()),
                        "rows": metric_rows(run / "metrics.csv"),
                        "last": torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]}
    off, on = result["off"], result["on"]
    # Precise BN only rewrites running statistics: the training itself is unchanged.
    assert [r["train_loss"] for r in on["rows"]] == [r["train_loss"] for r in off["rows"]]
    for key, value in off["last"].items():
        if "running_" not in key:
            assert torch.equal(value, on["last"][key]), key
    assert on["rows"][-1]["val_balanced_accuracy"] >= 0.8
    assert on["brier"] < 0.2
    assert on["brier"] < off["brier"]
