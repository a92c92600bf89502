"""Tests of pipeline.report.build (build_report, comparison) and the ``radpipe report`` command."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pipeline import statistics as M
from pipeline.cli import main
from pipeline.config import Config, DataConfig, EvalConfig, ModelConfig, save_config
from pipeline.errors import ManifestError
from pipeline.report.build import BINARY_KEYS, build_report
from pipeline.report.inputs import read_predictions_csv, read_run

TOP_KEYS = {"source", "task", "classes", "positive_class", "threshold", "threshold_rule", "n_bootstrap",
            "bootstrap_unit", "seed", "min_cases", "excluded", "overall", "cohorts", "split", "misclassified"}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _binary_frame(seed: int = 0, prefix: str = "t") -> pd.DataFrame:
    """Site A: good model; B: no signal (bad cohort); C: 5 positives (small); D: negatives only."""
    rng = np.random.default_rng(seed)
    parts = []
    for site, n_pos, n_neg, signal in (("A", 150, 150, 2.5), ("B", 100, 100, 0.0), ("C", 5, 20, 2.5),
                                       ("D", 0, 12, 2.5)):
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(int)
        p = _sigmoid(rng.normal(size=y.size) + signal * y - signal / 2)
        parts.append(pd.DataFrame({"site": site, "y": y, "p": p}))
    df = pd.concat(parts, ignore_index=True)
    n = len(df)
    return pd.DataFrame({
        "image": [f"{prefix}{i:04d}.nii.gz" for i in range(n)],
        "label": np.where(df["y"] == 1, "disease", "normal"),
        "patient_id": [f"P-{prefix}{i:04d}" for i in range(n)],
        "split": "test",
        "site": df["site"],
        "sex": rng.choice(["F", "M"], n),
        "pred": np.where(df["p"] >= 0.5, "disease", "normal"),
        "prob_normal": 1 - df["p"],
        "prob_disease": df["p"],
    })


def _csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _read(df: pd.DataFrame, tmp_path: Path, name: str = "pred.csv") -> pd.DataFrame:
    return read_predictions_csv(_csv(df, tmp_path / name))


def _val(tmp_path: Path) -> pd.DataFrame:
    val = _binary_frame(seed=1, prefix="v")
    val["split"] = "val"
    return _read(val, tmp_path, "val.csv")


def test_report_keys_values_and_flags(tmp_path: Path) -> None:
    test_df = _binary_frame()
    report = build_report(_read(test_df, tmp_path), ["site", "sex"], tmp_path / "rep", validation=_val(tmp_path),
                          n_bootstrap=300, seed=1)
    assert set(report) == TOP_KEYS
    assert report["positive_class"] == "disease" and report["classes"] == ["normal", "disease"]
    assert report["excluded"] == {"status_not_ok": 0, "missing_label": 0}
    for obj in [report["overall"], *report["cohorts"]["site"].values(), *report["cohorts"]["sex"].values()]:
        assert tuple(obj) == BINARY_KEYS
    y = (test_df["label"] == "disease").to_numpy()
    overall = report["overall"]
    assert overall["auc"] == pytest.approx(skm.roc_auc_score(y, test_df["prob_disease"]))
    assert overall["auc_ci_low"] < overall["auc"] < overall["auc_ci_high"]
    assert overall["flags"] == []
    site = report["cohorts"]["site"]
    assert site["A"]["flags"] == [] and site["A"]["n"] == 300
    assert "auc_below_overall" in site["B"]["flags"] and site["B"]["auc_ci_high"] < overall["auc"]
    assert site["C"]["flags"] == ["too_few_positives"] and site["C"]["n_pos"] == 5
    assert site["C"]["auc"] is not None and site["C"]["auc_ci_low"] is not None  # computed, but flagged
    assert site["D"]["auc"] is None and site["D"]["auc_ci_low"] is None and site["D"]["sensitivity"] is None
    assert {"single_class", "too_few_positives"} <= set(site["D"]["flags"])
    text = (tmp_path / "rep" / "report.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    table = pd.read_csv(tmp_path / "rep" / "metrics.csv", keep_default_na=False)
    assert list(table.columns) == ["cohort", "value", *BINARY_KEYS]
    assert len(table) == 1 + 4 + 2
    row_d = table[(table["cohort"] == "site") & (table["value"] == "D")].iloc[0]
    assert row_d["auc"] == "" and "single_class" in row_d["flags"]


def test_html_is_self_contained_and_marks_unstable(tmp_path: Path) -> None:
    build_report(_read(_binary_frame(), tmp_path), ["site"], tmp_path / "rep", n_bootstrap=50)
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["metrics.csv", "report.html", "report.json"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') >= 5  # ROC, calibration, confusion, ROC/cal by site
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    row_c = re.search(r"<tr class='unstable'><td class='l'>site=C</td>.*?</tr>", page)
    assert row_c and "unstable" in row_c.group(0) and "too_few_positives" in row_c.group(0)
    assert "not chosen on validation" in page


class _PageText(HTMLParser):
    """The text a browser shows (character references resolved, whitespace collapsed)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.parts))


