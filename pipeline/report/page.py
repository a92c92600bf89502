"""The self-contained HTML of a validation report: tables, plots as base64 PNG data URIs, methods, run summary.

Plots are drawn with matplotlib's Agg canvas (no display, no pyplot state); the page has inline CSS only and no
script, so it can be mailed or archived as one file.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.report.inputs import RunInfo

_CONFIG_KEYS = (
    "data.task", "data.classes", "data.label_columns", "data.patient_column", "transforms.spatial_dims",
    "transforms.size", "transforms.spacing", "transforms.intensity", "transforms.augment", "model.name",
    "model.pretrained", "transfer.strategy", "train.epochs", "train.batch_size", "train.lr", "train.optimizer",
    "train.scheduler", "train.seed", "train.key_metric", "eval.threshold", "eval.target_sensitivity",
    "eval.bootstrap", "eval.min_cases",
)
_UNSTABLE = {"too_few_positives", "too_few_negatives", "too_few_cases", "single_class"}
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}tr.unstable td{background:#fff3cd}tr.below td{background:#f8d7da}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em;margin:1em 0}.flag{color:#a00;font-size:90%}
img{max-width:100%;margin:.3em}code{background:#f4f4f4;padding:0 3px}"""


def run_summary(run: RunInfo) -> dict[str, Any]:
    """The run's key config values, labels and a summary of its weights report (as JSON values)."""
    from pipeline.config import config_to_dict

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


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}" alt="plot">'


