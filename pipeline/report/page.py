"""The self-contained HTML of a validation report: tables, plots as base64 PNG data URIs, methods, run summary.

The page is rendered from ``templates/report.html.j2`` with autoescaping on. This module only prepares plain
values for it (numbers formatted, None where a metric is undefined, plots as data URIs, tables as lists of dicts);
the template escapes every one of them. Plots come from :mod:`pipeline.report.plots`, the summary block, the
errors to review and the run section from :mod:`pipeline.report.summary`; the page has inline CSS only and no
script, so it can be mailed or archived as one file.
"""
from __future__ import annotations

import datetime as _dt
import functools
from pathlib import Path
from typing import Any

import jinja2

from pipeline import __version__
from pipeline.files import write_atomic
from pipeline.report.cases import TOP_N
from pipeline.report.plots import (
    calibration_panel,
    confusion_image,
    pr_panel,
    roc_panels,
    scatter_panel,
    unstable,
)
from pipeline.report.summary import (
    fmt,
    misclassified_section,
    run_section,
    summary_section,
    threshold_text,
    title,
)

_TEMPLATE = "report.html.j2"


def write_html(report: dict[str, Any], plots: dict[str, Any], path: str | Path) -> None:
    """Write the report page atomically: header, warnings, tables, plots per cohort, comparison, run, methods.

    Args:
        report: the content of ``report.json`` (as returned by ``build_report``).
        plots: the plot data of the groups: ``{"overall": ..., "cohorts": {column: {value: ...}}}``.
        path: the HTML file to write.
    """
    write_atomic(path, render_html(report, plots))


def render_html(report: dict[str, Any], plots: dict[str, Any]) -> str:
    """The report page as text; see :func:`write_html`."""
    return _environment().get_template(_TEMPLATE).render(page_values(report, plots))


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("pipeline.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def page_values(report: dict[str, Any], plots: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, as plain values: the header, warnings and one dict per section."""
    overall = report["overall"]
    groups = [(f"{column}={value}", obj) for column, values in report["cohorts"].items()
              for value, obj in values.items()]
    return {
        "title": title(report),
        "summary": summary_section(report),
        "misclassified": misclassified_section(report),
        "top_n": TOP_N,
        "source": report["source"],
        "version": __version__,
        "date": _dt.date.today().isoformat(),
        "task": report["task"],
        "regression": report["task"] == "regression",
        "classes": report["classes"],
        "positive_class": None if report["positive_class"] is None else str(report["positive_class"]),
        "n_cases": overall["n"],
        "excluded": ", ".join(f"{k} {v}" for k, v in report["excluded"].items()) or "none",
        "threshold_warning": "threshold_not_from_validation" in overall["flags"],
        "unstable": [name for name, obj in groups if unstable(obj)],
        "below": [name for name, obj in groups if "auc_below_overall" in obj["flags"]],
        "overall": _overall_section(report, plots),
        "cohorts": [_cohort_section(report, plots, column) for column in report["cohorts"]],
        "comparison": _comparison(report["comparison"]) if "comparison" in report else None,
        "run": run_section(report["run"]) if "run" in report else None,
        "methods": {"n_bootstrap": report["n_bootstrap"], "bootstrap_unit": report["bootstrap_unit"],
                    "seed": report["seed"], "threshold_rule": str(report["threshold_rule"]),
                    "threshold": str(report["threshold"]), "min_cases": report["min_cases"]},
    }


def _overall_section(report: dict[str, Any], plots: dict[str, Any]) -> dict[str, Any]:
    overall = report["overall"]
    multi = report["task"] in ("multiclass", "multilabel")
    section = {"table": _metric_rows([("overall", overall)]),
               "per_class": [{"name": c, **_formatted(r)} for c, r in overall["per_class"].items()] if multi else []}
    group = {"overall": (overall, plots["overall"])}
    if report["task"] == "regression":
        return {**section, "scatter": scatter_panel(group, "overall")}
    positive = str(report["positive_class"])
    return {**section,
            "roc": roc_panels(group, report["classes"] if multi else [], "ROC, all cases", extras=True),
            "pr": pr_panel(overall, plots["overall"], positive) if report["task"] == "binary" else None,
            "calibration": calibration_panel(group, "calibration"),
            "confusions": [confusion_image(matrix, labels, f"confusion matrix {name}".strip())
                           for name, matrix, labels in _confusions(plots["overall"])]}


def _cohort_section(report: dict[str, Any], plots: dict[str, Any], column: str) -> dict[str, Any]:
    overall, values, value_plots = report["overall"], report["cohorts"][column], plots["cohorts"][column]
    section = {"column": column,
               "table": _metric_rows([("overall", overall)] + [(f"{column}={v}", o) for v, o in values.items()])}
    groups = {"overall": (overall, plots["overall"]), **{v: (o, value_plots[v]) for v, o in values.items()}}
    if report["task"] == "regression":
        return {**section, "scatter": scatter_panel({v: g for v, g in groups.items() if v != "overall"}, f"by {column}")}
    multi = report["task"] in ("multiclass", "multilabel")
    return {**section,
            "roc": roc_panels(groups, report["classes"] if multi else [], f"ROC by {column}"),
            "calibration": calibration_panel(groups, f"calibration by {column}"),
            "confusions": [_confusion_table(matrix, labels, f"{column}={value} {name}".strip())
                           for value in values for name, matrix, labels in _confusions(value_plots[value])]}


def _metric_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One dict per group: its formatted metrics, flags, and the row's highlight (unstable, or CI below overall)."""
    return [{**_formatted(obj), "threshold": _threshold_text(obj.get("threshold")), "name": name, "flags": ", ".join(obj["flags"]), "flag_list": obj["flags"], "unstable": unstable(obj),
             "css": "unstable" if unstable(obj) else ("below" if "auc_below_overall" in obj["flags"] else "")}
            for name, obj in rows]


def _confusion_table(matrix: list[list[int]], labels: list[str], caption: str) -> dict[str, Any]:
    return {"caption": caption, "labels": labels,
            "rows": [{"label": label, "counts": row} for label, row in zip(labels, matrix)]}


def _comparison(c: dict[str, Any]) -> dict[str, Any]:
    rows = c["per_class"].items() if "per_class" in c else [("positive class", c)]
    return {"other": c["other"], "method": c["method"], "n": c["n"], "id_column": c["id_column"],
            "rows": [{**_formatted(r, z=2, p_value=4), "name": name, "error": r.get("error")} for name, r in rows]}


def _formatted(obj: dict[str, Any], **digits: int) -> dict[str, str | None]:
    """Every scalar of a report object formatted by :func:`~pipeline.report.summary.fmt` (3 decimals unless ``digits`` names the key)."""
    return {key: fmt(value, digits.get(key, 3)) for key, value in obj.items() if not isinstance(value, (list, dict))}


def _threshold_text(threshold: Any) -> str:
    """The threshold as shown in a table row: a number, or ``argmax`` (multi-class), ``per class`` (multi-label)."""
    if isinstance(threshold, float):
        return threshold_text(threshold)
    return "argmax" if threshold is None else str(threshold)


def _confusions(plot: dict[str, Any]) -> list[tuple[str, list[list[int]], list[str]]]:
    confusion = plot["confusion"]
    if isinstance(confusion, dict):  # multi-label: one 2x2 table per label
        return [(c, m, [f"not {c}", c]) for c, m in confusion.items()]
    return [("", confusion, plot["labels"])]