def test_html_escapes_hostile_values_json_keeps_them(tmp_path: Path) -> None:
    script, cls, source = "<script>alert(1)</script>", 'a&b "c"', "x\"><img src=y>.csv"
    df = _binary_frame().rename(columns={"prob_disease": f"prob_{cls}"})
    df["label"] = df["label"].replace("disease", cls)
    df["site"] = df["site"].replace("A", script)
    build_report(_read(df, tmp_path), ["site"], tmp_path / "rep", source=source, n_bootstrap=20)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<script" not in page and "<img src=y" not in page
    assert script not in page and cls not in page and source not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parser = _PageText()
    parser.feed(page)
    text = parser.text()  # escaped once, not twice: the browser shows the raw values
    assert f"Validation report: {source}" in text and f"site={script}" in text
    assert f"classes: normal, {cls}; positive class: {cls}" in text and f"pred {cls}" in text
    raw = (tmp_path / "rep" / "report.json").read_text()
    assert script in raw
    report = json.loads(raw)
    assert report["source"] == source and report["classes"] == ["normal", cls] and report["positive_class"] == cls
    assert script in report["cohorts"]["site"]
    table = pd.read_csv(tmp_path / "rep" / "metrics.csv", keep_default_na=False)
    assert script in set(table["value"])


def test_youden_threshold_from_validation_applied_unchanged(tmp_path: Path) -> None:
    test_df, val = _binary_frame(), _val(tmp_path)
    report = build_report(_read(test_df, tmp_path), [], tmp_path / "rep", validation=val, validation_source="val.csv",
                          n_bootstrap=0)
    y_val = (val["label"] == "disease").to_numpy()
    expected = M.youden_threshold(y_val, val["prob_disease"].astype(float).to_numpy())
    assert report["threshold"] == expected
    assert "validation" in report["threshold_rule"] and "val.csv" in report["threshold_rule"]
    y = (test_df["label"] == "disease").to_numpy()
    call = test_df["prob_disease"].to_numpy() >= expected
    assert report["overall"]["sensitivity"] == pytest.approx(call[y].mean())
    assert report["overall"]["specificity"] == pytest.approx(1 - call[~y].mean())
    assert "threshold_not_from_validation" not in report["overall"]["flags"]
    cfg = EvalConfig(threshold="sensitivity", target_sensitivity=0.95)
    report = build_report(_read(test_df, tmp_path), [], tmp_path / "rep2", validation=val, eval_config=cfg,
                          n_bootstrap=0)
    assert report["threshold"] == M.sensitivity_threshold(y_val, val["prob_disease"].astype(float).to_numpy(), 0.95)


def test_without_validation_threshold_is_half_and_flagged(tmp_path: Path) -> None:
    report = build_report(_read(_binary_frame(), tmp_path), ["site"], tmp_path / "rep", n_bootstrap=0)
    assert report["threshold"] == 0.5
    assert "threshold_not_from_validation" in report["overall"]["flags"]
    assert "threshold_not_from_validation" in report["cohorts"]["site"]["A"]["flags"]
    assert report["overall"]["auc_ci_low"] is None  # no resamples, no CI


def test_validation_must_not_hold_test_cases(tmp_path: Path) -> None:
    test_df = _binary_frame()
    val = test_df.copy()
    val["split"] = "val"
    with pytest.raises(ManifestError, match="also in"):
        build_report(_read(test_df, tmp_path), [], tmp_path / "rep", validation=_read(val, tmp_path, "v.csv"))
    with pytest.raises(ManifestError, match="split"):
        build_report(_read(test_df, tmp_path), [], tmp_path / "rep",
                     validation=_read(_binary_frame(prefix="x"), tmp_path, "v.csv"))


def test_failed_rows_excluded_and_counted(tmp_path: Path) -> None:
    df = _binary_frame().astype(object)
    df["status"] = "ok"
    df["error"] = ""
    df.loc[:9, "status"] = "error"
    df.loc[:9, ["prob_normal", "prob_disease", "pred"]] = ""
    df.loc[10:14, "label"] = ""
    report = build_report(_read(df, tmp_path), [], tmp_path / "rep", n_bootstrap=0)
    assert report["excluded"] == {"status_not_ok": 10, "missing_label": 5}
    assert report["overall"]["n"] == len(df) - 15