def _figure(n_panels: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(4.6 * cols, 4.2 * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _unstable(obj: dict[str, Any]) -> bool:
    return bool(_UNSTABLE & set(obj["flags"]))


def _label(name: str, obj: dict[str, Any]) -> str:
    if obj.get("auc") is None:
        return f"{name} (n={obj['n']}, AUC n/a)"
    text = f"{name} AUC {obj['auc']:.2f} [{_fmt(obj['auc_ci_low'], 2)}-{_fmt(obj['auc_ci_high'], 2)}] n={obj['n']}"
    return text + (" UNSTABLE" if _unstable(obj) else "")


def _roc_panels(groups: dict[str, tuple[dict[str, Any], dict[str, Any]]], classes: list[str], title: str) -> str:
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


def _calibration_panels(groups: dict[str, tuple[dict[str, Any], dict[str, Any]]], title: str) -> str:
    """Reliability diagram: observed rate against mean predicted probability per bin, one line per group/class."""
    fig, axes = _figure(1)
    ax = axes[0]
    for name, (obj, plot) in groups.items():
        for cls, bins in plot["calibration"].items():
            points = [(p, o) for p, o, c in zip(bins["mean_pred"], bins["observed"], bins["count"]) if c > 0]
            if points:
                xs, ys = zip(*points)
                label = f"{name} {cls}".strip() + f" (ECE {_fmt(obj['ece'])})"
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


def _confusion_table(matrix: list[list[int]], labels: list[str]) -> str:
    head = "".join(f"<th>pred {html.escape(c)}</th>" for c in labels)
    rows = "".join(f"<tr><th class='l'>true {html.escape(c)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for c, row in zip(labels, matrix))
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _confusions(plot: dict[str, Any]) -> list[tuple[str, list[list[int]], list[str]]]:
    confusion = plot["confusion"]
    if isinstance(confusion, dict):  # multi-label: one 2x2 table per label
        return [(c, m, [f"not {c}", c]) for c, m in confusion.items()]
    return [("", confusion, plot["labels"])]


def _metric_table(report: dict[str, Any], rows: list[tuple[str, dict[str, Any]]]) -> str:
    if report["task"] == "regression":
        head = ["group", "n", "MAE (95% CI)", "RMSE", "Pearson r", "flags"]
        body = [[name, obj["n"], f"{_fmt(obj['mae'])} ({_fmt(obj['mae_ci_low'])}&ndash;{_fmt(obj['mae_ci_high'])})",
                 _fmt(obj["rmse"]), _fmt(obj["pearson_r"]), obj] for name, obj in rows]
    else:
        head = ["group", "n", "positives", "prevalence", "AUC (95% CI)", "sensitivity", "specificity", "PPV", "NPV",
                "F1", "accuracy", "balanced acc.", "Brier", "ECE", "flags"]
        body = []
        for name, obj in rows:
            auc = "n/a (one class)" if obj["auc"] is None else (
                f"{_fmt(obj['auc'])} ({_fmt(obj['auc_ci_low'])}&ndash;{_fmt(obj['auc_ci_high'])})")
            if _unstable(obj) and obj["auc"] is not None:
                auc += " <span class='flag'>&#9888; unstable</span>"
            body.append([name, obj["n"], _fmt(obj["n_pos"]), _fmt(obj["prevalence"]), auc,
                         *(_fmt(obj[k]) for k in ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy",
                                                  "balanced_accuracy", "brier", "ece")), obj])
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for cells in body:
        obj = cells[-1]
        css = "unstable" if _unstable(obj) else ("below" if "auc_below_overall" in obj["flags"] else "")
        flags = "<span class='flag'>" + html.escape(", ".join(obj["flags"])) + "</span>"
        out.append(f"<tr class='{css}'><td class='l'>{html.escape(str(cells[0]))}</td>"
                   + "".join(f"<td>{c}</td>" for c in cells[1:-1]) + f"<td class='l'>{flags}</td></tr>")
    return "".join(out) + "</table>"


def _per_class_table(obj: dict[str, Any]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("class", "positives", "prevalence", "AUC (95% CI)", "sensitivity",
                                              "specificity", "PPV", "NPV", "F1"))
    rows = "".join(
        f"<tr><td class='l'>{html.escape(c)}</td><td>{r['n_pos']}</td><td>{_fmt(r['prevalence'])}</td>"
        f"<td>{_fmt(r['auc'])} ({_fmt(r['auc_ci_low'])}&ndash;{_fmt(r['auc_ci_high'])})</td>"
        + "".join(f"<td>{_fmt(r[k])}</td>" for k in ("sensitivity", "specificity", "ppv", "npv", "f1")) + "</tr>"
        for c, r in obj["per_class"].items())
    return f"<table><tr>{head}</tr>{rows}</table>"


def _scatter(groups: dict[str, tuple[dict[str, Any], dict[str, Any]]], title: str) -> str:
    fig, axes = _figure(1)
    ax = axes[0]
    for name, (obj, plot) in groups.items():
        ax.scatter(*plot["scatter"], s=8, alpha=0.6, label=f"{name} (MAE {_fmt(obj['mae'])}, n={obj['n']})")
    lims = ax.get_xlim()
    ax.plot(lims, lims, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.legend(fontsize=7)
    return _png(fig)


def _methods(report: dict[str, Any]) -> str:
    unit = ("whole patients (a patient's cases move together)" if report["bootstrap_unit"] == "patient"
            else "cases")
    items = [
        f"AUC: Mann-Whitney statistic (ties count 1/2). 95% CI: percentile bootstrap, {report['n_bootstrap']} "
        f"resamples of {unit}, stratified by class, seed {report['seed']}.",
        f"Operating point: {html.escape(str(report['threshold_rule']))}; a case is called positive when its "
        f"probability is &ge; the threshold. Threshold: <code>{html.escape(str(report['threshold']))}</code>.",
        "Brier score: mean squared difference between probability and outcome. ECE: 10 equal-width probability bins "
        "[k/10, (k+1)/10), sum over bins of (cases in bin / n) &times; |observed rate &minus; mean probability|"
        + (" on the top-label confidence." if report["task"] == "multiclass" else "."),
        f"Flags: <code>too_few_positives</code>/<code>too_few_negatives</code>: fewer than {report['min_cases']} "
        "cases of a class &mdash; the AUC and its CI are unstable and must not be quoted without that caveat; "
        "<code>single_class</code>: AUC undefined; <code>auc_below_overall</code>: the cohort's whole CI lies below "
        "the overall AUC; <code>threshold_not_from_validation</code>: the operating point was not fixed on "
        "validation data.",
    ]
    if report["task"] in ("multiclass", "multilabel"):
        items.append("Multi-class / multi-label: one-vs-rest AUC per class; macro = unweighted mean over classes "
                     "with both outcomes present; predictions by argmax (multi-class) or per-label threshold.")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def write_html(report: dict[str, Any], plots: dict[str, Any], path: str | Path) -> None:
    """Write the report page: header, warnings, tables, plots per cohort, comparison, run, methods."""
    task, classes = report["task"], report["classes"]
    overall = report["overall"]
    multi = task in ("multiclass", "multilabel")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>radpipe report</title><style>{_CSS}</style>"
             f"</head><body><h1>Validation report: {html.escape(report['source'])}</h1>",
             f"<p>radpipe {__version__}, {_dt.date.today().isoformat()}. Task: <b>{task}</b>"
             + (f"; classes: {html.escape(', '.join(classes))}" if classes else "")
             + (f"; positive class: <b>{html.escape(str(report['positive_class']))}</b> (the second prob_ column "
                "unless --positive names another)" if report["positive_class"] is not None else "")
             + f". Cases: {overall['n']}; excluded: "
             + html.escape(", ".join(f"{k} {v}" for k, v in report["excluded"].items()) or "none") + ".</p>"]
    if "threshold_not_from_validation" in overall["flags"]:
        parts.append("<div class='warn'>&#9888; The operating point is a fixed 0.5, not chosen on validation "
                     "predictions: sensitivity, specificity, PPV, NPV, F1 and accuracy are not validated "
                     "(give <code>--threshold-from VAL_PREDICTIONS.csv</code>).</div>")
    unstable = [f"{c}={v}" for c, vals in report["cohorts"].items() for v, o in vals.items() if _unstable(o)]
    if unstable:
        parts.append("<div class='warn'>&#9888; Unstable groups (too few cases of a class, or one class only): "
                     + html.escape(", ".join(unstable)) + ". Their AUCs are shown but must not be quoted as "
                     "estimates without their CI and this caveat.</div>")
    below = [f"{c}={v}" for c, vals in report["cohorts"].items() for v, o in vals.items()
             if "auc_below_overall" in o["flags"]]
    if below:
        parts.append("<div class='warn'>Cohorts whose whole AUC 95% CI lies below the overall AUC: "
                     + html.escape(", ".join(below)) + ".</div>")
    parts.append("<h2>Overall</h2>" + _metric_table(report, [("overall", overall)]))
    if multi:
        parts.append(_per_class_table(overall))
    overall_group = {"overall": (overall, plots["overall"])}
    if task == "regression":
        parts.append(_scatter(overall_group, "overall"))
    else:
        parts.append(_roc_panels(overall_group, classes if multi else [], "ROC") +
                     _calibration_panels(overall_group, "calibration"))
        for name, matrix, labels in _confusions(plots["overall"]):
            parts.append(_confusion_image(matrix, labels, f"confusion matrix {name}".strip()))
    for column, values in report["cohorts"].items():
        parts.append(f"<h2>Cohort: {html.escape(column)}</h2>")
        rows = [("overall", overall)] + [(f"{column}={v}", o) for v, o in values.items()]
        parts.append(_metric_table(report, rows))
        groups = {**overall_group, **{v: (o, plots["cohorts"][column][v]) for v, o in values.items()}}
        if task == "regression":
            parts.append(_scatter({v: g for v, g in groups.items() if v != "overall"}, f"by {column}"))
            continue
        parts.append(_roc_panels(groups, classes if multi else [], f"ROC by {column}"))
        parts.append(_calibration_panels(groups, f"calibration by {column}"))
        parts.append("<h3>Confusion matrices</h3>")
        for value in values:
            for name, matrix, labels in _confusions(plots["cohorts"][column][value]):
                caption = html.escape(f"{column}={value} {name}".strip())
                parts.append(f"<p>{caption}</p>" + _confusion_table(matrix, labels))
    if "comparison" in report:
        parts.append(_comparison(report["comparison"], report["source"]))
    if "run" in report:
        parts.append(_run_section(report["run"]))
    parts.append("<h2>Methods</h2>" + _methods(report) + "</body></html>")
    Path(path).write_text("\n".join(parts), encoding="utf-8")


def _comparison(c: dict[str, Any], source: str) -> str:
    head = (f"<h2>Comparison with {html.escape(c['other'])}</h2><p>{html.escape(c['method'])}; {c['n']} cases "
            f"matched by <code>{html.escape(c['id_column'])}</code>. A = {html.escape(source)}, "
            f"B = {html.escape(c['other'])}.</p>")
    rows = c["per_class"].items() if "per_class" in c else [("positive class", c)]
    cells = "".join(
        f"<tr><td class='l'>{html.escape(name)}</td>" + (
            f"<td colspan='5' class='l'>{html.escape(r['error'])}</td>" if "error" in r else
            f"<td>{_fmt(r['auc_a'])}</td><td>{_fmt(r['auc_b'])}</td><td>{_fmt(r['difference'])} "
            f"({_fmt(r['difference_ci_low'])}&ndash;{_fmt(r['difference_ci_high'])})</td><td>{_fmt(r['z'], 2)}</td>"
            f"<td>{_fmt(r['p_value'], 4)}</td>") + "</tr>" for name, r in rows)
    return (head + "<table><tr><th>class</th><th>AUC A</th><th>AUC B</th><th>A &minus; B (95% CI)</th><th>z</th>"
            f"<th>p (two-sided)</th></tr>{cells}</table>"
            "<p>CI of the difference: &plusmn;1.96 DeLong standard errors.</p>")


def _run_section(run: dict[str, Any]) -> str:
    parts = [f"<h2>Run {html.escape(str(run['path']))}</h2>"]
    for title, key in (("Configuration", "config"), ("Labels", "labels"), ("Weights report", "weights_report")):
        if key in run:
            rows = "".join(f"<tr><th class='l'>{html.escape(str(k))}</th><td class='l'>{html.escape(str(v))}</td></tr>"
                           for k, v in run[key].items())
            parts.append(f"<h3>{title}</h3><table>{rows}</table>")
    return "".join(parts)
