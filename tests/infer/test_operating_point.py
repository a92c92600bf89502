"""The operating point fixed on validation travels with the run: recorded, applied by evaluate / predict / report."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from predict_helpers import read_rows, volume, write_nifti
from predict_helpers import write_run as make_run

from pipeline import statistics as M
from pipeline.cli import main
from pipeline.errors import ConfigError, RunError
from pipeline.infer.evaluate import evaluate
from pipeline.infer.predict import predict
from pipeline.operating_point import (
    OPERATING_POINT_FILE,
    fix_operating_point,
    parse_threshold_option,
    read_operating_point,
    resolve_threshold,
    write_operating_point,
)


@pytest.fixture(autouse=True)
def _secret(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path_factory.getbasetemp() / "secret.key"))


_read = read_rows


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A random-weights binary run and a manifest of 8 val and 4 test cases (both classes in each)."""
    root = tmp_path_factory.mktemp("op")
    run = make_run(root / "run")
    rows = []
    for i in range(12):
        write_nifti(root / "data" / f"c{i}.nii.gz", volume(40 + i))
        rows.append({"image": f"c{i}.nii.gz", "label": "yes" if i % 2 else "no", "patient_id": f"p{i}",
                     "split": "val" if i < 8 else "test"})
    manifest = root / "data" / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, run, manifest


def test_fix_write_and_read_back_in_the_documented_format(tmp_path):
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    score = np.array([0.05, 0.1, 0.12, 0.139, 0.35, 0.3, 0.6, 0.9])
    point = fix_operating_point(y, score, "youden", 0.9, positive_class="lesion", source="val.csv")
    assert point.threshold == pytest.approx(M.choose_threshold(y, score, "youden")) == pytest.approx((0.139 + 0.12) / 2)
    assert (point.sensitivity, point.specificity, point.n) == (1.0, 0.75, 8)
    assert point.auc == pytest.approx(M.binary_metrics(y, score, 0.139)["auc"])
    target = fix_operating_point(y, score, "sensitivity", 0.75, positive_class="lesion", source="val.csv")
    assert target.rule == "sensitivity>=0.75" and target.threshold == pytest.approx((0.3 + 0.139) / 2)
    write_operating_point(tmp_path, point)
    data = json.loads((tmp_path / OPERATING_POINT_FILE).read_text())
    assert list(data) == ["version", "rule", "threshold", "positive_class", "source", "split", "n", "auc",
                          "sensitivity", "specificity", "date"]
    assert data["version"] == 1 and data["rule"] == "youden" and data["split"] == "val"
    assert data["date"].endswith("Z") and data["date"][:2] == "20"
    assert read_operating_point(tmp_path) == point
    assert read_operating_point(tmp_path / "nowhere") is None


@pytest.mark.parametrize("text", ['{"version": 1, "threshold": 1.5, "positive_class": "x"}',
                                  '{"version": 1, "threshold": "0.3", "positive_class": "x"}',
                                  '{"version": 2, "threshold": 0.3, "positive_class": "x"}', "[1, 2", "null"])
def test_a_broken_operating_point_is_refused_with_the_fix(tmp_path, text):
    (tmp_path / OPERATING_POINT_FILE).write_text(text)
    with pytest.raises(RunError, match="evaluate --split val"):
        read_operating_point(tmp_path)


def test_resolve_threshold_override_and_a_run_without_one(tmp_path):
    assert parse_threshold_option("argmax") == "argmax" and parse_threshold_option(" 0.25 ") == 0.25
    for bad in ("1.2", "high", "nan"):
        with pytest.raises(ConfigError, match="--threshold"):
            parse_threshold_option(bad)
    cut, why = resolve_threshold(tmp_path, "binary", ("no", "yes"), None)
    assert cut is None and f"no {OPERATING_POINT_FILE}" in why and "evaluate --split val" in why
    assert resolve_threshold(tmp_path, "binary", ("no", "yes"), 0.3)[0] == 0.3
    assert resolve_threshold(tmp_path, "multiclass", ("a", "b", "c"), None)[0] is None
    with pytest.raises(ConfigError, match="binary tasks only"):
        resolve_threshold(tmp_path, "multiclass", ("a", "b", "c"), 0.3)
    point = fix_operating_point(np.array([0, 1]), np.array([0.2, 0.7]), "youden", 0.9, positive_class="no",
                                source="x")
    write_operating_point(tmp_path, point)
    with pytest.raises(RunError, match="positive class 'no'"):
        resolve_threshold(tmp_path, "binary", ("no", "yes"), None)


