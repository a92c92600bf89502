"""What ``radpipe report`` reads: predictions CSVs (checked) and the optional run directory.

A predictions CSV (written by ``radpipe evaluate`` or ``radpipe predict``) has one row per case with the
manifest's columns, ``pred`` and one ``prob_<class>`` column per class, class names taken from the column names
in column order. For a binary task the positive class is the **second** ``prob_`` column unless
``positive`` names another. Rows whose ``status`` is not ``ok`` and rows without a true label are excluded and
counted. The task is taken from ``labels.json`` when known, else inferred: no ``prob_`` columns and a numeric
``pred`` -> regression; a label column -> binary (2 classes) or multiclass; one 0/1 column per class ->
multilabel.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.errors import ManifestError, RunError, format_problems
from pipeline.operating_point import OperatingPoint, read_operating_point

PROB_PREFIX = "prob_"
_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class Predictions:
    """Checked predictions of one CSV.

    Attributes:
        frame: the rows kept (status ok, labelled), as strings, index reset.
        source: file name used in messages and in the report.
        task: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        classes: class names in ``prob_`` column order (empty for regression).
        positive: index of the positive class (binary only).
        truth: binary 0/1 ``(n,)``; multiclass class index ``(n,)``; multilabel 0/1 ``(n, k)``; regression ``(n,)``.
        scores: probabilities ``(n, k)``; regression: predicted values ``(n,)``.
        excluded: rows left out, by reason.
    """

    frame: pd.DataFrame
    source: str
    task: str
    classes: tuple[str, ...]
    positive: int | None
    truth: np.ndarray
    scores: np.ndarray
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def positive_score(self) -> np.ndarray:
        """Probability of the positive class (binary)."""
        return self.scores[:, self.positive if self.positive is not None else 1]


@dataclass(frozen=True)
class RunInfo:
    """What a run directory says about the model that made the predictions.

    Attributes:
        path: the run directory.
        config: its resolved config (``config.yaml``), or None.
        labels: ``labels.json``, or None.
        weights_report: ``weights_report.json``, or None.
        operating_point: ``operating_point.json`` (an :class:`~pipeline.operating_point.OperatingPoint`), or None.
    """

    path: Path
    config: Any = None
    labels: dict[str, Any] | None = None
    weights_report: dict[str, Any] | None = None
    operating_point: OperatingPoint | None = None


def read_predictions_csv(path: str | Path) -> pd.DataFrame:
    """Read a predictions CSV as strings (class names like ``0``/``1`` stay exact; blanks stay blank)."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"predictions file {p} not found; give the CSV written by 'radpipe evaluate'")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"predictions file {p} is not a readable CSV: {e}; fix or re-create the file") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_run(run_dir: str | Path) -> RunInfo:
    """Read ``config.yaml``, ``labels.json``, ``weights_report.json`` (one at least) and ``operating_point.json``."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run directory {path} not found; give the folder written by 'radpipe train'")
    config = load_config(path / "config.yaml") if (path / "config.yaml").is_file() else None
    labels, weights = (_read_json(path / name) for name in ("labels.json", "weights_report.json"))
    if config is None and labels is None and weights is None:
        raise RunError(f"run directory {path} holds none of config.yaml, labels.json, weights_report.json; "
                       "give the folder written by 'radpipe train'")
    if labels is not None and not isinstance(labels.get("classes", []), list):
        raise RunError(f"{path / 'labels.json'}: key 'classes' must be a list of class names")
    return RunInfo(path, config, labels, weights, read_operating_point(path))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON: {e}; re-create it by running 'radpipe train' again") from e
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _numbers(df: pd.DataFrame, column: str, source: str, what: str) -> np.ndarray:
    values = pd.to_numeric(df[column].str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        rows = [f"row {i + 2}: {df[column].iloc[i]!r}" for i in bad]
        raise ManifestError(f"{source}: column '{column}' must hold {what}; {format_problems(rows)}; "
                            "fix these rows or mark them with status=error")
    return values


def _infer_task(df: pd.DataFrame, classes: list[str], label_columns: Sequence[str], source: str) -> str:
    if not classes:
        given = df["pred"].str.strip() if "pred" in df.columns else pd.Series(dtype=str)
        given = given[given.ne("")]
        if given.empty or pd.to_numeric(given, errors="coerce").isna().any():
            raise ManifestError(
                f"{source}: no 'prob_<class>' columns (columns found: {list(df.columns)}); a classification report "
                "needs one probability column per class: use the CSV written by 'radpipe evaluate'")
        return "regression"
    if label_columns[0] in df.columns and len(label_columns) == 1:
        return "binary" if len(classes) == 2 else "multiclass"
    if all(c in df.columns for c in _multilabel_columns(classes, label_columns)):
        return "multilabel"
    return "binary" if len(classes) == 2 else "multiclass"


def _multilabel_columns(classes: Sequence[str], label_columns: Sequence[str]) -> list[str]:
    return list(label_columns) if len(label_columns) == len(classes) else list(classes)


def parse_predictions(
    df: pd.DataFrame,
    source: str,
    task: str | None = None,
    classes: Sequence[str] | None = None,
    positive: str | None = None,
    label_columns: Sequence[str] = ("label",),
    classes_from: str = "labels.json",
) -> Predictions:
    """Check a predictions table and extract truth and scores.

    Args:
        df: the table as read by :func:`read_predictions_csv`.
        source: its file name, for messages.
        task: the task from ``labels.json``; None infers it.
        classes: expected class names (from ``labels.json`` or the main predictions); they must match the
            ``prob_`` columns.
        positive: name of the positive class of a binary task (default: the second class).
        label_columns: truth column(s) (the config's ``data.label_columns``).
        classes_from: where ``classes`` came from, for messages.

    Raises:
        ManifestError: a column is missing or holds bad values (naming the file, the column and the fix).
    """
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    prob_columns = [c for c in df.columns if c.startswith(PROB_PREFIX)]
    found = [c[len(PROB_PREFIX):] for c in prob_columns]
    task = _check_task(df, source, task, classes, found, label_columns, classes_from)
    truth_columns = _multilabel_columns(found, label_columns) if task == "multilabel" else [label_columns[0]]
    df, excluded = _usable_rows(df, source, truth_columns)
    if task == "regression":
        if "pred" not in df.columns:
            raise ManifestError(f"{source}: a regression report needs a numeric 'pred' column; none found")
        truth = _numbers(df, truth_columns[0], source, "numbers (the true value)")
        scores = _numbers(df, "pred", source, "numbers (the predicted value)")
        return Predictions(df, source, task, (), None, truth, scores, excluded)
    scores = _probabilities(df, prob_columns, source)
    truth = _truth(df, task, found, truth_columns, source)
    pos_index = _positive_index(source, task, found, positive)
    if pos_index is not None:
        truth = (truth == pos_index).astype(int)
    return Predictions(df, source, task, tuple(found), pos_index, truth, scores, excluded)


def _check_task(
    df: pd.DataFrame, source: str, task: str | None, classes: Sequence[str] | None, found: list[str],
    label_columns: Sequence[str], classes_from: str,
) -> str:
    """The task (given or inferred), once the ``prob_`` columns (classes ``found``) are checked against it."""
    prob_columns = [PROB_PREFIX + c for c in found]
    if classes and list(classes) != found and (found or task != "regression"):
        raise ManifestError(
            f"{source}: expected probability columns {[PROB_PREFIX + c for c in classes]} (from {classes_from}, in "
            f"that order), found {prob_columns}; use predictions of the same model classes")
    task = task or _infer_task(df, found, label_columns, source)
    if task == "regression" and found:
        raise ManifestError(f"{source}: task is regression but the file has probability columns {prob_columns}; "
                            "check labels.json of the run")
    if task != "regression" and len(found) < 2:
        fix = ("add one prob_<class> column per class (the file 'radpipe evaluate' writes has them)"
               if "pred" not in df.columns or not found else "a classifier needs at least two classes")
        raise ManifestError(f"{source}: expected one 'prob_<class>' column per class, found {prob_columns or 'none'}; "
                            f"{fix}")
    return task


def _usable_rows(df: pd.DataFrame, source: str, truth_columns: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows whose status is ok and whose truth is given (index reset), and the count left out by reason."""
    excluded = {"status_not_ok": 0, "missing_label": 0}
    if "status" in df.columns:
        ok = df["status"].str.strip().str.lower().eq("ok")
        excluded["status_not_ok"] = int((~ok).sum())
        df = df[ok]
    missing = [c for c in truth_columns if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{source}: missing true-label column(s) {missing} (columns found: {list(df.columns)}); a report needs "
            "the truth: evaluate on a labelled manifest, or set data.label_columns in the run's config")
    labelled = np.ones(len(df), dtype=bool)
    for column in truth_columns:
        labelled &= df[column].str.strip().ne("").to_numpy()
    excluded["missing_label"] = int((~labelled).sum())
    return df[labelled].reset_index(drop=True), excluded


def _probabilities(df: pd.DataFrame, prob_columns: list[str], source: str) -> np.ndarray:
    """The ``prob_`` columns as an ``(n, k)`` array, checked to be numbers in [0, 1]."""
    scores = np.column_stack([_numbers(df, c, source, "probabilities in [0, 1]") for c in prob_columns])
    outside = np.flatnonzero(((scores < 0) | (scores > 1)).any(axis=1))
    if outside.size:
        rows = [f"row {i + 2}" for i in outside]
        raise ManifestError(f"{source}: prob_ columns must hold probabilities in [0, 1]; {format_problems(rows)}; "
                            "write softmax/sigmoid outputs, not logits")
    return scores


def _positive_index(source: str, task: str, classes: list[str], positive: str | None) -> int | None:
    """Index of the positive class of a binary task (``positive``, default the second class); None otherwise."""
    if task != "binary":
        if positive is not None:
            raise ManifestError(f"--positive applies to binary tasks; {source} is {task} with classes {classes}")
        return None
    if positive is None:
        return 1
    if positive not in classes:
        raise ManifestError(f"{source}: --positive {positive!r} is not a class; classes: {classes}")
    return classes.index(positive)


def _truth(df: pd.DataFrame, task: str, classes: list[str], columns: list[str], source: str) -> np.ndarray:
    if task == "multilabel":
        out = np.zeros((len(df), len(columns)), dtype=int)
        problems = []
        for k, column in enumerate(columns):
            for i, raw in enumerate(df[column].str.strip().str.lower()):
                if raw in _TRUE:
                    out[i, k] = 1
                elif raw not in _FALSE:
                    problems.append(f"row {i + 2} column '{column}': {raw!r}")
        if problems:
            raise ManifestError(f"{source}: multi-label truth columns must hold 0/1; {format_problems(problems)}")
        return out
    index = {c: k for k, c in enumerate(classes)}
    numeric = {}
    for c, k in index.items():
        try:
            numeric[float(c)] = k
        except ValueError:
            pass
    out = np.empty(len(df), dtype=int)
    problems = []
    for i, raw in enumerate(df[columns[0]].str.strip()):
        k = index.get(raw)
        if k is None and numeric:
            try:
                k = numeric.get(float(raw))
            except ValueError:
                k = None
        if k is None:
            problems.append(f"row {i + 2}: {raw!r}")
        else:
            out[i] = k
    if problems:
        raise ManifestError(f"{source}: column '{columns[0]}' must hold a class name, one of {classes}; "
                            f"{format_problems(problems)}; fix the labels or the prob_ column names")
    return out


def check_columns(df: pd.DataFrame, columns: Sequence[str], source: str, what: str) -> None:
    """Raise a ManifestError naming every column of ``columns`` that ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{source}: {what} column(s) {missing} not found; columns present: {list(df.columns)}; "
            f"fix the name or add the column to the manifest before evaluating")
