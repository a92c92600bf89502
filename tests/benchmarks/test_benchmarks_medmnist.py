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


def test_protocol_is_the_importers_recipe_with_epochs_from_the_image_budget():
    from pipeline.manifest.medmnist_recipe import RECIPES, recipe

    bench = _load()
    budget2 = RECIPES[2].budget_images
    assert bench.protocol(2, 4708)["epochs"] == round(budget2 / 4708)
    assert bench.protocol(2, 4708)["steps"] == bench.protocol(2, 4708)["epochs"] * -(-4708 // RECIPES[2].train["batch_size"])
    assert bench.protocol(2, 10)["epochs"] == RECIPES[2].max_epochs  # capped
    assert bench.protocol(2, 10_000_000)["epochs"] == RECIPES[2].min_epochs  # floor
    assert bench.protocol(2, 546, epochs=3)["epochs"] == 3 and bench.protocol(2, 546, epochs=3)["warmup_epochs"] == 0
    for dims, n in ((2, 4708), (3, 1188)):
        sections, p = recipe(dims, n, (28,) * dims), bench.protocol(dims, n, size=(28,) * dims)
        assert p["model"] == sections["model"]["name"] and p["small_input"] == sections["model"]["small_input"]
        assert {k: p[k] for k in sections["train"]} == sections["train"]
        assert {k: p[f"transforms.{k}"] for k in sections["transforms"]} == sections["transforms"]
    args = bench.overrides(bench.protocol(2, 4708, size=(28, 28)))
    sets = dict(a.split("=", 1) for a in args[1::2])
    assert sets["train.device"] == "cpu" and sets["model.name"] == RECIPES[2].model["name"]
    assert sets["train.epochs"] == str(bench.protocol(2, 4708)["epochs"]) and "train.steps" not in sets


def test_spread_is_mean_sample_std_and_range():
    bench = _load()
    assert bench.spread([0.9, 0.92, 0.94]) == pytest.approx(
        {"mean": 0.92, "std": 0.02, "min": 0.9, "max": 0.94, "n": 3})
    assert bench.spread([0.5])["std"] == 0.0


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
         "--epochs", "1", "--bootstrap", "20", "--threads", "1", "--seeds", "2", "--set", "train.lr=0.002"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["dataset"] == "tinymnist" and result["counts"] == {"train": 40, "val": 10, "test": 10}
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for run in result["runs"]:
        assert 0.0 <= run["test"]["medmnist_auc"] <= 1.0 and 0.0 <= run["test"]["medmnist_acc"] <= 1.0
        assert 0.0 <= run["report"]["auc"] <= 1.0 and 0.0 <= run["report"]["accuracy"] <= 1.0
        assert set(run["timings"]) == {"import_s", "train_s", "evaluate_s", "report_s", "total_s"}
        assert run["timings"]["total_s"] >= run["timings"]["train_s"] > 0
    aucs = [r["test"]["medmnist_auc"] for r in result["runs"]]
    assert result["summary"]["test_auc"]["mean"] == pytest.approx(sum(aucs) / 2)
    assert result["summary"]["test_auc"]["min"] == min(aucs) and result["summary"]["test_auc"]["n"] == 2
    assert result["protocol"]["epochs"] == 1 and result["paper"] == {} and result["paper_best_resnet"] is None
    assert result["extra"] == ["train.lr=0.002"]
    assert "train.lr=0.002" in (tmp_path / "work" / "commands.log").read_text()
    assert "ours only" in proc.stdout and "| tinymnist | 2 |" in proc.stdout
