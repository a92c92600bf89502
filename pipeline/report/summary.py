"""The parts of the report a reader looks at first: the summary block, the errors to review and the run.

:func:`run_summary` is what ``report.json`` records about the run directory (``--run``): key config values,
labels, the weights report (each entry shortened), the training summary of :mod:`pipeline.report.training` and
the run's operating point. The ``*_section`` functions turn ``report.json`` into plain, formatted values for the
page template (numbers as text, None where undefined).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from pipeline.config import config_to_dict
from pipeline.report.inputs import RunInfo
from pipeline.report.plots import training_curve
from pipeline.report.training import training_summary

_CONFIG_KEYS = (
    "data.task", "data.classes", "data.label_columns", "data.patient_column", "transforms.spatial_dims",
    "transforms.size", "transforms.spacing", "transforms.intensity", "transforms.augment", "model.name",
    "model.members", "model.pretrained", "transfer.strategy", "train.epochs", "train.batch_size", "train.lr",
    "train.optimizer", "train.scheduler", "train.seed", "train.key_metric", "eval.threshold",
    "eval.target_sensitivity", "eval.bootstrap", "eval.min_cases",
)
#: Weights-report entries shown in the short table (the rest is folded).
_WEIGHTS_SHORT = ("model", "source", "kind", "sha256", "loaded_fraction", "strict")


def run_summary(run: RunInfo) -> dict[str, Any]:
    """The run's key config values, labels, weights report (shortened), training summary and operating point."""
    summary: dict[str, Any] = {"path": run.path.name}
    if run.config is not None:
        values = config_to_dict(run.config)
        summary["config"] = {key: values[key.split(".")[0]][key.split(".")[1]] for key in _CONFIG_KEYS}
    if run.labels is not None:
        summary["labels"] = run.labels
    if run.weights_report is not None:
        summary["weights_report"] = {key: _summarise(value) for key, value in run.weights_report.items()}
        summary["weights_counts"] = _weight_counts(run.weights_report)
    summary["training"] = training_summary(run)
    if run.operating_point is not None:
        summary["operating_point"] = asdict(run.operating_point)
    return summary


def _summarise(value: Any) -> str:
    """A short text for one weights-report entry: scalars as they are, lists and mappings by size and head."""
    if isinstance(value, list):
        head = ", ".join(str(v) for v in value[:5] if not isinstance(v, (list, dict)))
        return f"{len(value)} item(s)" + (f": {head}" if head else "") + (", ..." if len(value) > 5 else "")
    if isinstance(value, dict):
        parts = [f"{k}: {_summarise(v) if isinstance(v, (list, dict)) else v}" for k, v in list(value.items())[:8]]
        return "; ".join(parts) + ("; ..." if len(value) > 8 else "")
    return str(value)


def _weight_counts(report: dict[str, Any]) -> dict[str, int]:
    """Loaded / adapted / new tensors: the report's ``counts`` (new head tensors added), else list lengths."""
    counts = report.get("counts")
    if isinstance(counts, dict):
        out = {k: int(counts[k]) for k in ("loaded", "adapted", "new") if isinstance(counts.get(k), int)}
        head = report.get("head")
        if isinstance(head, dict):
            out["new"] = out.get("new", 0) + sum(isinstance(v, dict) and v.get("status") == "new"
                                                 for v in head.values())
        return out
    return {k: len(report[k]) for k in ("loaded", "adapted", "new") if isinstance(report.get(k), (list, dict))}


def threshold_text(value: float) -> str:
    """A threshold with 3 decimals, more when it lies near 0 or 1 (two significant digits of ``t`` and ``1 - t``).

    >>> threshold_text(0.139), threshold_text(0.003484), threshold_text(0.999588), threshold_text(1.0)
    ('0.139', '0.0035', '0.99959', '1.000')
    """
    margin = min(value, 1.0 - value)
    digits = 3 if margin <= 0 else min(8, max(3, math.ceil(-math.log10(margin)) + 1))
    return f"{value:.{digits}f}"


def fmt(value: Any, digits: int = 3) -> str | None:
    """A metric as shown: floats to ``digits`` decimals, None (undefined) kept for the template to mark."""
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def title(report: dict[str, Any]) -> str:
    """``Validation report: run R, split S`` (the predictions file when no run is given)."""
    what = f"run {report['run']['path']}" if "run" in report else report["source"]
    split = report.get("split")
    return f"Validation report: {what}, " + (f"split {split}" if split else "all rows (no split column)")


