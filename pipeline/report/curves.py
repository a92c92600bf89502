"""The curves of a binary report: ROC with a bootstrap 95% band, precision-recall, and the operating point on both.

The ROC band is pointwise: the sensitivity of every resample of :func:`pipeline.statistics.bootstrap_weights`
(the same class-stratified, patient-clustered resamples as the AUC's CI) is read at a fixed grid of
``1 - specificity`` values, and the band is the 2.5th and 97.5th percentile at each grid point.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline import statistics as M

#: ``1 - specificity`` values at which the ROC band is read.
GRID = np.linspace(0.0, 1.0, 101)


def _weighted_roc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates of each weight row, one point per distinct score (highest first)."""
    order = np.argsort(-score, kind="mergesort")
    s, pos, w = score[order], y[order], weights[:, order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(w * pos, axis=1)[:, last_of_tie]
    fp = np.cumsum(w * ~pos, axis=1)[:, last_of_tie]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[:, -1:]
        fpr = fp / fp[:, -1:]
    zeros = np.zeros((w.shape[0], 1))
    return np.hstack([zeros, fpr]), np.hstack([zeros, tpr])


def roc_band(y: np.ndarray, score: np.ndarray, clusters: Sequence[Any] | None, n_resamples: int, seed: int,
             level: float = 0.95) -> dict[str, list[float]] | None:
    """Pointwise bootstrap band of the ROC curve: ``fpr`` (the grid), ``low`` and ``high`` sensitivity.

    None with fewer than 20 resamples or when a class is missing.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    if n_resamples < 20 or y.all() or not y.any():
        return None
    chunks, _ = M.bootstrap_weights(y.astype(int), clusters, n_resamples, seed)
    rows = []
    for w in chunks:
        fpr, tpr = _weighted_roc(y, score, w)
        # the highest sensitivity reached at each grid value of 1 - specificity (a step curve, read from the left)
        rows += [np.interp(GRID, f, t, left=0.0, right=1.0) for f, t in zip(fpr, tpr)]
    values = np.array(rows)
    alpha = (1.0 - level) / 2.0
    low, high = np.nanquantile(values, [alpha, 1.0 - alpha], axis=0)
    return {"fpr": GRID.tolist(), "low": low.tolist(), "high": high.tolist()}


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[list[float], list[float]] | None:
    """The empirical ROC curve (``fpr``, ``tpr``); None when a class is missing."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return None
    fpr, tpr = _weighted_roc(y, np.asarray(score, dtype=float), np.ones((1, y.size)))
    return fpr[0].tolist(), tpr[0].tolist()


def pr_points(y: np.ndarray, score: np.ndarray) -> dict[str, Any] | None:
    """Precision-recall curve (``recall``, ``precision``), average precision and prevalence (the chance line).

    None without positive cases. Average precision is ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores,
    highest first (scikit-learn's definition).
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    if not y.any():
        return None
    order = np.argsort(-score, kind="mergesort")
    s, pos = score[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(pos)[last_of_tie]
    called = np.flatnonzero(last_of_tie) + 1
    precision, recall = tp / called, tp / pos.sum()
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {"recall": [0.0, *recall.tolist()], "precision": [1.0, *precision.tolist()], "ap": ap,
            "prevalence": float(y.mean())}


def operating_point_xy(y: np.ndarray, score: np.ndarray, threshold: float | None) -> dict[str, float] | None:
    """Where the threshold sits: ``fpr``, ``tpr`` (recall) and ``precision`` (nan without positive calls)."""
    y = np.asarray(y).astype(bool)
    if threshold is None or y.all() or not y.any():
        return None
    call = np.asarray(score, dtype=float) >= threshold
    tp = float((call & y).sum())
    return {"fpr": float((call & ~y).sum() / (~y).sum()), "tpr": tp / float(y.sum()),
            "precision": tp / float(call.sum()) if call.any() else float("nan")}