def test_patients_with_several_cases_are_resampled_together(tmp_path: Path) -> None:
    df = _binary_frame()
    df["patient_id"] = [f"P-{i // 2}" for i in range(len(df))]
    report = build_report(_read(df, tmp_path), [], tmp_path / "rep", n_bootstrap=100)
    assert report["bootstrap_unit"] == "patient"
    df = df.rename(columns={"patient_id": "patient_key"})
    assert build_report(_read(df, tmp_path), [], tmp_path / "rep", n_bootstrap=100)["bootstrap_unit"] == "patient"


def test_positive_class_override(tmp_path: Path) -> None:
    df = _binary_frame()
    report = build_report(_read(df, tmp_path), [], tmp_path / "rep", positive="normal", n_bootstrap=0)
    assert report["positive_class"] == "normal"
    assert report["overall"]["n_pos"] == int((df["label"] == "normal").sum())
    assert report["overall"]["auc"] == pytest.approx(skm.roc_auc_score(df["label"] == "normal", df["prob_normal"]))


def test_compare_runs_delong_and_refuses_other_cases(tmp_path: Path) -> None:
    a = _binary_frame()
    b = a.copy()
    rng = np.random.default_rng(3)
    b["prob_disease"] = np.clip(b["prob_disease"] + rng.normal(scale=0.3, size=len(b)), 0, 1)
    b["prob_normal"] = 1 - b["prob_disease"]
    b = b.sample(frac=1.0, random_state=0)  # row order must not matter
    report = build_report(_read(a, tmp_path), [], tmp_path / "rep", compare=_read(b, tmp_path, "b.csv"),
                          compare_source="b.csv", n_bootstrap=0)
    c = report["comparison"]
    b = b.set_index("image").loc[a["image"]]
    expected = M.delong_test(a["label"] == "disease", a["prob_disease"], b["prob_disease"])
    assert c["z"] == pytest.approx(expected.z) and c["p_value"] == pytest.approx(expected.p_value)
    assert c["auc_a"] > c["auc_b"] and c["n"] == len(a) and c["difference"] == pytest.approx(c["auc_a"] - c["auc_b"])
    assert "Comparison with b.csv" in (tmp_path / "rep" / "report.html").read_text()
    short = _read(a.drop(index=[3]), tmp_path, "short.csv")
    with pytest.raises(ManifestError, match=r"t0003\.nii\.gz"):
        build_report(_read(a, tmp_path), [], tmp_path / "rep", compare=short, compare_source="short.csv")


def test_bad_input_names_file_column_and_fix(tmp_path: Path) -> None:
    df = _binary_frame()
    with pytest.raises(ManifestError, match=r"pred\.csv.*'scanner'.*fix"):
        build_report(_read(df, tmp_path), ["scanner"], tmp_path / "rep", source="pred.csv")
    with pytest.raises(ManifestError, match="prob_"):
        build_report(_read(df.drop(columns=["prob_normal", "prob_disease"]), tmp_path), [], tmp_path / "rep")
    bad = df.copy()
    bad.loc[4, "label"] = "tumour"
    with pytest.raises(ManifestError, match=r"'label'.*row 6: 'tumour'"):
        build_report(_read(bad, tmp_path), [], tmp_path / "rep")
    bad = df.copy()
    bad.loc[2, "prob_disease"] = 4.2
    with pytest.raises(ManifestError, match=r"\[0, 1\]"):
        build_report(_read(bad, tmp_path), [], tmp_path / "rep")


