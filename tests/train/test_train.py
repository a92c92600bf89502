"""``radpipe train``: learning a synthetic task in 2D and 3D, validation before work, losses, metrics, LR."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.config import with_changes
from pipeline.errors import ConfigError, ManifestError
from pipeline.train.launch import train
from train_helpers import metric_rows, narrow_resnets, small_config, write_blob_manifest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_2d_run_learns_and_never_reads_the_test_split(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, test_files_missing=True)
    run = tmp_path / "run"
    result = train(small_config(2, epochs=3), run, manifest=manifest)

    assert result.best_metric is not None and result.best_metric > 0.8
    assert result.last_epoch == 3 and not result.stopped_early
    for name in ("config.yaml", "labels.json", "weights_report.json", "metrics.csv", "env.json",
                 "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    rows = metric_rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"lr", "train_loss", "val_auc", "val_balanced_accuracy", "val_f1", "val_sensitivity",
            "val_specificity", "val_accuracy", "val_loss"} <= set(rows[0])
    assert max(r["val_auc"] for r in rows) == pytest.approx(result.best_metric)
    assert json.loads((run / "labels.json").read_text())["classes"] == ["neg", "pos"]
    report = json.loads((run / "weights_report.json").read_text())
    assert report["source"] is None
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert best["epoch"] == result.best_epoch and best["best_metric"] == pytest.approx(result.best_metric)
    # best.pt: what inference needs, no resume state
    assert set(best) == {"model", "model_info", "labels", "config_sha256", "epoch", "iteration", "best_metric",
                         "best_epoch", "best_loss", "key_metric", "finished"}
    assert best["labels"]["classes"] == ["neg", "pos"] and best["key_metric"] == "auc"
    from pipeline.config import config_to_dict, load_config
    from pipeline.train.checkpoint import config_digest

    assert best["config_sha256"] == config_digest(config_to_dict(load_config(run / "config.yaml")))
    best_row = next(r for r in rows if r["epoch"] == result.best_epoch)
    assert best["best_loss"] == pytest.approx(best_row["val_loss"], rel=1e-4)
    import io

    weights = io.BytesIO()
    torch.save(best["model"], weights)
    best_size = (run / "checkpoints" / "best.pt").stat().st_size
    assert best_size <= 1.1 * weights.tell() < (run / "checkpoints" / "last.pt").stat().st_size
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["epoch"] == 3 and last["iteration"] == 9 and last["finished"]
    assert set(last) >= {"model", "optimizer", "scheduler", "scaler", "epoch", "iteration", "best_metric",
                         "best_loss", "early_stop_state", "rng", "config"}
    assert set(last["rng"]) == {"torch", "numpy", "python", "cuda"}


def test_3d_run_learns(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=3, n_train=24, n_val=10, n_test=0)
    result = train(small_config(3, epochs=3, lr=3e-3), tmp_path / "run", manifest=manifest)
    assert result.best_metric is not None and result.best_metric > 0.8


def test_deterministic_runs_write_identical_metrics(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=16, n_val=7, n_test=0)
    cfg = small_config(2, epochs=2, deterministic=True)
    train(cfg, tmp_path / "a", manifest=manifest)
    train(cfg, tmp_path / "b", manifest=manifest)
    a, b = metric_rows(tmp_path / "a" / "metrics.csv"), metric_rows(tmp_path / "b" / "metrics.csv")
    assert len(a) == 2 and a == b


def test_config_error_stops_before_any_work(tmp_path, capsys):
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=4, n_val=2, n_test=0)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("transforms: {spatial_dims: 2, size: [16, 16]}\ntrain: {optimiser: sgd}\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.optimiser" in err[0] and "optimizer" in err[0]
    assert not run.exists()
    cfg.write_text("transforms: {spatial_dims: 2, size: [16, 16]}\nmodel: {name: resnet_18}\n")
    assert main(["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(run)]) == 2
    assert "resnet18" in capsys.readouterr().err and not run.exists()


def test_manifest_errors_are_listed_together_before_any_work(tmp_path, capsys):
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=6, n_val=3, n_test=0)
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].replace("case001", "gone")  # a training image that does not exist
    lines[5] = lines[5].replace(",neg,", ",maybe,")  # a third class in a binary task
    manifest.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("transforms: {spatial_dims: 2, size: [16, 16]}\ndata: {classes: [neg, pos]}\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gone.nii.gz" in err and "maybe" in err and "row 3" in err
    assert not run.exists()
    with pytest.raises(ManifestError, match="no 'val' rows"):
        train(small_config(2), run, manifest=write_blob_manifest(tmp_path / "noval", n_val=0, n_test=0))
    with pytest.raises(ConfigError, match="no manifest"):
        train(small_config(2), run)
    assert not run.exists()


def test_existing_run_dir_needs_resume_with_the_same_config(tmp_path):
    from pipeline.config import save_config
    from pipeline.errors import RunError
    from pipeline.train.launch import check_run_dir, resolve_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    manifest = write_blob_manifest(tmp_path / "data", n_train=4, n_val=2, n_test=0)
    cfg = resolve_config(small_config(2), manifest)
    save_config(cfg, run / "config.yaml")
    with pytest.raises(RunError, match="--resume"):
        train(cfg, run)
    assert check_run_dir(run, cfg, resume=True) is None  # killed before the first epoch ended: start over
    with pytest.raises(ConfigError, match=r"train.epochs: 7 vs 3"):
        check_run_dir(run, with_changes(cfg, train={"epochs": 7}), resume=True)
    with pytest.raises(RunError, match="config.yaml not found"):
        check_run_dir(tmp_path / "empty", cfg, resume=True)


def test_regression_and_multiclass_runs(tmp_path, monkeypatch):
    import pandas as pd

    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=12, n_val=6, n_test=0)
    df = pd.read_csv(manifest)
    df["score"] = [float(i % 2) * 10 + 0.5 for i in range(len(df))]
    df["grade"] = ["a", "b", "c"] * (len(df) // 3)
    df.to_csv(manifest, index=False)
    reg = with_changes(small_config(2, epochs=1, key_metric="neg_mae"),
                       data={"task": "regression", "label_columns": ["score"]})
    result = train(reg, tmp_path / "reg", manifest=manifest)
    row = metric_rows(tmp_path / "reg" / "metrics.csv")[0]
    assert {"val_mae", "val_rmse", "val_loss"} <= set(row) and "val_auc" not in row
    assert result.best_metric == pytest.approx(-row["val_mae"])
    multi = with_changes(small_config(2, epochs=1), data={"task": "multiclass", "label_columns": ["grade"],
                                                          "balance": "loss"})
    train(multi, tmp_path / "multi", manifest=manifest)
    row = metric_rows(tmp_path / "multi" / "metrics.csv")[0]
    assert 0.0 <= row["val_auc"] <= 1.0 and not math.isnan(row["val_balanced_accuracy"])


def _trained_linear(cfg, data):
    from torch.utils.data import DataLoader

    from pipeline.train.distributed import DistInfo
    from pipeline.train.engine import build_engines, make_optimizer
    from pipeline.train.objectives import TaskLoss, ValidationMetrics

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    optimizer = make_optimizer([{"params": list(net.parameters())}], cfg)
    loader = DataLoader(data, batch_size=cfg.train.batch_size, shuffle=False)
    loss = TaskLoss("binary")
    trainer, _ = build_engines(
        cfg, device=torch.device("cpu"), net=net, eval_net=net, train_loader=loader, val_loader=loader,
        optimizer=optimizer, loss_fn=loss, metric=ValidationMetrics("binary", loss, "auc", DistInfo()),
    )
    trainer.run()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_gradient_accumulation_matches_the_large_batch():
    gen = torch.Generator().manual_seed(1)
    data = [{"image": torch.randn(1, 4, 4, generator=gen), "label": torch.tensor(i % 2)} for i in range(8)]
    base = small_config(2, epochs=1, optimizer="sgd", lr=0.5, scheduler="none")
    big = _trained_linear(with_changes(base, train={"batch_size": 8}), data)
    accumulated = _trained_linear(with_changes(base, train={"batch_size": 4, "grad_accum": 2}), data)
    small_steps = _trained_linear(with_changes(base, train={"batch_size": 4}), data)
    assert torch.allclose(big, accumulated, atol=1e-6)
    assert not torch.allclose(big, small_steps, atol=1e-4)


def test_lr_schedule_warmup_cosine_and_step():
    from pipeline.train.engine import lr_factor

    cfg = small_config(2, epochs=4, warmup_epochs=1, scheduler="cosine")
    factors = [lr_factor(i, cfg, 10) for i in range(40)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[25] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.01
    step = small_config(2, epochs=4, scheduler="step", step_epochs=[2, 4], gamma=0.1)
    assert [lr_factor(i * 10, step, 10) for i in range(4)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_validation_metrics_per_task():
    from pipeline.train.objectives import TaskLoss, compute_metrics, key_value

    logits = torch.tensor([[2.0, -2.0], [1.0, 0.0], [-1.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 1])
    m = compute_metrics("binary", logits, y, TaskLoss("binary"))
    assert m["auc"] == pytest.approx(1.0) and m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(5 / 6) and m["f1"] == pytest.approx(0.8)
    assert m["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))
    reg = compute_metrics("regression", torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [3.0]]),
                          TaskLoss("regression"))
    assert reg["mae"] == pytest.approx(0.5) and reg["rmse"] == pytest.approx(math.sqrt(0.5))
    assert key_value(reg, "neg_mae") == pytest.approx(-0.5)
    ml = compute_metrics("multilabel", torch.tensor([[3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]),
                         torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), TaskLoss("multilabel"))
    assert ml["auc"] == pytest.approx(0.875) and ml["accuracy"] == pytest.approx(5 / 6)
    one_class = compute_metrics("binary", logits, torch.tensor([1, 1, 1, 1]), TaskLoss("binary"))
    assert math.isnan(one_class["auc"])


def test_label_smoothing_moves_training_targets_towards_uniform():
    from pipeline.train.objectives import TaskLoss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    y = torch.tensor([0, 1])
    log_p = torch.log_softmax(logits, dim=1)
    expected = (0.9 * -log_p[torch.arange(2), y] + 0.1 * -log_p.mean(dim=1)).mean()
    assert float(TaskLoss("multiclass", label_smoothing=0.1)(logits, y)) == pytest.approx(float(expected), rel=1e-6)
    assert float(TaskLoss("multiclass")(logits, y)) == pytest.approx(float(-log_p[torch.arange(2), y].mean()), rel=1e-6)
    ml_logits, ml_y = torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, 0.0]])
    smoothed = torch.nn.functional.binary_cross_entropy_with_logits(ml_logits, torch.tensor([[0.9, 0.1]]))
    assert float(TaskLoss("multilabel", label_smoothing=0.2)(ml_logits, ml_y)) == pytest.approx(float(smoothed))
    reg = TaskLoss("regression", label_smoothing=0.2)
    assert float(reg(torch.tensor([[1.0]]), torch.tensor([[3.0]]))) == pytest.approx(4.0)


def test_mixup_mixes_images_and_one_hot_targets_by_seed_and_iteration():
    from pipeline.train.engine import BatchPreparer, MixupPreparer
    from pipeline.train.objectives import TaskLoss

    batch = {"image": torch.arange(4 * 1 * 2 * 2, dtype=torch.float32).reshape(4, 1, 2, 2),
             "label": torch.tensor([0, 1, 2, 1])}
    mix = MixupPreparer(BatchPreparer("multiclass"), alpha=0.4, num_classes=3, seed=7)
    mix.iteration = 5
    image, target = mix(batch, torch.device("cpu"))
    rng = np.random.default_rng([7, 5])
    lam, perm = rng.beta(0.4, 0.4), rng.permutation(4)
    one_hot = torch.nn.functional.one_hot(batch["label"], 3).float()
    assert torch.allclose(image, lam * batch["image"] + (1 - lam) * batch["image"][perm])
    assert torch.allclose(target, lam * one_hot + (1 - lam) * one_hot[perm])
    assert torch.allclose(target.sum(dim=1), torch.ones(4))
    again, _ = mix(batch, torch.device("cpu"))
    mix.iteration = 6
    other, _ = mix(batch, torch.device("cpu"))
    assert torch.equal(again, image) and not torch.equal(other, image)
    assert mix.plain(batch, torch.device("cpu"))[1].tolist() == [0, 1, 2, 1]  # precise BN's batches: unmixed
    logits = torch.randn(4, 3)
    soft = float(TaskLoss("multiclass")(logits, target))
    assert soft == pytest.approx(float(-(target * torch.log_softmax(logits, 1)).sum(1).mean()), rel=1e-6)


def test_label_smoothing_is_checked_in_the_config():
    from pipeline.config import config_from_dict
    from pipeline.errors import ConfigError

    assert config_from_dict({"train": {"label_smoothing": 0.1}}).train.label_smoothing == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        config_from_dict({"train": {"label_smoothing": 0.7}})


class _InitialWeights:
    """Keeps a copy of the model's state when training starts."""

    def attach(self, engine):
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine):
        self.state = {k: v.detach().clone() for k, v in engine.network.state_dict().items()}


