"""What a PI reads first: summary block, CIs of the rates, FP/FN list, curves, training and weights of the run."""
from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pipeline import statistics as M
from pipeline.config import Config, DataConfig, EvalConfig, ModelConfig, save_config
from pipeline.report.build import CI_KEYS, build_report
from pipeline.report.curves import pr_points, roc_band, roc_points
from pipeline.report.inputs import read_predictions_csv, read_run
from pipeline.report.summary import threshold_text
from pipeline.report.training import best_epoch


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.0 * y - 1.0)))
    return pd.DataFrame({
        "image": [f"index.series/SE-{seed}{i:04d}.series.json" for i in range(n)],
        "label": np.where(y == 1, "lesion", "normal"),
        "patient_id": [f"PATID{seed}{i:04d}" for i in range(n)],  # an identifier in clear: never shown
        "patient_key": [f"P-{seed}{i:04d}" for i in range(n)],
        "series_key": [f"SE-{seed}{i:04d}" for i in range(n)],
        "split": "test",
        "site": rng.choice(["a", "b"], n),
        "pred": np.where(p >= 0.5, "lesion", "normal"),
        "prob_normal": 1 - p,
        "prob_lesion": p,
    })


def _read(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    df.to_csv(path, index=False)
    return read_predictions_csv(path)


def _pngs(page: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded PNG, from its IHDR chunk."""
    sizes = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        head = base64.b64decode(data[:64])
        sizes.append(struct.unpack(">II", head[16:24]))
    return sizes


def test_rates_have_wilson_cis_and_the_threshold_everywhere(tmp_path: Path) -> None:
    val = _frame(seed=1).assign(split="val")
    test = _frame()
    report = build_report(_read(test, tmp_path / "t.csv"), ["site"], tmp_path / "rep",
                          validation=_read(val, tmp_path / "v.csv"), n_bootstrap=50)
    t = report["threshold"]
    y = (test["label"] == "lesion").to_numpy()
    call = test["prob_lesion"].to_numpy() >= t
    tp, fn, fp, tn = (call & y).sum(), (~call & y).sum(), (call & ~y).sum(), (~call & ~y).sum()
    overall = report["overall"]
    assert (overall["sensitivity_ci_low"], overall["sensitivity_ci_high"]) == pytest.approx(M.wilson_ci(tp, tp + fn))
    assert (overall["specificity_ci_low"], overall["specificity_ci_high"]) == pytest.approx(M.wilson_ci(tn, tn + fp))
    assert (overall["ppv_ci_low"], overall["ppv_ci_high"]) == pytest.approx(M.wilson_ci(tp, tp + fp))
    assert (overall["npv_ci_low"], overall["npv_ci_high"]) == pytest.approx(M.wilson_ci(tn, tn + fn))
    for obj in [overall, *report["cohorts"]["site"].values()]:
        assert obj["threshold"] == t and obj["sensitivity"] is not None
        assert obj["sensitivity_ci_low"] <= obj["sensitivity"] <= obj["sensitivity_ci_high"]
    table = pd.read_csv(tmp_path / "rep" / "metrics.csv")
    assert set(CI_KEYS) <= set(table.columns) and (table["threshold"] == t).all()
    assert table[list(CI_KEYS)].notna().all().all()
    page = (tmp_path / "rep" / "report.html").read_text()
    rows = re.findall(r"<tr class='[a-z]*'><td class='l'>(?:overall|site=[ab])</td>.*?</tr>", page)
    assert len(rows) == 1 + 3 and all(f"<td>{threshold_text(t)}</td>" in row and "<small>" in row for row in rows)


def test_multiclass_per_class_rates_have_cis(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet(np.ones(3), 90) + np.eye(3)[y]
    probs /= probs.sum(1, keepdims=True)
    df = pd.DataFrame({"image": [f"i{i}" for i in range(90)], "label": np.array(["a", "b", "c"])[y],
                       **{f"prob_{c}": probs[:, k] for k, c in enumerate("abc")}})
    report = build_report(_read(df, tmp_path / "m.csv"), [], tmp_path / "rep", n_bootstrap=0)
    per_class = report["overall"]["per_class"]["b"]
    tp = int(((y == 1) & (probs.argmax(1) == 1)).sum())
    assert (per_class["sensitivity_ci_low"], per_class["sensitivity_ci_high"]) == pytest.approx(
        M.wilson_ci(tp, int((y == 1).sum())))
    assert report["overall"]["threshold"] is None and "argmax" in (tmp_path / "rep" / "report.html").read_text()


def test_summary_block_comes_first_with_title_and_operating_point(tmp_path: Path) -> None:
    val = _frame(seed=1).assign(split="val")
    build_report(_read(_frame(), tmp_path / "t.csv"), ["site"], tmp_path / "rep",
                 validation=_read(val, tmp_path / "v.csv"), validation_source="v.csv", n_bootstrap=50,
                 run=read_run(_run_dir(tmp_path)))
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<h1>Validation report: run run, split test</h1>" in page
    summary = page[page.index("<div class='summary'>"):page.index("</div>", page.index("<div class='summary'>"))]
    assert page.index("<div class='summary'>") < page.index("<h2>Overall</h2>")
    for text in ("cases</th><td>120: 60 lesion (positive), 60 normal", "operating point", "v.csv", "AUC (95% CI)",
                 "sensitivity (95% CI)", "specificity (95% CI)", "PPV (95% CI)", "NPV (95% CI)"):
        assert text in summary


def test_false_positives_and_negatives_by_key_most_confident_first(tmp_path: Path) -> None:
    df = _frame()
    report = build_report(_read(df, tmp_path / "t.csv"), [], tmp_path / "rep", n_bootstrap=0)
    errors = report["misclassified"]
    y, p = (df["label"] == "lesion").to_numpy(), df["prob_lesion"].to_numpy()
    fp, fn = np.flatnonzero((p >= 0.5) & ~y), np.flatnonzero((p < 0.5) & y)
    assert errors["n_false_positives"] == fp.size and errors["n_false_negatives"] == fn.size
    assert errors["key_columns"] == ["series_key", "patient_key"]
    top_fp = fp[np.argsort(-p[fp])][:10]
    assert [e["series_key"] for e in errors["false_positives"]] == list(df["series_key"].iloc[top_fp])
    assert [e["probability"] for e in errors["false_negatives"]] == sorted(p[fn])[:10]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert errors["false_positives"][0]["series_key"] in page
    assert "PATID" not in page and "PATID" not in (tmp_path / "rep" / "report.json").read_text()


def test_plots_are_legible_roc_band_and_pr_curve(tmp_path: Path) -> None:
    df = _frame()
    build_report(_read(df, tmp_path / "t.csv"), ["site"], tmp_path / "rep", n_bootstrap=200)
    page = (tmp_path / "rep" / "report.html").read_text()
    sizes = _pngs(page)
    assert len(sizes) == 6 and min(w for w, _ in sizes) >= 480  # ROC, PR, confusion, calibration; 2 by site
    y, p = (df["label"] == "lesion").to_numpy(), df["prob_lesion"].to_numpy()
    band = roc_band(y, p, None, 300, 0)
    fpr, tpr = roc_points(y, p)
    curve = np.interp(band["fpr"], fpr, tpr)
    inside = (np.array(band["low"]) <= curve + 1e-9) & (curve <= np.array(band["high"]) + 1e-9)
    assert inside.mean() > 0.95 and np.mean(np.array(band["high"]) - band["low"]) > 0.02
    assert pr_points(y, p)["ap"] == pytest.approx(skm.average_precision_score(y, p))


def _run_dir(tmp_path: Path, metrics: str | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,label,split\n" + "".join(f"i{i},{'lesion' if i % 3 else 'normal'},{s}\n"
                                                      for i, s in enumerate(["train"] * 12 + ["val"] * 6)))
    cfg = Config(data=DataConfig(manifest=str(manifest), classes=("normal", "lesion")),
                 model=ModelConfig(name="resnet10"), eval=EvalConfig(bootstrap=40))
    save_config(cfg, run / "config.yaml")
    (run / "labels.json").write_text(json.dumps({"task": "binary", "classes": ["normal", "lesion"]}))
    (run / "weights_report.json").write_text(json.dumps({
        "model": "resnet10", "source": "run:/x/source", "kind": "run", "sha256": "ab" * 32,
        "counts": {"loaded": 36, "adapted": 1, "new": 0, "total": 37},
        "head": {"fc.weight": {"status": "new"}, "fc.bias": {"status": "new"}},
        "backbone": {"net.conv1.weight": {"status": "loaded"}}}))
    (run / "metrics.csv").write_text(metrics or (
        "epoch,train_loss,val_auc,val_loss\n1,0.9,0.8,0.7\n2,0.6,1.0,0.3\n3,0.5,1.0,0.2\n4,0.4,1.0,0.25\n"))
    return run


def test_training_summary_best_epoch_tie_and_weights_table(tmp_path: Path) -> None:
    run = read_run(_run_dir(tmp_path))
    report = build_report(_read(_frame(), tmp_path / "t.csv"), [], tmp_path / "rep", run=run, n_bootstrap=0)
    training = report["run"]["training"]
    assert training["best"]["epoch"] == 3 and "tied with epoch(s) 2, 4" in training["best"]["why"]
    assert training["cases"] == {"train": {"normal": 4, "lesion": 8}, "val": {"normal": 2, "lesion": 4}}
    assert report["run"]["weights_counts"] == {"loaded": 36, "adapted": 1, "new": 2}
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Best epoch: <b>3</b> of 4" in page and len(_pngs(page)) == 5  # ROC, PR, confusion, calibration, curve
    weights = page[page.index("<h3>Weights report</h3>"):page.index("<details>")]
    assert "ab" * 32 in weights and "run:/x/source" in weights and "loaded tensors</th><td class='l'>36" in weights
    assert "<details><summary>Weights report, every entry</summary>" in page


def test_best_epoch_rule_for_loss_metrics() -> None:
    rows = [{"epoch": 1.0, "val_loss": 0.5}, {"epoch": 2.0, "val_loss": 0.4}, {"epoch": 3.0, "val_loss": 0.4}]
    assert best_epoch(rows, "neg_loss")["epoch"] == 2
    assert best_epoch([{"epoch": 1.0, "val_auc": None}], "auc") is None


def test_run_operating_point_is_applied_and_shown(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    (run_dir / "operating_point.json").write_text(json.dumps({
        "version": 1, "rule": "youden", "threshold": 0.31, "positive_class": "lesion", "source": "val.csv",
        "split": "val", "n": 40, "auc": 0.9, "sensitivity": 0.85, "specificity": 0.8,
        "date": "2026-12-06T09:40:00Z"}))
    report = build_report(_read(_frame(), tmp_path / "t.csv"), [], tmp_path / "rep", run=read_run(run_dir),
                          n_bootstrap=0)
    assert report["threshold"] == 0.31 and "threshold_not_from_validation" not in report["overall"]["flags"]
    assert report["run"]["operating_point"]["source"] == "val.csv"
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "run&#39;s recorded operating point" in page and "0.310 for &#39;lesion&#39;, youden on the val split (val.csv" in page