def test_multiclass_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    classes = ["cn", "mci", "ad"]
    y = np.r_[np.repeat([0, 1, 2], 60), [2] * 5]
    logits = rng.normal(size=(y.size, 3))
    logits[np.arange(y.size), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame({"image": [f"m{i}" for i in range(y.size)], "label": [classes[k] for k in y],
                       "site": ["A"] * 180 + ["B"] * 5, **{f"prob_{c}": probs[:, k] for k, c in enumerate(classes)}})
    report = build_report(_read(df, tmp_path), ["site"], tmp_path / "rep", n_bootstrap=100)
    overall = report["overall"]
    assert report["task"] == "multiclass" and report["threshold"] is None
    assert overall["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert overall["confusion_matrix"] == skm.confusion_matrix(y, probs.argmax(1)).tolist()
    assert overall["per_class"]["ad"]["n_pos"] == 65
    assert overall["auc_ci_low"] < overall["auc"] < overall["auc_ci_high"]
    site_b = report["cohorts"]["site"]["B"]
    assert site_b["auc"] is None and "single_class" in site_b["flags"]


def test_multilabel_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 2, (200, 2))
    probs = _sigmoid(rng.normal(size=(200, 2)) + 1.5 * truth - 0.75)
    df = pd.DataFrame({"image": [f"l{i}" for i in range(200)], "effusion": truth[:, 0], "nodule": truth[:, 1],
                       "prob_effusion": probs[:, 0], "prob_nodule": probs[:, 1]})
    report = build_report(_read(df, tmp_path), [], tmp_path / "rep", n_bootstrap=100)
    assert report["task"] == "multilabel" and report["threshold"] == {"effusion": 0.5, "nodule": 0.5}
    per = report["overall"]["per_class"]
    assert per["nodule"]["auc"] == pytest.approx(skm.roc_auc_score(truth[:, 1], probs[:, 1]))
    assert report["overall"]["auc"] == pytest.approx(skm.roc_auc_score(truth, probs, average="macro"))


def test_multilabel_truth_columns_from_labels_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    truth = rng.integers(0, 2, (120, 2))
    probs = _sigmoid(rng.normal(size=(120, 2)) + 2 * truth - 1)
    df = pd.DataFrame({"image": [f"l{i}" for i in range(120)], "has_eff": truth[:, 0], "has_nod": truth[:, 1],
                       "prob_effusion": probs[:, 0], "prob_nodule": probs[:, 1]})
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.json").write_text(json.dumps({"task": "multilabel", "classes": ["effusion", "nodule"],
                                                 "label_columns": ["has_eff", "has_nod"]}))
    report = build_report(_read(df, tmp_path), [], tmp_path / "rep", n_bootstrap=20, run=read_run(run))
    assert report["overall"]["per_class"]["effusion"]["auc"] == pytest.approx(
        skm.roc_auc_score(truth[:, 0], probs[:, 0]))


def test_regression_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(50, 10, 150)
    pred = y + rng.normal(0, 5, 150)
    df = pd.DataFrame({"image": [f"r{i}" for i in range(150)], "label": y, "pred": pred,
                       "site": ["A"] * 145 + ["B"] * 5})
    report = build_report(_read(df, tmp_path), ["site"], tmp_path / "rep", n_bootstrap=200)
    assert report["task"] == "regression"
    overall = report["overall"]
    assert set(overall) == {"n", "mae", "mae_ci_low", "mae_ci_high", "rmse", "pearson_r", "flags"}
    assert overall["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert overall["mae_ci_low"] < overall["mae"] < overall["mae_ci_high"]
    assert report["cohorts"]["site"]["B"]["flags"] == ["too_few_cases"]


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    cfg = Config(data=DataConfig(patient_column="patient_id"), model=ModelConfig(name="resnet10"),
                 eval=EvalConfig(bootstrap=80, cohorts=("site",), min_cases=3))
    save_config(cfg, run / "config.yaml")
    (run / "labels.json").write_text(json.dumps({"task": "binary", "classes": ["normal", "disease"]}))
    (run / "weights_report.json").write_text(json.dumps({"source": "medicalnet:resnet_10.pth",
                                                         "loaded": ["conv1.weight", "layer1.0.conv1.weight"],
                                                         "skipped": {"fc.weight": "new head"}}))
    return run


def test_run_directory_adds_config_and_weights_summary(tmp_path: Path) -> None:
    run = read_run(_run_dir(tmp_path))
    report = build_report(_read(_binary_frame(), tmp_path), ["site"], tmp_path / "rep", eval_config=run.config.eval,
                          run=run)
    assert report["n_bootstrap"] == 80 and report["min_cases"] == 3
    assert report["cohorts"]["site"]["C"]["flags"] == ["threshold_not_from_validation"]  # 5 positives >= 3
    assert report["run"]["config"]["model.name"] == "resnet10"
    assert report["run"]["weights_report"]["loaded"].startswith("2 item(s)")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "resnet10" in page and "Weights report" in page and "medicalnet:resnet_10.pth" in page


def test_cli_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _csv(_binary_frame(), tmp_path / "pred.csv")
    val = _csv(_binary_frame(seed=1, prefix="v").assign(split="val"), tmp_path / "val.csv")
    out = tmp_path / "rep"
    code = main(["report", str(pred), "--cohort", "site", "--out", str(out), "--threshold-from", str(val),
                 "--bootstrap", "50", "--seed", "3"])
    assert code == 0
    assert str(out / "report.html") in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["n_bootstrap"] == 50 and report["seed"] == 3 and "site" in report["cohorts"]
    code = main(["report", str(pred), "--out", str(tmp_path / "rep2"), "--run", str(_run_dir(tmp_path)),
                 "--target-sensitivity", "0.9", "--threshold-from", str(val)])
    assert code == 0
    report = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert list(report["cohorts"]) == ["site"] and "sensitivity >= 0.9" in report["threshold_rule"]


def test_cli_missing_cohort_column_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _csv(_binary_frame(), tmp_path / "pred.csv")
    code = main(["report", str(pred), "--cohort", "scanner", "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "'scanner'" in err and "pred.csv" in err
    assert not (tmp_path / "rep").exists()