def summary_section(report: dict[str, Any]) -> dict[str, Any]:
    """The summary block: cases per class, the operating point and its origin, AUC and the rates with CIs."""
    overall, task = report["overall"], report["task"]
    rows: list[tuple[str, str]] = []
    if task == "binary":
        positive = str(report["positive_class"])
        negative = next((str(c) for c in report["classes"] if str(c) != positive), "negative")
        cases = f"{overall['n']}: {overall['n_pos']} {positive} (positive), {overall['n'] - overall['n_pos']} {negative}"
        rows.append(("cases", cases))
    elif task in ("multiclass", "multilabel"):
        counts = ", ".join(f"{r['n_pos']} {c}" for c, r in overall["per_class"].items())
        rows.append(("cases", f"{overall['n']}: {counts}"))
    else:
        rows.append(("cases", str(overall["n"])))
    if task == "regression":
        rows.append(("MAE (95% CI)", _with_ci(overall, "mae")))
        return {"rows": rows}
    threshold = report["threshold"]
    point = (threshold_text(threshold) if isinstance(threshold, float) else
             "argmax" if threshold is None else ", ".join(f"{k} {threshold_text(v)}" for k, v in threshold.items()))
    rows.append(("operating point", f"{point}: {report['threshold_rule']}"))
    recorded = report.get("run", {}).get("operating_point")
    if recorded:
        rows.append(("run's recorded operating point", _recorded(recorded)))
    rows.append(("AUC (95% CI)" + (", macro" if task != "binary" else ""), _with_ci(overall, "auc")))
    if task == "binary":
        for label, key in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("PPV", "ppv"),
                           ("NPV", "npv")):
            rows.append((f"{label} (95% CI)", _with_ci(overall, key) + _fraction(overall, key)))
    return {"rows": rows}


def _recorded(point: dict[str, Any]) -> str:
    rates = ", ".join(f"{k} {point[k]:.3f}" for k in ("auc", "sensitivity", "specificity")
                      if isinstance(point.get(k), float))
    return (f"{threshold_text(point['threshold'])} for '{point['positive_class']}', {point['rule']} on the "
            f"{point['split']} split ({point['source']}, n={point['n']}{', ' + rates if rates else ''}), fixed "
            f"{point['date']}")


def _with_ci(obj: dict[str, Any], key: str) -> str:
    value = fmt(obj.get(key))
    if value is None:
        return "n/a"
    low, high = fmt(obj.get(f"{key}_ci_low")), fmt(obj.get(f"{key}_ci_high"))
    return f"{value} ({low}\N{EN DASH}{high})" if low is not None and high is not None else value


def _fraction(obj: dict[str, Any], key: str) -> str:
    """`` = tp/(tp+fn)`` style counts behind a rate, from the group's n and prevalence."""
    n, n_pos = obj.get("n"), obj.get("n_pos")
    value = obj.get(key)
    if not isinstance(n, int) or not isinstance(n_pos, int) or value is None:
        return ""
    if key == "sensitivity":
        return f"; {round(value * n_pos)}/{n_pos}"
    if key == "specificity":
        return f"; {round(value * (n - n_pos))}/{n - n_pos}"
    return ""


def misclassified_section(report: dict[str, Any]) -> dict[str, Any] | None:
    """The false positives and false negatives to review (binary tasks), probabilities formatted."""
    errors = report.get("misclassified")
    if not errors:
        return None
    columns = errors["key_columns"]

    def rows(kind: str) -> list[list[str]]:
        return [[str(case.get(c, "")) for c in columns] + [f"{case['probability']:.3f}"] for case in errors[kind]]

    return {"columns": columns, "threshold": threshold_text(errors["threshold"]),
            "false_positives": rows("false_positives"), "false_negatives": rows("false_negatives"),
            "n_false_positives": errors["n_false_positives"], "n_false_negatives": errors["n_false_negatives"]}


def run_section(run: dict[str, Any]) -> dict[str, Any]:
    """The run: training summary (cases, best epoch, curve), weights table and the folded details."""
    training = run.get("training") or {}
    cases = training.get("cases")
    classes = sorted({c for counts in cases.values() for c in counts}) if cases else []
    weights = run.get("weights_report") or {}
    short = [(k, weights[k]) for k in _WEIGHTS_SHORT if k in weights]
    details = [{"title": title_, "rows": [(str(k), str(v)) for k, v in run[key].items()]}
               for title_, key in (("Configuration", "config"), ("Labels", "labels"),
                                   ("Weights report, every entry", "weights_report")) if key in run]
    return {
        "path": str(run["path"]),
        "cases": [{"split": s, "counts": [counts.get(c, 0) for c in classes], "total": sum(counts.values())}
                  for s, counts in cases.items()] if cases else [],
        "classes": classes,
        "cases_note": training.get("cases_note", ""),
        "best": training.get("best"),
        "epochs": training.get("epochs", 0),
        "curve": training_curve(training["curve"], training.get("best")) if training.get("curve") else None,
        "weights": short,
        "weight_counts": run.get("weights_counts") or {},
        "details": details,
    }
