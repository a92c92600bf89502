"""What a report says about how the model was trained: cases per split and class, the best epoch and why.

Read from the run directory (untrusted: parsed, never executed): ``metrics.csv`` (one row per epoch) and the
manifest named by ``config.yaml``'s ``data.manifest`` (its ``split`` and label columns counted; when it has
moved, the counts are reported as unavailable).

The best epoch is the one ``radpipe train`` keeps as ``best.pt``: the highest validation ``train.key_metric``
(``neg_loss`` / ``neg_mae``: the lowest ``val_loss`` / ``val_mae``); ties go to the lower validation loss,
then to the earlier epoch.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from pipeline.report.inputs import RunInfo

METRICS_FILE = "metrics.csv"
_MAX_METRICS_BYTES = 16 * 1024 * 1024
_MAX_MANIFEST_BYTES = 512 * 1024 * 1024


def training_summary(run: RunInfo) -> dict[str, Any]:
    """The training section of a report: ``cases`` (split -> class -> count), ``best`` and ``curve``.

    ``cases`` is None (with ``cases_note`` saying why) when the manifest cannot be read; ``best`` and
    ``curve`` are None when the run has no ``metrics.csv``.
    """
    key_metric = run.config.train.key_metric if run.config is not None else "auc"
    rows = _read_metrics(run.path / METRICS_FILE)
    summary: dict[str, Any] = {"key_metric": key_metric, "epochs": len(rows), "best": None, "curve": None}
    if rows:
        summary["best"] = best_epoch(rows, key_metric)
        summary["curve"] = {column: [r.get(column) for r in rows]
                            for column in ("epoch", "train_loss", "val_loss", _metric_column(key_metric))
                            if any(column in r for r in rows)}
    summary["cases"], summary["cases_note"] = _cases(run)
    return summary


def _metric_column(key_metric: str) -> str:
    return "val_" + key_metric.removeprefix("neg_")


def best_epoch(rows: list[dict[str, float | None]], key_metric: str) -> dict[str, Any] | None:
    """The best epoch of ``metrics.csv`` rows and a sentence saying why (None when no epoch was validated)."""
    column, sign = _metric_column(key_metric), (-1.0 if key_metric.startswith("neg_") else 1.0)

    def number(row: dict[str, float | None], key: str) -> float:
        value = row.get(key)
        return float(value) if value is not None and math.isfinite(value) else math.nan

    scored = [r for r in rows if math.isfinite(number(r, column))]
    if not scored:
        return None
    top = max(sign * number(r, column) for r in scored)
    tied = [r for r in scored if sign * number(r, column) == top]
    best = min(tied, key=lambda r: (math.inf if math.isnan(number(r, "val_loss")) else number(r, "val_loss"),
                                    number(r, "epoch")))
    words = f"highest {column}" if sign > 0 else f"lowest {column}"
    why = f"{words} ({sign * top:.4g})"
    if len(tied) > 1:
        others = ", ".join(str(int(number(r, "epoch"))) for r in tied if r is not best)
        why += f", tied with epoch(s) {others}; the tie goes to the lowest val_loss, then the earliest epoch"
    return {"epoch": int(number(best, "epoch")), "value": sign * top, "metric": column,
            "val_loss": None if math.isnan(number(best, "val_loss")) else number(best, "val_loss"),
            "n_tied": len(tied), "why": why}


def _read_metrics(path: Path) -> list[dict[str, float | None]]:
    if not path.is_file() or path.stat().st_size > _MAX_METRICS_BYTES:
        return []
    rows = []
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, text in raw.items():
                try:
                    row[str(key)] = float(text) if text not in ("", None) else None
                except (TypeError, ValueError):
                    row[str(key)] = None
            if row.get("epoch") is not None:
                rows.append(row)
    return rows


def _cases(run: RunInfo) -> tuple[dict[str, dict[str, int]] | None, str]:
    """Cases per split and class of the run's manifest, or None and why not."""
    if run.config is None or not run.config.data.manifest:
        return None, "the run's config.yaml names no manifest"
    path = Path(run.config.data.manifest)
    if not path.is_file():
        return None, f"the run's manifest {path.name} is no longer at the path recorded in config.yaml"
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        return None, f"the run's manifest {path.name} is too large to count here"
    label = run.config.data.label_columns[0] if run.config.data.label_columns else "label"
    counts: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        if label not in (reader.fieldnames or []):
            return None, f"the run's manifest {path.name} has no column '{label}'"
        for row in reader:
            split = (row.get("split") or "").strip() or "(no split)"
            value = (row.get(label) or "").strip() or "(unlabelled)"
            counts.setdefault(split, {}).setdefault(value, 0)
            counts[split][value] += 1
    order = {"train": 0, "val": 1, "test": 2}
    return {s: counts[s] for s in sorted(counts, key=lambda s: (order.get(s, 3), s))}, f"from {path.name}"