def _changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_linear_probe_and_gradual_unfreezing(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=8, n_val=5, n_test=0)
    probe, initial = with_changes(small_config(2, epochs=1), transfer={"strategy": "linear-probe"}), _InitialWeights()
    train(probe, tmp_path / "probe", manifest=manifest, extra_handlers=[initial])
    after = torch.load(tmp_path / "probe" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not _changed(initial.state, after, "net.")  # weights and BatchNorm statistics stay
    assert _changed(initial.state, after, "classifier.")

    gradual = with_changes(small_config(2, epochs=2), transfer={"strategy": "gradual", "unfreeze_every": 1})
    initial = _InitialWeights()
    train(gradual, tmp_path / "gradual", manifest=manifest, extra_handlers=[initial])
    after = torch.load(tmp_path / "gradual" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert _changed(initial.state, after, "net.layer4.") and not _changed(initial.state, after, "net.layer3.")


def test_early_stopping_ends_the_run(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch, widen_factor=0.125)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=8, n_val=5, n_test=0)
    frozen = with_changes(small_config(2, epochs=5, lr=0.0, patience=1), transfer={"strategy": "linear-probe"})
    result = train(frozen, tmp_path / "run", manifest=manifest)
    # lr 0: the metric never improves, so patience 1 stops after epoch 2; a tie of metric and loss keeps epoch 1
    assert result.stopped_early and result.last_epoch == 2 and result.best_epoch == 1
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["finished"] and last["early_stop_state"]["counter"] == 1


def test_best_checkpoint_rule_breaks_ties_by_validation_loss_then_the_earlier_epoch():
    from pipeline.train.objectives import better

    assert better(0.9, 0.8) and not better(0.7, 0.8)
    assert not better(1.0, 1.0)  # a tie of metric (and of unknown losses) keeps the earlier epoch
    assert better(1.0, 1.0, 0.2, 0.3) and not better(1.0, 1.0, 0.3, 0.2) and not better(1.0, 1.0, 0.3, 0.3)
    assert better(1.0, 1.0, 0.3, math.nan) and not better(1.0, 1.0, math.nan, 0.3)
    assert better(0.5, math.nan) and not better(math.nan, 0.5)


def test_best_epoch_of_a_synthetic_metric_sequence_with_ties():
    """MONAI's evaluator with a metric replaying (AUC, loss) per epoch: ties go to the lower loss, then earlier."""
    from ignite.metrics import Metric
    from monai.engines import SupervisedEvaluator

    from pipeline.train.objectives import BestEpoch

    sequence = {1: (0.8, 0.6), 2: (1.0, 0.5), 3: (1.0, 0.3), 4: (1.0, 0.4), 5: (1.0, 0.3), 6: (0.9, 0.1),
                7: (math.nan, 0.05)}

    class Replay(Metric):
        def reset(self):
            pass

        def update(self, output):
            pass

        def compute(self):
            return 0.0

        def completed(self, engine, name):
            auc, loss = sequence[engine.state.epoch]
            engine.state.metrics.update(auc=auc, loss=loss)

    rule = BestEpoch()
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=[{"image": torch.zeros(1, 1), "label": torch.zeros(1)}],
                                    network=torch.nn.Identity(), key_val_metric={"auc": Replay()},
                                    metric_cmp_fn=rule)
    rule.attach(evaluator)
    best = []
    for epoch in sequence:
        evaluator.run(epoch)
        best.append(evaluator.state.best_metric_epoch)
    assert best == [1, 2, 3, 3, 3, 3, 3]  # not 5 (same loss, later) nor the last AUC-1.0 epoch
    assert rule.best_loss == 0.3


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import pipeline.train.objectives as objectives

    narrow_resnets(monkeypatch)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=8, n_val=4, n_test=0)
    calls = {"n": 0}
    forward = objectives.TaskLoss.forward

    def poisoned(self, pred, target):  # finite for the 2 training batches of epoch 1, then NaN
        calls["n"] += 1
        loss = forward(self, pred, target)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(objectives.TaskLoss, "forward", poisoned)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data: {task: binary}\ntransforms: {spatial_dims: 2, size: [16, 16], augment: none, orientation: ''}\n"
        "model: {name: resnet10, small_input: true}\n"
        "train: {epochs: 3, batch_size: 4, device: cpu, tensorboard: false, precise_bn: 0}\n"
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training loss of epoch 2 is nan" in err and "last.pt of epoch 1 is kept" in err and "train.lr" in err
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in metric_rows(run / "metrics.csv")] == [1]


