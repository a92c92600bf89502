"""EMA of weights: the average's arithmetic, its BatchNorm handling, and what a run's checkpoints hold."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import ConfigError, config_from_dict, with_changes
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.ema import WeightAverage, live_weights
from pipeline.train.launch import train
from pipeline.train.run_dir import load_run
from train_helpers import narrow_resnets, small_config, write_blob_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_average_copies_first_then_warms_up_to_the_decay():
    live = nn.Linear(1, 1, bias=False)
    average = WeightAverage(live, decay=0.5, average_buffers=False)
    seen = []
    for value in (4.0, 2.0, 1.0, 7.0):
        live.weight.data.fill_(value)
        average.update()
        seen.append(float(average.module.weight.detach()))
    # the first update copies; then d' = min(0.5, (1 + n) / (10 + n)) = 2/11, 3/12, 4/13 after n = 1, 2, 3 updates
    first = 4.0
    second = 2 / 11 * first + 9 / 11 * 2.0
    third = 3 / 12 * second + 9 / 12 * 1.0
    fourth = 4 / 13 * third + 9 / 13 * 7.0
    assert seen == pytest.approx([first, second, third, fourth], rel=1e-6)
    assert int(average.averaged.n_averaged) == 4


def test_buffers_are_averaged_or_follow_the_live_model():
    live = nn.BatchNorm1d(2)
    averaged = WeightAverage(live, decay=0.9, average_buffers=True)
    followed = WeightAverage(live, decay=0.9, average_buffers=False)
    for value in (0.0, 10.0):
        live.running_mean.fill_(value)
        live.num_batches_tracked.fill_(int(value) + 3)
        averaged.update()
        followed.update()
    assert averaged.module.running_mean.tolist() == pytest.approx([90 / 11, 90 / 11])  # 2/11 * 0 + 9/11 * 10
    assert int(averaged.module.num_batches_tracked) == 13  # integers are copied, never blended
    assert followed.module.running_mean.tolist() == [10.0, 10.0]


def test_match_modes_copies_the_live_training_flags():
    live = nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm1d(2))
    average = WeightAverage(live, decay=0.9, average_buffers=False)
    live[0].eval()
    average.module.eval()  # as the evaluator leaves it
    average.match_modes()
    assert [m.training for m in average.module] == [False, True]


def test_ema_is_checked_in_the_config():
    assert config_from_dict({"train": {"ema": 0.99}}).train.ema == pytest.approx(0.99)
    with pytest.raises(ConfigError, match="ema"):
        config_from_dict({"train": {"ema": 1.0}})


def test_run_saves_and_validates_the_averaged_weights(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=16, n_val=7, n_test=0)
    cfg = with_changes(small_config(2, epochs=3, ema=0.9), data={"num_workers": 0})
    result = train(cfg, tmp_path / "run", manifest=manifest)
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["ema"]["updates"] == last["iteration"] == 6
    live, averaged = live_weights(last), last["model"]
    moved = [k for k, t in live.items() if t.is_floating_point() and not torch.allclose(t, averaged[k])]
    assert any(k.endswith("weight") for k in moved)
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert "ema" not in best
    if result.best_epoch == 3:
        assert all(torch.equal(best["model"][k], averaged[k]) for k in averaged)
    loaded = load_run(tmp_path / "run", checkpoint="last")
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k].cpu(), averaged[k].cpu()) for k in averaged)
