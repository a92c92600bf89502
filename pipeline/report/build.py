"""Validation report per cohort: ``report.json``, ``metrics.csv`` and a self-contained ``report.html``.

:func:`build_report` computes, for all cases and for every value of every cohort column, the AUC with a
bootstrap 95% CI (class-stratified, whole patients resampled when a patient has several cases), the metrics at
an operating point fixed on **validation** predictions (never on the evaluated cases), Brier score and ECE, and
flags what a reviewer must not overlook: cohorts too small to quote (``too_few_positives`` /
``too_few_negatives``), a single class (``single_class``, AUC null), a cohort whose AUC CI lies entirely below the
overall AUC (``auc_below_overall``), and a threshold not taken from validation (``threshold_not_from_validation``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import statistics as M
from pipeline.config import EvalConfig
from pipeline.errors import ManifestError
from pipeline.files import atomic_open, write_atomic
from pipeline.report.cases import misclassified
from pipeline.report.compare import compare_predictions
from pipeline.report.curves import operating_point_xy, pr_points, roc_band
from pipeline.report.inputs import (
    Predictions,
    RunInfo,
    check_columns,
    parse_predictions,
)
from pipeline.report.page import write_html
from pipeline.report.rates import CI_KEYS, one_vs_rest, rate_cis
from pipeline.report.summary import run_summary

#: The metrics at the threshold and the probability scores, as :func:`pipeline.statistics.binary_metrics` names them.
RATE_KEYS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy", "brier", "ece")
BINARY_KEYS = ("n", "n_pos", "prevalence", "auc", "auc_ci_low", "auc_ci_high", *RATE_KEYS, "threshold", *CI_KEYS,
               "flags")
REGRESSION_KEYS = ("n", "mae", "mae_ci_low", "mae_ci_high", "rmse", "pearson_r", "flags")
MISSING_VALUE = "(missing)"
PATIENT_COLUMNS = ("patient_id", "patient_key")


def build_report(
    predictions: pd.DataFrame, cohorts: Sequence[str], out_dir: str | Path, *, source: str = "predictions.csv",
    validation: pd.DataFrame | None = None, validation_source: str = "validation predictions",
    compare: pd.DataFrame | None = None, compare_source: str = "other predictions", id_column: str = "image",
    eval_config: EvalConfig | None = None, n_bootstrap: int | None = None, seed: int = 0,
    positive: str | None = None, patient_column: str | None = None, run: RunInfo | None = None,
) -> dict[str, Any]:
    """Compute the per-cohort validation report and write it to ``out_dir``.

    Args:
        predictions: the predictions table (strings, as read by ``read_predictions_csv``).
        cohorts: columns whose values are reported separately (e.g. ``site``, ``sex``).
        out_dir: folder receiving ``report.json``, ``metrics.csv`` and ``report.html``.
        source: file name of ``predictions`` (messages and report header).
        validation: validation predictions fixing the operating point; None uses 0.5 and flags it.
        validation_source: file name of ``validation``.
        compare: predictions of another model on the same cases (DeLong test of the AUC difference).
        compare_source: file name of ``compare``.
        id_column: column matching the cases of ``compare`` (and checking that validation cases differ).
        eval_config: threshold rule, target sensitivity, resamples and ``min_cases`` (defaults if None).
        n_bootstrap: resamples of the CIs; None takes ``eval_config.bootstrap``.
        seed: seed of the bootstrap.
        positive: positive class of a binary task (default: the second ``prob_`` column).
        patient_column: column grouping a patient's cases; None takes the run's ``data.patient_column`` or the
            first of ``patient_id`` / ``patient_key`` present.
        run: the run directory read by ``read_run``; adds its config and weights report.

    Returns:
        The content of ``report.json`` (NaN as None).

    Raises:
        ManifestError: a column is missing, holds bad values, or the compared cases differ.
    """
    cfg = eval_config or EvalConfig()
    task, classes, label_columns = _run_task(run)
    pred = parse_predictions(predictions, source, task, classes, positive, label_columns)
    check_columns(pred.frame, cohorts, source, "cohort")
    clusters = _clusters(pred.frame, _patient_column(pred, patient_column, run))
    threshold, rule, from_validation = _threshold(pred, validation, validation_source, id_column, cfg, label_columns,
                                                  run)
    n_boot = cfg.bootstrap if n_bootstrap is None else n_bootstrap
    ctx = _Context(pred, threshold, from_validation, clusters, n_boot, seed, cfg.min_cases)
    overall, cohort_json, plots = _measure_groups(ctx, cohorts)
    report: dict[str, Any] = {**_settings(ctx, rule), "overall": overall, "cohorts": cohort_json}
    if pred.task == "binary":
        report["misclassified"] = misclassified(pred, threshold, id_column)
        _add_binary_curves(ctx, plots["overall"])
    if compare is not None:
        other = parse_predictions(compare, compare_source, pred.task, pred.classes, report["positive_class"],
                                  label_columns, classes_from=source)
        report["comparison"] = compare_predictions(pred, other, id_column)
    if run is not None:
        report["run"] = run_summary(run)
    report = to_json(report)
    write_report(report, plots, out_dir)
    return report


def write_report(report: dict[str, Any], plots: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``report.json``, ``metrics.csv`` and ``report.html`` to ``out_dir``, each file whole or not at all.

    Args:
        report: the JSON content built by :func:`build_report`.
        plots: the plot data of the groups (see :func:`pipeline.report.page.write_html`).
        out_dir: the folder, created when missing.
    """
    out = Path(out_dir)
    write_atomic(out / "report.json", json.dumps(report, indent=2))
    with atomic_open(out / "metrics.csv", "w", newline="") as f:
        metrics_table(report).to_csv(f, index=False)
    write_html(report, plots, out / "report.html")


