"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state) as PNG data URIs.

Every figure is at least 560 px wide with legends and labels of 9-11 pt (:data:`WIDTH_IN`, :data:`DPI`), so a
plot stays legible at its natural size and two fit side by side on the page. Counts printed on a coloured cell
switch to white on dark cells.
"""
from __future__ import annotations

import base64
import io
from typing import Any

#: Figure size of one panel (inches) and resolution: 5.6 x 110 = 616 px wide.
WIDTH_IN, HEIGHT_IN, DPI = 5.6, 4.8, 110
LEGEND_PT, LABEL_PT = 9, 11
UNSTABLE = {"too_few_positives", "too_few_negatives", "too_few_cases", "single_class"}

#: The groups drawn in one plot: group name -> (its report object, its plot data).
Groups = dict[str, tuple[dict[str, Any], dict[str, Any]]]


def unstable(obj: dict[str, Any]) -> bool:
    """Whether a group is flagged too small (or one class) to quote."""
    return bool(UNSTABLE & set(obj["flags"]))


def number(value: Any, digits: int = 3) -> str:
    """A number for a legend (an em dash when undefined)."""
    return "\N{EM DASH}" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _auc_label(name: str, obj: dict[str, Any]) -> str:
    if obj.get("auc") is None:
        return f"{name} (n={obj['n']}, AUC n/a)"
    ci = f"[{number(obj['auc_ci_low'], 2)}\N{EN DASH}{number(obj['auc_ci_high'], 2)}]"
    return f"{name}: AUC {obj['auc']:.2f} {ci}, n={obj['n']}" + (" UNSTABLE" if unstable(obj) else "")


def png(fig: Any) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure(n_panels: int = 1) -> tuple[Any, list[Any]]:
    """A figure of ``n_panels`` panels, at most 2 per row."""
    from matplotlib.figure import Figure

    cols = min(n_panels, 2)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(WIDTH_IN * cols, HEIGHT_IN * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    for ax in axes:
        ax.tick_params(labelsize=LEGEND_PT)
    return fig, axes


def _finish(ax: Any, title: str, xlabel: str, ylabel: str, legend_loc: str) -> None:
    ax.set_title(title, fontsize=LABEL_PT + 1)
    ax.set_xlabel(xlabel, fontsize=LABEL_PT)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    ax.grid(alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=LEGEND_PT, loc=legend_loc, framealpha=0.9)


def roc_panels(groups: Groups, classes: list[str], title: str, extras: bool = False) -> str:
    """ROC curves: one panel per class (one for binary), one line per group.

    With ``extras`` (binary), the 95% band and the operating point of each group's plot data are drawn too.
    """
    names = classes or [""]
    fig, axes = figure(len(names))
    for ax, cls in zip(axes, names):
        for name, (obj, plot) in groups.items():
            curve = plot["roc"].get(cls)
            if curve is None:
                continue
            label = _auc_label(name, obj if not cls else {**obj, **obj["per_class"][cls], "n": obj["n"]})
            line, = ax.plot(curve[0], curve[1], lw=2.2 if name == "overall" else 1.4,
                            ls="--" if unstable(obj) else "-", label=label)
            band = plot.get("roc_band") if extras and not cls else None
            if band:
                ax.fill_between(band["fpr"], band["low"], band["high"], color=line.get_color(), alpha=0.18, lw=0,
                                label="95% CI band (bootstrap)")
            point = plot.get("operating_point") if extras and not cls else None
            if point:
                ax.plot(point["fpr"], point["tpr"], "o", ms=9, mfc="white", mec="black", mew=2,
                        label=f"operating point (sens {point['tpr']:.2f}, spec {1 - point['fpr']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        _finish(ax, f"{title}, class {cls}" if cls else title, "1 - specificity", "sensitivity", "lower right")
    return png(fig)


def pr_panel(obj: dict[str, Any], plot: dict[str, Any], positive: str) -> str | None:
    """Precision-recall curve of all cases with the prevalence (a random model) and the operating point."""
    pr = plot.get("pr")
    if not pr:
        return None
    fig, axes = figure(1)
    ax = axes[0]
    ax.step(pr["recall"], pr["precision"], where="post", lw=2.2, label=f"all cases: AP {pr['ap']:.2f}, n={obj['n']}")
    ax.axhline(pr["prevalence"], color="grey", lw=0.8, ls=":", label=f"prevalence {pr['prevalence']:.2f} (chance)")
    point = plot.get("operating_point")
    if point and point["precision"] == point["precision"]:
        ax.plot(point["tpr"], point["precision"], "o", ms=9, mfc="white", mec="black", mew=2,
                label=f"operating point (PPV {point['precision']:.2f}, sens {point['tpr']:.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    _finish(ax, f"precision-recall, positive class {positive}", "recall (sensitivity)", "precision (PPV)",
            "lower left")
    return png(fig)


def calibration_panel(groups: Groups, title: str) -> str:
    """Reliability diagram: observed rate against mean predicted probability per bin, one line per group/class."""
    fig, axes = figure(1)
    ax = axes[0]
    for name, (obj, plot) in groups.items():
        for cls, bins in plot["calibration"].items():
            points = [(p, o) for p, o, c in zip(bins["mean_pred"], bins["observed"], bins["count"]) if c > 0]
            if points:
                xs, ys = zip(*points)
                label = f"{name} {cls}".strip() + f" (ECE {number(obj['ece'])})"
                ax.plot(xs, ys, marker="o", ms=4, ls="--" if unstable(obj) else "-", label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    _finish(ax, title, "mean predicted probability (10 equal-width bins)", "observed fraction", "upper left")
    return png(fig)


def confusion_image(matrix: list[list[int]], labels: list[str], title: str) -> str:
    """A confusion matrix as a heat map with its counts (white on dark cells, black on light ones)."""
    fig, axes = figure(1)
    ax = axes[0]
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    high = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=LABEL_PT + 5, fontweight="bold",
                    color="white" if high and value > high / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=LEGEND_PT)
    ax.set_xticks(range(len(labels)), labels, fontsize=LABEL_PT)
    ax.set_yticks(range(len(labels)), labels, fontsize=LABEL_PT)
    ax.set_xlabel("predicted", fontsize=LABEL_PT)
    ax.set_ylabel("true", fontsize=LABEL_PT)
    ax.set_title(title, fontsize=LABEL_PT + 1)
    return png(fig)


def scatter_panel(groups: Groups, title: str) -> str:
    """Predicted against true values, one colour per group, with the identity line."""
    fig, axes = figure(1)
    ax = axes[0]
    for name, (obj, plot) in groups.items():
        ax.scatter(*plot["scatter"], s=10, alpha=0.6, label=f"{name} (MAE {number(obj['mae'])}, n={obj['n']})")
    lims = ax.get_xlim()
    ax.plot(lims, lims, color="grey", lw=0.8, ls=":")
    _finish(ax, title, "true", "predicted", "upper left")
    return png(fig)


def training_curve(curve: dict[str, list[Any]], best: dict[str, Any] | None) -> str | None:
    """Losses (left axis) and the validation key metric (right axis) per epoch, the best epoch marked."""
    epochs = curve.get("epoch") or []
    if not epochs:
        return None
    fig, axes = figure(1)
    ax = axes[0]
    for column, style in (("train_loss", "-"), ("val_loss", "--")):
        if column in curve:
            ax.plot(epochs, [v if v is not None else float("nan") for v in curve[column]], style, marker="o", ms=3,
                    label=column)
    handles, labels = ax.get_legend_handles_labels()
    metric = next((c for c in curve if c.startswith("val_") and c != "val_loss"), None)
    if metric:
        right = ax.twinx()
        right.plot(epochs, [v if v is not None else float("nan") for v in curve[metric]], color="tab:green",
                   marker="s", ms=3, label=metric)
        right.set_ylabel(metric, fontsize=LABEL_PT)
        right.tick_params(labelsize=LEGEND_PT)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if best:
        handles.append(ax.axvline(best["epoch"], color="black", lw=1, ls=":"))
        labels.append(f"best epoch {best['epoch']}")
    ax.set_title("training curve (metrics.csv)", fontsize=LABEL_PT + 1)
    ax.set_xlabel("epoch", fontsize=LABEL_PT)
    ax.set_ylabel("loss", fontsize=LABEL_PT)
    ax.grid(alpha=0.25)
    ax.legend(handles, labels, fontsize=LEGEND_PT, loc="upper center", framealpha=0.9)
    return png(fig)