def test_evaluate_val_records_the_operating_point_and_later_commands_apply_it(study, tmp_path, caplog):
    _, run, manifest = study
    (run / OPERATING_POINT_FILE).unlink(missing_ok=True)
    caplog.set_level("INFO", logger="radpipe")
    before = _read(evaluate(run, manifest, tmp_path / "before.csv", split="test", workers=0).out)
    assert {r["threshold"] for r in before} == {"argmax"}
    assert sum(f"no {OPERATING_POINT_FILE}" in r.message for r in caplog.records) == 1  # said once

    summary = evaluate(run, manifest, tmp_path / "val.csv", split="val", workers=0)
    val = _read(summary.out)
    point = read_operating_point(run)
    assert point is not None and summary.operating_point == point
    y = np.array([r["label"] == "yes" for r in val], dtype=int)
    score = np.array([float(r["prob_yes"]) for r in val])
    assert point.threshold == M.choose_threshold(y, score, "youden")  # fixed on the probabilities as written
    assert (point.n, point.positive_class, point.split, point.source) == (8, "yes", "val", "evaluate --split val")
    assert point.sensitivity == pytest.approx(M.binary_metrics(y, score, point.threshold)["sensitivity"])
    assert {r["threshold"] for r in val} == {f"{point.threshold:.10g}"}

    test = _read(evaluate(run, manifest, tmp_path / "test.csv", split="test", workers=0).out)
    assert list(test[0])[-3:] == ["threshold", "prob_no", "prob_yes"]
    assert [r["pred"] for r in test] == ["yes" if float(r["prob_yes"]) >= point.threshold else "no" for r in test]
    assert {r["threshold"] for r in test} == {f"{point.threshold:.10g}"}
    forced = _read(evaluate(run, manifest, tmp_path / "forced.csv", split="test", workers=0, threshold=0.0).out)
    assert {r["pred"] for r in forced} == {"yes"} and {r["threshold"] for r in forced} == {"0"}


def test_report_threshold_from_records_the_same_threshold_as_the_report(study, tmp_path, capsys):
    _, run, manifest = study
    val, test = tmp_path / "val.csv", tmp_path / "test.csv"
    assert main(["evaluate", "--run", str(run), "--manifest", str(manifest), "--split", "val", "--out", str(val),
                 "--workers", "0"]) == 0
    assert "operating point threshold" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(run), "--manifest", str(manifest), "--split", "test", "--out", str(test),
                 "--workers", "0", "--threshold", "argmax"]) == 0
    assert {r["threshold"] for r in _read(test)} == {"argmax"}
    (run / OPERATING_POINT_FILE).unlink()
    assert main(["report", str(test), "--threshold-from", str(val), "--run", str(run), "--out",
                 str(tmp_path / "report"), "--bootstrap", "20", "--target-sensitivity", "1.0"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    point = read_operating_point(run)
    assert point is not None and point.threshold == pytest.approx(report["threshold"])
    assert point.rule == "sensitivity>=1" and point.sensitivity == 1.0 and point.source == "val.csv"


def test_predict_applies_the_operating_point_and_an_empty_folder_stops(study, tmp_path, capsys):
    _, run, _ = study
    folder = tmp_path / "in"
    for i in range(3):
        write_nifti(folder / f"n{i}.nii.gz", volume(80 + i))
    probe = _read(predict(run, folder, tmp_path / "probe.csv", workers=0, threshold="argmax").out)
    lowest, middle = sorted(float(r["prob_yes"]) for r in probe)[:2]
    point = fix_operating_point(np.array([0, 1]), np.array([lowest, middle]), "youden", 0.9, positive_class="yes",
                                source="val.csv")
    assert point.threshold == pytest.approx((lowest + middle) / 2)  # the middle of the validation gap
    write_operating_point(run, point)
    rows = _read(predict(run, folder, tmp_path / "preds.csv", workers=0).out)
    assert [r["pred"] for r in rows] == ["yes" if float(r["prob_yes"]) >= point.threshold else "no" for r in rows]
    assert sorted(r["pred"] for r in rows) == ["no", "yes", "yes"]
    assert {r["threshold"] for r in rows} == {f"{point.threshold:.10g}"}
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--run", str(run), str(tmp_path / "empty"), "--out", str(tmp_path / "e.csv")]) == 2
    assert "no images found in" in capsys.readouterr().err
    assert not (tmp_path / "e.csv").exists()
