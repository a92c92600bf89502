"""The self-contained HTML of a validation report: tables, plots as base64 PNG data URIs, methods, run summary.

The page is rendered from ``templates/report.html.j2`` with autoescaping on. This module only prepares plain
values for it (numbers formatted, None where a metric is undefined, plots as data URIs, tables as lists of dicts);
the template escapes every one of them. Plots are drawn with matplotlib's Agg canvas (no display, no pyplot
state); the page has inline CSS only and no script, so it can be mailed or archived as one file.
"""
from __future__ import annotations

import base64
import datetime as _dt
import functools
import io
from pathlib import Path
from typing import Any

import jinja2

from pipeline import __version__
from pipeline.config import config_to_dict
from pipeline.files import write_atomic
from pipeline.report.inputs import RunInfo

_CONFIG_KEYS = (
    "data.task", "data.classes", "data.label_columns", "data.patient_column", "transforms.spatial_dims",
    "transforms.size", "transforms.spacing", "transforms.intensity", "transforms.augment", "model.name",
    "model.pretrained", "transfer.strategy", "train.epochs", "train.batch_size", "train.lr", "train.optimizer",
    "train.scheduler", "train.seed", "train.key_metric", "eval.threshold", "eval.target_sensitivity",
    "eval.bootstrap", "eval.min_cases",
)
_UNSTABLE = {"too_few_positives", "too_few_negatives", "too_few_cases", "single_class"}
_TEMPLATE = "report.html.j2"

#: The groups drawn in one plot: group name -> (its report object, its plot data).
_Groups = dict[str, tuple[dict[str, Any], dict[str, Any]]]


def run_summary(run: RunInfo) -> dict[str, Any]:
    """The run's key config values, labels and a summary of its weights report (as JSON values)."""
    summary: dict[str, Any] = {"path": run.path.name}
    if run.config is not None:
        values = config_to_dict(run.config)
        summary["config"] = {key: values[key.split(".")[0]][key.split(".")[1]] for key in _CONFIG_KEYS}
    if run.labels is not None:
        summary["labels"] = run.labels
    if run.weights_report is not None:
        summary["weights_report"] = {key: _summarise(value) for key, value in run.weights_report.items()}
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
        "unstable": [name for name, obj in groups if _unstable(obj)],
        "below": [name for name, obj in groups if "auc_below_overall" in obj["flags"]],
        "overall": _overall_section(report, plots),
        "cohorts": [_cohort_section(report, plots, column) for column in report["cohorts"]],
        "comparison": _comparison(report["comparison"]) if "comparison" in report else None,
        "run": _run_section(report["run"]) if "run" in report else None,
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
        return {**section, "scatter": _scatter(group, "overall")}
    return {**section,
            "roc": _roc_panels(group, report["classes"] if multi else [], "ROC"),
            "calibration": _calibration_panels(group, "calibration"),
            "confusions": [_confusion_image(matrix, labels, f"confusion matrix {name}".strip())
                           for name, matrix, labels in _confusions(plots["overall"])]}


def _cohort_section(report: dict[str, Any], plots: dict[str, Any], column: str) -> dict[str, Any]:
    overall, values, value_plots = report["overall"], report["cohorts"][column], plots["cohorts"][column]
    section = {"column": column,
               "table": _metric_rows([("overall", overall)] + [(f"{column}={v}", o) for v, o in values.items()])}
    groups = {"overall": (overall, plots["overall"]), **{v: (o, value_plots[v]) for v, o in values.items()}}
    if report["task"] == "regression":
        return {**section, "scatter": _scatter({v: g for v, g in groups.items() if v != "overall"}, f"by {column}")}
    multi = report["task"] in ("multiclass", "multilabel")
    return {**section,
            "roc": _roc_panels(groups, report["classes"] if multi else [], f"ROC by {column}"),
            "calibration": _calibration_panels(groups, f"calibration by {column}"),
            "confusions": [_confusion_table(matrix, labels, f"{column}={value} {name}".strip())
                           for value in values for name, matrix, labels in _confusions(value_plots[value])]}


def _metric_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One dict per group: its formatted metrics, flags, and the row's highlight (unstable, or CI below overall)."""
    return [{**_formatted(obj), "name": name, "flags": ", ".join(obj["flags"]), "unstable": _unstable(obj),
             "css": "unstable" if _unstable(obj) else ("below" if "auc_below_overall" in obj["flags"] else "")}
            for name, obj in rows]


def _confusion_table(matrix: list[list[int]], labels: list[str], caption: str) -> dict[str, Any]:
    return {"caption": caption, "labels": labels,
            "rows": [{"label": label, "counts": row} for label, row in zip(labels, matrix)]}


