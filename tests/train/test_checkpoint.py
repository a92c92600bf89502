"""Checkpoints: atomic writes, RNG state, and a killed run resumed to the same result as an uninterrupted one."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from ignite.engine import Events

from pipeline.train.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state, unwrap_model
from pipeline.config import with_changes
from pipeline.errors import RunError
from pipeline.train.launch import train
from train_helpers import metric_rows, narrow_resnets, small_config, write_blob_manifest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # the process dies in the middle of the write
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_checkpoint_names_the_problem(tmp_path):
    with pytest.raises(RunError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(RunError, match="no 'model'"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip():
    state = rng_state()
    first = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(state)
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_unwrap_model_removes_wrappers():
    net = torch.nn.Linear(2, 2)
    assert unwrap_model(torch.nn.DataParallel(net)) is net


class SimulatedKill(Exception):
    """Stands for SIGKILL in the middle of an epoch."""


class KillDuring:
    """Raise at the given iteration of the given epoch (after the previous epoch's last.pt was written)."""

    def __init__(self, epoch: int, iteration_in_epoch: int) -> None:
        self.epoch = epoch
        self.iteration_in_epoch = iteration_in_epoch

    def attach(self, engine):
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine):
        within = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        if engine.state.epoch == self.epoch and within == self.iteration_in_epoch:
            raise SimulatedKill(f"killed in epoch {self.epoch}")


REGULARISERS = {"plain": {}, "mixup+smoothing": {"mixup": 0.4, "label_smoothing": 0.1}, "ema": {"ema": 0.8}}


@pytest.mark.parametrize("regularised", list(REGULARISERS))
def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path, monkeypatch, regularised):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=16, n_val=7, n_test=0)
    extra = REGULARISERS[regularised]
    cfg = with_changes(small_config(2, epochs=4, warmup_epochs=1, patience=3, **extra), model={"dropout": 0.2},
                       transforms={"augment": "medium", "augment_prob": 0.8}, data={"num_workers": 1})
    whole = train(cfg, tmp_path / "whole", manifest=manifest)

    with pytest.raises(SimulatedKill):
        train(cfg, tmp_path / "killed", manifest=manifest, extra_handlers=[KillDuring(epoch=3, iteration_in_epoch=1)])
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["epoch"] == 2
    assert len(metric_rows(tmp_path / "killed" / "metrics.csv")) == 2
    resumed = train(cfg, tmp_path / "killed", manifest=manifest, resume=True)

    a, b = metric_rows(tmp_path / "whole" / "metrics.csv"), metric_rows(tmp_path / "killed" / "metrics.csv")
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for row_a, row_b in zip(a, b):
        for key in row_a:
            assert row_b[key] == pytest.approx(row_a[key], abs=1e-6, nan_ok=True), key
    assert (resumed.best_epoch, resumed.best_metric) == (whole.best_epoch, whole.best_metric)
    wa = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    wb = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    for key, tensor in wa["model"].items():
        assert torch.allclose(tensor.float(), wb["model"][key].float(), atol=1e-6), key
    if "ema" in extra:  # the averaged weights above, the live ones here
        assert wa["ema"]["updates"] == wb["ema"]["updates"] == 8
        for key, tensor in wa["ema"]["live"].items():
            assert torch.allclose(tensor.float(), wb["ema"]["live"][key].float(), atol=1e-6), key
    assert wa["early_stop_state"] == wb["early_stop_state"] and wa["iteration"] == wb["iteration"] == 8

    again = train(cfg, tmp_path / "killed", manifest=manifest, resume=True)  # a finished run stays finished
    assert again.last_epoch == 4 and len(metric_rows(tmp_path / "killed" / "metrics.csv")) == 4
