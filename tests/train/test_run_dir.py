"""The run directory: load_run rebuilds a trained model and refuses inconsistent runs."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from pipeline.errors import RunError
from pipeline.train.run_dir import MetricsLog, Run, default_run_dir, load_run, read_metrics
from pipeline.train.launch import train
from train_helpers import narrow_resnets, small_config, write_blob_manifest


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        narrow_resnets(mp, widen_factor=0.125)
        manifest = write_blob_manifest(root / "data", dims=2, n_train=8, n_val=5, n_test=0)
        train(small_config(2, epochs=1), root / "run", manifest=manifest)
    torch.set_num_threads(threads)
    return root / "run", manifest


@pytest.fixture
def run_copy(trained_run, tmp_path):
    shutil.copytree(trained_run[0], tmp_path / "run")
    return tmp_path / "run"


def test_load_run_rebuilds_the_best_model(trained_run):
    run_dir, manifest = trained_run
    run = load_run(run_dir)
    assert isinstance(run, Run) and run.task == "binary" and run.label_map.classes == ("neg", "pos")
    assert run.epoch == 1 and run.checkpoint == "best" and run.best_metric is not None
    assert not run.model.training and run.device == torch.device("cpu")
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)["model"]
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, best[key]), key
    case = run.eval_transform({"image": str(manifest.parent / "img" / "case001.nii.gz"), "label": 1})
    assert tuple(case["image"].shape) == (1, 16, 16) and int(case["label"]) == 1
    no_label = run.infer_transform({"image": str(manifest.parent / "img" / "case001.nii.gz")})
    with torch.no_grad():
        probs = run.probabilities(run.model(no_label["image"].as_tensor()[None]))
    assert probs.shape == (1, 2) and probs.sum().item() == pytest.approx(1.0)
    assert load_run(run_dir, checkpoint="last").checkpoint == "last"


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        (lambda r: (r / "labels.json").unlink(), "labels.json is missing"),
        (lambda r: (r / "checkpoints" / "best.pt").unlink(), "best.pt is missing"),
        (lambda r: (r / "config.yaml").write_text("train: {epochs: -3}\n"), "config.yaml does not parse"),
        (lambda r: (r / "labels.json").write_text("{oops"), "labels.json does not parse"),
        (lambda r: (r / "labels.json").write_text(json.dumps(
            {"task": "binary", "classes": ["a", "b", "c"], "label_columns": ["label"]})), "head has 2 outputs"),
        (lambda r: (r / "labels.json").write_text(json.dumps(
            {"task": "multiclass", "classes": ["a", "b"], "label_columns": ["label"]})), "task 'multiclass'"),
        (lambda r: (r / "config.yaml").write_text(
            (r / "config.yaml").read_text().replace("name: resnet10", "name: resnet18")), "resnet18"),
        (lambda r: (r / "checkpoints" / "best.pt").write_bytes(b"\x00" * 10), "cannot be read"),
    ],
)
def test_load_run_refuses_inconsistent_runs(run_copy, breakage, words):
    breakage(run_copy)
    with pytest.raises(RunError, match=words.replace("(", r"\(")):
        load_run(run_copy)


def test_load_run_refuses_a_missing_folder(tmp_path):
    with pytest.raises(RunError, match="not found"):
        load_run(tmp_path / "nothing")


def test_metrics_log_rewrites_rows_and_keeps_them_on_resume(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv", ["epoch", "lr", "val_auc"])
    log.append({"epoch": 1, "lr": 0.1, "val_auc": ""})
    log.append({"epoch": 2, "lr": 0.05, "val_auc": 0.75})
    assert read_metrics(tmp_path) == [{"epoch": 1, "lr": 0.1, "val_auc": None},
                                      {"epoch": 2, "lr": 0.05, "val_auc": 0.75}]
    again = MetricsLog(tmp_path / "metrics.csv", ["epoch", "lr", "val_auc"])
    again.load(up_to_epoch=1)
    again.append({"epoch": 2, "lr": 0.5, "val_auc": float("nan")})
    rows = read_metrics(tmp_path)
    assert [r["lr"] for r in rows] == [0.1, 0.5] and rows[1]["val_auc"] != rows[1]["val_auc"]


def test_default_run_dir_is_unique(tmp_path):
    first = default_run_dir(tmp_path)
    first.mkdir(parents=True)
    second = default_run_dir(tmp_path)
    assert second != first and second.parent == tmp_path