def _comparison(c: dict[str, Any]) -> dict[str, Any]:
    rows = c["per_class"].items() if "per_class" in c else [("positive class", c)]
    return {"other": c["other"], "method": c["method"], "n": c["n"], "id_column": c["id_column"],
            "rows": [{**_formatted(r, z=2, p_value=4), "name": name, "error": r.get("error")} for name, r in rows]}


def _run_section(run: dict[str, Any]) -> dict[str, Any]:
    sections = [{"title": title, "rows": [(str(k), str(v)) for k, v in run[key].items()]}
                for title, key in (("Configuration", "config"), ("Labels", "labels"),
                                   ("Weights report", "weights_report")) if key in run]
    return {"path": str(run["path"]), "sections": sections}


def _fmt(value: Any, digits: int = 3) -> str | None:
    """A metric as shown: floats to ``digits`` decimals, None (undefined) kept for the template to mark."""
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _formatted(obj: dict[str, Any], **digits: int) -> dict[str, str | None]:
    """Every scalar of a report object formatted by :func:`_fmt` (3 decimals unless ``digits`` names the key)."""
    return {key: _fmt(value, digits.get(key, 3)) for key, value in obj.items() if not isinstance(value, (list, dict))}


def _unstable(obj: dict[str, Any]) -> bool:
    return bool(_UNSTABLE & set(obj["flags"]))


def _legend_number(value: Any, digits: int = 3) -> str:
    text = _fmt(value, digits)
    return "\N{EM DASH}" if text is None else text


def _label(name: str, obj: dict[str, Any]) -> str:
    if obj.get("auc") is None:
        return f"{name} (n={obj['n']}, AUC n/a)"
    ci = f"[{_legend_number(obj['auc_ci_low'], 2)}-{_legend_number(obj['auc_ci_high'], 2)}]"
    return f"{name} AUC {obj['auc']:.2f} {ci} n={obj['n']}" + (" UNSTABLE" if _unstable(obj) else "")


def _png(fig: Any) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(n_panels: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(4.6 * cols, 4.2 * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]


def _roc_panels(groups: _Groups, classes: list[str], title: str) -> str:
    """ROC curves: one panel per class (one for binary), one line per group."""
    names = classes or [""]
    fig, axes = _figure(len(names))
    for ax, cls in zip(axes, names):
        for name, (obj, plot) in groups.items():
            curve = plot["roc"].get(cls)
            if curve is None:
                continue
            label = _label(name, obj if not cls else {**obj, **obj["per_class"][cls], "n": obj["n"]})
            ax.plot(curve[0], curve[1], lw=2 if name == "overall" else 1.2,
                    ls="--" if _unstable(obj) else "-", label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{title}, class {cls}" if cls else title,
               xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _calibration_panels(groups: _Groups, title: str) -> str:
    """Reliability diagram: observed rate against mean predicted probability per bin, one line per group/class."""
    fig, axes = _figure(1)
    ax = axes[0]
    for name, (obj, plot) in groups.items():
        for cls, bins in plot["calibration"].items():
            points = [(p, o) for p, o, c in zip(bins["mean_pred"], bins["observed"], bins["count"]) if c > 0]
            if points:
                xs, ys = zip(*points)
                label = f"{name} {cls}".strip() + f" (ECE {_legend_number(obj['ece'])})"
                ax.plot(xs, ys, marker="o", ms=3, ls="--" if _unstable(obj) else "-", label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="mean predicted probability (10 equal-width bins)", ylabel="observed fraction", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def _confusion_image(matrix: list[list[int]], labels: list[str], title: str) -> str:
    fig, axes = _figure(1)
    ax = axes[0]
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=title)
    return _png(fig)


def _confusions(plot: dict[str, Any]) -> list[tuple[str, list[list[int]], list[str]]]:
    confusion = plot["confusion"]
    if isinstance(confusion, dict):  # multi-label: one 2x2 table per label
        return [(c, m, [f"not {c}", c]) for c, m in confusion.items()]
    return [("", confusion, plot["labels"])]


def _scatter(groups: _Groups, title: str) -> str:
    fig, axes = _figure(1)
    ax = axes[0]
    for name, (obj, plot) in groups.items():
        ax.scatter(*plot["scatter"], s=8, alpha=0.6, label=f"{name} (MAE {_legend_number(obj['mae'])}, n={obj['n']})")
    lims = ax.get_xlim()
    ax.plot(lims, lims, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.legend(fontsize=7)
    return _png(fig)
