"""benchmarks/medmnist.py: the protocol, MedMNIST's metrics, and a smoke run on a tiny synthetic file."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "medmnist.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_medmnist_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_npz(path: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """Binary 28x28 grey images: class 1 has a bright square in the centre."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes.items():
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[labels == 1, 10:18, 10:18] += 150
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    np.savez(path, **arrays)


def test_protocol_epochs_follow_the_image_budget_within_bounds():
    bench = _load()
    assert bench.protocol(2, 4708)["epochs"] == 8  # 38,400 / 4,708
    assert bench.protocol(2, 4708)["steps"] == 8 * 74
    assert bench.protocol(2, 546)["epochs"] == 40  # 70 capped
    assert bench.protocol(2, 2000)["epochs"] == 19
    assert bench.protocol(2, 2000)["warmup_epochs"] == 1 and bench.protocol(2, 4708)["warmup_epochs"] == 0
    assert bench.protocol(2, 10)["epochs"] == 40  # capped
    assert bench.protocol(2, 100_000)["epochs"] == 2  # floor
    p3 = bench.protocol(3, 1188)
    assert (p3["epochs"], p3["model"], p3["small_input"], p3["batch_size"]) == (8, "resnet10", False, 32)
    assert bench.protocol(2, 546, epochs=3)["steps"] == 3 * 9


def test_medmnist_metrics_binary_and_multiclass(tmp_path: Path):
    bench = _load()
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"task": "binary", "classes": ["neg", "pos"], "label_columns": ["label"]}))
    pd.DataFrame({"label": ["neg", "neg", "pos", "pos"], "prob_neg": [0.9, 0.4, 0.6, 0.2],
                  "prob_pos": [0.1, 0.6, 0.4, 0.8]}).to_csv(tmp_path / "b.csv", index=False)
    m = bench.medmnist_metrics(tmp_path / "b.csv", labels)
    assert m["auc"] == pytest.approx(0.75) and m["acc"] == pytest.approx(0.5)
    labels.write_text(json.dumps({"task": "multiclass", "classes": ["a", "b", "c"], "label_columns": ["label"]}))
    pd.DataFrame({"label": ["a", "b", "c"], "prob_a": [0.8, 0.1, 0.5], "prob_b": [0.1, 0.8, 0.1],
                  "prob_c": [0.1, 0.1, 0.4]}).to_csv(tmp_path / "m.csv", index=False)
    m = bench.medmnist_metrics(tmp_path / "m.csv", labels)
    assert m["auc"] == pytest.approx(1.0) and m["acc"] == pytest.approx(2 / 3)


def test_paper_table_best_resnet():
    bench = _load()
    assert bench.best_paper_resnet("pneumoniamnist") == ("ResNet-50 (224)", 0.962)
    assert bench.best_paper_resnet("breastmnist") == ("ResNet-18 (28)", 0.901)
    assert bench.best_paper_resnet("adrenalmnist3d") == ("ResNet-18 + ACS", 0.839)
    assert bench.best_paper_resnet("unknownmnist") is None


@pytest.mark.slow  # about 30 s of CPU (four CLI commands); several minutes of wall clock on a shared machine
def test_smoke_run_on_a_tiny_synthetic_file(tmp_path: Path):
    npz = tmp_path / "tinymnist.npz"
    _write_npz(npz, {"train": 40, "val": 10, "test": 10})
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(npz), "--json", str(out), "--work", str(tmp_path / "work"),
         "--epochs", "1", "--bootstrap", "20", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["dataset"] == "tinymnist" and result["counts"] == {"train": 40, "val": 10, "test": 10}
    assert 0.0 <= result["test"]["medmnist_auc"] <= 1.0 and 0.0 <= result["test"]["medmnist_acc"] <= 1.0
    assert 0.0 <= result["report"]["auc"] <= 1.0 and 0.0 <= result["report"]["accuracy"] <= 1.0
    assert result["protocol"]["epochs"] == 1 and result["paper"] == {} and result["paper_best_resnet"] is None
    assert set(result["timings"]) == {"import_s", "train_s", "evaluate_s", "report_s", "total_s"}
    assert result["timings"]["total_s"] >= result["timings"]["train_s"] > 0
    assert "ours only" in proc.stdout and "test AUC" in proc.stdout