def test_resuming_removes_checkpoint_temporaries_of_a_killed_run(tmp_path, monkeypatch):
    import subprocess
    import sys

    narrow_resnets(monkeypatch)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=8, n_val=4, n_test=0)
    run = tmp_path / "run"
    cfg = small_config(2, epochs=1, batch_size=4)
    train(cfg, run, manifest=manifest)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    stale = run / "checkpoints" / f".tmp-{dead}-0a1b2c3d.last.pt"
    stale.write_bytes(b"half a checkpoint")
    result = train(cfg, run, manifest=manifest, resume=True)
    assert result.last_epoch == 1 and not stale.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_an_unreadable_training_image_stops_train_before_the_run_folder(tmp_path, capsys):
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=6, n_val=3, n_test=0, size=64)
    cut = tmp_path / "data" / "img" / "case002.nii.gz"  # row 4 of the manifest
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header reads, the voxels end early
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("transforms: {spatial_dims: 2, size: [16, 16]}\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "row 4" in err and "case002.nii.gz" in err and "truncated" in err
    assert not run.exists()


def test_a_train_that_fails_before_its_first_epoch_does_not_block_the_rerun(tmp_path, monkeypatch):
    import pipeline.train.session as session
    from pipeline.errors import RunError
    from pipeline.train.launch import check_run_dir, resolve_config

    narrow_resnets(monkeypatch)
    manifest = write_blob_manifest(tmp_path / "data", dims=2, n_train=8, n_val=4, n_test=0)
    run = tmp_path / "run"
    cfg = small_config(2, epochs=1, batch_size=4)
    build_loaders = session._build_loaders

    def dies(s):
        raise RuntimeError("a loader worker died while caching")

    monkeypatch.setattr(session, "_build_loaders", dies)
    with pytest.raises(RuntimeError, match="worker died"):
        train(cfg, run, manifest=manifest)
    monkeypatch.setattr(session, "_build_loaders", build_loaders)
    result = train(cfg, run, manifest=manifest)  # the same command again: not "exists and is not empty"
    assert result.last_epoch == 1 and [r["epoch"] for r in metric_rows(run / "metrics.csv")] == [1]
    with pytest.raises(RunError, match="--resume"):  # a run with a finished epoch is never reused
        train(cfg, run, manifest=manifest)
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.csv"):
        (run / name).unlink()
    check_run_dir(run, resolve_config(cfg, manifest), resume=False)  # only the files train writes at start
    (run / "notes.txt").write_text("mine\n")  # something train did not write: refused
    with pytest.raises(RunError, match="--resume"):
        check_run_dir(run, resolve_config(cfg, manifest), resume=False)