def _patient_column(pred: Predictions, column: str | None, run: RunInfo | None) -> str | None:
    """The column grouping a patient's cases; None makes every case its own patient.

    The column given (checked), else the run's ``data.patient_column`` when the file has it, else the first of
    :data:`PATIENT_COLUMNS` present.
    """
    if column is None and run is not None and run.config is not None:
        column = run.config.data.patient_column if run.config.data.patient_column in pred.frame else None
    if column is None:
        return next((c for c in PATIENT_COLUMNS if c in pred.frame.columns), None)
    check_columns(pred.frame, [column], pred.source, "patient")
    return column


def _measure_groups(
    ctx: _Context, cohorts: Sequence[str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """The JSON object of all cases, those of every value of every cohort column, and the plot data of each.

    Values are sorted, blank ones reported as :data:`MISSING_VALUE`, last.
    """
    overall, overall_plot = ctx.group(np.ones(len(ctx.pred.frame), dtype=bool), None)
    cohort_json: dict[str, dict[str, Any]] = {}
    plots: dict[str, Any] = {"overall": overall_plot, "cohorts": {}}
    for column in cohorts:
        values = ctx.pred.frame[column].str.strip().replace("", MISSING_VALUE)
        cohort_json[column], plots["cohorts"][column] = {}, {}
        for value in sorted(values.unique(), key=lambda v: (v == MISSING_VALUE, v)):
            obj, plot = ctx.group((values == value).to_numpy(), overall)
            cohort_json[column][value], plots["cohorts"][column][value] = obj, plot
    return overall, cohort_json, plots


def _settings(ctx: _Context, rule: str) -> dict[str, Any]:
    """The report's header: what was evaluated and how (task, classes, operating point, bootstrap)."""
    pred = ctx.pred
    splits = sorted(set(pred.frame["split"].str.strip()) - {""}) if "split" in pred.frame.columns else []
    return {
        "source": pred.source,
        "split": ", ".join(splits) or None,
        "task": pred.task,
        "classes": list(pred.classes),
        "positive_class": pred.classes[pred.positive] if pred.positive is not None else None,
        "threshold": ctx.threshold,
        "threshold_rule": rule,
        "n_bootstrap": ctx.n_boot,
        "bootstrap_unit": "patient" if _repeats(ctx.clusters) else "case",
        "seed": ctx.seed,
        "min_cases": ctx.min_cases,
        "excluded": pred.excluded,
    }


def _run_task(run: RunInfo | None) -> tuple[str | None, list[str] | None, tuple[str, ...]]:
    task, classes, label_columns = None, None, ("label",)
    if run is not None and run.config is not None:
        task, label_columns = run.config.data.task, tuple(run.config.data.label_columns)
    if run is not None and run.labels is not None:
        task = run.labels.get("task", task)
        classes = [str(c) for c in run.labels.get("classes", [])] or None
        if isinstance(run.labels.get("label_columns"), list) and run.labels["label_columns"]:
            label_columns = tuple(str(c) for c in run.labels["label_columns"])
    return task, classes, label_columns


def _threshold(
    pred: Predictions, validation: pd.DataFrame | None, source: str, id_column: str, cfg: EvalConfig,
    label_columns: Sequence[str], run: RunInfo | None = None,
) -> tuple[Any, str, bool]:
    """Operating point(s) from validation predictions, else the run's ``operating_point.json``, else 0.5 (flagged)."""
    if pred.task == "multiclass":
        unused = "; validation predictions not needed" if validation is not None else ""
        return None, f"argmax (the class of highest probability){unused}", True
    if pred.task == "regression":
        return None, "none (regression)", True
    point = run.operating_point if run is not None else None
    if (validation is None and point is not None and pred.task == "binary" and pred.positive is not None
            and point.positive_class == pred.classes[pred.positive]):
        return point.threshold, f"the run's operating point: {point.describe()}, applied unchanged", True
    if validation is None:
        fixed: Any = 0.5 if pred.task == "binary" else {c: 0.5 for c in pred.classes}
        rule = "fixed 0.5: no validation predictions given (--threshold-from), not a validated operating point"
        return fixed, rule, False
    positive = pred.classes[pred.positive] if pred.positive is not None else None
    val = parse_predictions(validation, source, pred.task, pred.classes, positive, label_columns,
                            classes_from=pred.source)
    _check_not_test(val, pred, id_column)
    rule = cfg.threshold
    words = "Youden's J" if rule == "youden" else f"sensitivity >= {cfg.target_sensitivity:g}"
    text = f"{words} on validation predictions {source} (n={len(val.frame)}), applied unchanged"

    def pick(y: np.ndarray, score: np.ndarray, name: str) -> float:
        try:
            return M.choose_threshold(y, score, rule, cfg.target_sensitivity)
        except ValueError as e:
            raise ManifestError(f"{source}: cannot fix the threshold of {name}: {e}; use a validation set with "
                                "positive and negative cases") from e

    if pred.task == "binary":
        return pick(val.truth, val.positive_score, positive or "the positive class"), text, True
    return {c: pick(val.truth[:, k], val.scores[:, k], c) for k, c in enumerate(pred.classes)}, text, True


def _check_not_test(val: Predictions, pred: Predictions, id_column: str) -> None:
    if "split" in val.frame.columns and val.frame["split"].str.strip().str.lower().eq("test").any():
        raise ManifestError(f"{val.source}: column 'split' holds 'test' rows; the threshold must be fixed on "
                            "validation predictions only (radpipe evaluate --split val)")
    if id_column in val.frame.columns and id_column in pred.frame.columns:
        shared = sorted(set(val.frame[id_column]) & set(pred.frame[id_column]))
        if shared:
            raise ManifestError(f"{val.source}: {len(shared)} case(s) also in {pred.source} (by '{id_column}'), e.g. "
                                f"{shared[:3]}; the threshold must come from validation cases only")


def _clusters(frame: pd.DataFrame, column: str | None) -> np.ndarray | None:
    if column is None:
        return None
    values = frame[column].str.strip().to_numpy(dtype=object)
    blank = values == ""
    values[blank] = [f"\0case{i}" for i in np.flatnonzero(blank)]  # an unknown patient is its own cluster
    return values


def _repeats(clusters: np.ndarray | None) -> bool:
    return clusters is not None and len(set(clusters)) < len(clusters)


class _Context:
    """Everything shared by the groups of one report."""

    def __init__(self, pred: Predictions, threshold: Any, from_validation: bool, clusters: np.ndarray | None,
                 n_boot: int, seed: int, min_cases: int) -> None:
        self.pred, self.threshold, self.from_validation = pred, threshold, from_validation
        self.clusters, self.n_boot, self.seed, self.min_cases = clusters, n_boot, seed, min_cases

    def _ci(self, y: np.ndarray, score: np.ndarray, mask: np.ndarray) -> M.BootstrapCI:
        clusters = None if self.clusters is None else self.clusters[mask]
        return M.bootstrap_auc_ci(y, score, clusters, self.n_boot, self.seed)

    def group(self, mask: np.ndarray, overall: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON object and the plot data of one group of cases."""
        p = self.pred
        if p.task == "regression":
            return self._regression(mask)
        if p.task == "binary":
            y, score = p.truth[mask], p.positive_score[mask]
            m = M.binary_metrics(y, score, self.threshold)
            ci = self._ci(y, score, mask) if np.isfinite(m["auc"]) else None
            counts = [(m["n_pos"], m["n"] - m["n_pos"])]
            plot = {"roc": {"": _roc(y, score)}, "calibration": {"": M.calibration_bins(y, score)},
                    "confusion": m.pop("confusion"), "labels": _binary_labels(p)}
        else:
            m, ci, counts, plot = self._multi(mask)
        obj = {"n": m["n"], "n_pos": m.get("n_pos"), "prevalence": m.get("prevalence"), "auc": m["auc"],
               "auc_ci_low": ci.low if ci else None, "auc_ci_high": ci.high if ci else None}
        obj.update({k: m[k] for k in RATE_KEYS})
        obj["threshold"] = self.threshold if p.task == "binary" else None
        obj.update(rate_cis(*np.ravel(plot["confusion"])) if p.task == "binary" else dict.fromkeys(CI_KEYS))
        obj["flags"] = self._flags(counts, obj, overall)
        if "per_class" in m:
            obj["per_class"] = m["per_class"]
        if p.task == "multiclass":
            obj["confusion_matrix"] = plot["confusion"]
        return obj, plot

    def _flags(self, counts: list[tuple[int, int]], obj: dict[str, Any], overall: dict[str, Any] | None) -> list[str]:
        flags = []
        if any(pos == 0 or neg == 0 for pos, neg in counts) and not np.isfinite(_num(obj["auc"])):
            flags.append("single_class")
        if any(pos < self.min_cases for pos, _ in counts):
            flags.append("too_few_positives")
        if any(neg < self.min_cases for _, neg in counts):
            flags.append("too_few_negatives")
        if overall is not None and _num(obj["auc_ci_high"]) < _num(overall["auc"]):
            flags.append("auc_below_overall")
        if not self.from_validation:
            flags.append("threshold_not_from_validation")
        return flags

    def _multi(self, mask: np.ndarray) -> tuple[dict[str, Any], M.BootstrapCI, list[tuple[int, int]], dict[str, Any]]:
        p = self.pred
        probs = p.scores[mask]
        k = len(p.classes)
        if p.task == "multiclass":
            y = p.truth[mask]
            m = M.multiclass_metrics(y, probs)
            onehot = np.eye(k)[y] if y.size else np.zeros((0, k))
            ci = M.bootstrap_ci(lambda w: M.macro_auc(onehot, probs, w), y,
                                None if self.clusters is None else self.clusters[mask], self.n_boot, self.seed)
            confusion = m.pop("confusion")
        else:
            onehot = p.truth[mask]
            per_label = [M.binary_metrics(onehot[:, j], probs[:, j], self.threshold[c])
                         for j, c in enumerate(p.classes)]
            m = {"n": int(mask.sum()), "per_class": per_label}
            for key in ("auc", *RATE_KEYS):
                values = [r[key] for r in per_label if np.isfinite(r[key])]
                m[key] = float(np.mean(values)) if values else float("nan")
            # macro over the labels defined in this group; a resample losing one of them is dropped (n_valid)
            defined = [j for j, r in enumerate(per_label) if np.isfinite(r["auc"])]
            ci = M.bootstrap_ci(lambda w: np.mean([M.weighted_auc(onehot[:, j], probs[:, j], w) for j in defined],
                                                  axis=0) if defined else np.full(len(w), np.nan),
                                np.zeros(len(onehot), dtype=int),
                                None if self.clusters is None else self.clusters[mask], self.n_boot, self.seed)
            confusion = {c: r.pop("confusion") for c, r in zip(p.classes, per_label)}
        per_class = {}
        counts = []
        for j, (c, r) in enumerate(zip(p.classes, m["per_class"])):
            class_ci = self._ci(onehot[:, j], probs[:, j], mask) if np.isfinite(r["auc"]) else None
            per_class[c] = {"n_pos": r["n_pos"], "prevalence": r["prevalence"], "auc": r["auc"],
                            "auc_ci_low": class_ci.low if class_ci else None,
                            "auc_ci_high": class_ci.high if class_ci else None,
                            **{key: r[key] for key in ("sensitivity", "specificity", "ppv", "npv", "f1")},
                            "threshold": self.threshold[c] if p.task == "multilabel" else None,
                            **rate_cis(*one_vs_rest(confusion, j, c))}
            counts.append((r["n_pos"], m["n"] - r["n_pos"]))
        m["per_class"] = per_class
        plot = {"roc": {c: _roc(onehot[:, j], probs[:, j]) for j, c in enumerate(p.classes)},
                "calibration": ({"top label": M.calibration_bins(probs.argmax(1) == p.truth[mask], probs.max(1))}
                                if p.task == "multiclass" else
                                {c: M.calibration_bins(onehot[:, j], probs[:, j]) for j, c in enumerate(p.classes)}),
                "confusion": confusion, "labels": list(p.classes)}
        return m, ci, counts, plot

    def _regression(self, mask: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        y, pred = self.pred.truth[mask], self.pred.scores[mask]
        m = M.regression_metrics(y, pred)
        clusters = None if self.clusters is None else self.clusters[mask]
        ci = M.bootstrap_mae_ci(y, pred, clusters, self.n_boot, self.seed)
        flags = ["too_few_cases"] if m["n"] < self.min_cases else []
        obj = {"n": m["n"], "mae": m["mae"], "mae_ci_low": ci.low, "mae_ci_high": ci.high, "rmse": m["rmse"],
               "pearson_r": m["pearson_r"], "flags": flags}
        return obj, {"scatter": (y.tolist(), pred.tolist())}


def _add_binary_curves(ctx: _Context, plot: dict[str, Any]) -> None:
    """Add the ROC band, the precision-recall curve and the operating point to the plot data of all cases."""
    p = ctx.pred
    plot["roc_band"] = roc_band(p.truth, p.positive_score, ctx.clusters, ctx.n_boot, ctx.seed)
    plot["pr"] = pr_points(p.truth, p.positive_score)
    plot["operating_point"] = operating_point_xy(p.truth, p.positive_score, ctx.threshold)


def _binary_labels(p: Predictions) -> list[str]:
    pos = p.classes[p.positive] if p.positive is not None else "positive"
    neg = [c for c in p.classes if c != pos]
    return [neg[0] if len(neg) == 1 else "negative", pos]


def _roc(y: np.ndarray, score: np.ndarray) -> tuple[list[float], list[float], float] | None:
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, score)
    return fpr.tolist(), tpr.tolist(), M.roc_auc(y, score)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def to_json(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays converted, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def metrics_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per group (overall, then every cohort value) with the scalar metrics and the flags."""
    keys = REGRESSION_KEYS if report["task"] == "regression" else BINARY_KEYS
    rows = [{"cohort": "overall", "value": "", **{k: report["overall"][k] for k in keys}}]
    for column, values in report["cohorts"].items():
        rows += [{"cohort": column, "value": value, **{k: obj[k] for k in keys}} for value, obj in values.items()]
    table = pd.DataFrame(rows, columns=["cohort", "value", *keys])
    table["flags"] = table["flags"].map(";".join)
    return table
