"""Statistics of a validation report: AUC with bootstrap CIs, operating points, calibration, DeLong.

Conventions (they are printed in every report):

* Scores are probabilities of the positive class; a case is called positive when ``score >= threshold``.
* AUC is the Mann-Whitney statistic (ties count one half); it is ``nan`` when only one class is present.
* Bootstrap CIs are percentile intervals of resamples drawn **within strata** (the class of a case, or the set of
  classes of a patient's cases), resampling whole patients (clusters) when a patient has several cases, so that
  the class counts stay fixed and correlated cases move together. The generator is seeded.
* Expected calibration error (ECE) uses 10 equal-width bins ``[k/10, (k+1)/10)`` (the last bin includes 1) of the
  predicted probability: ``sum_b n_b / n * |observed rate_b - mean predicted_b|``.
* Undefined ratios (e.g. PPV with no positive calls) are ``nan``, never 0.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

N_BINS = 10
_CHUNK_CELLS = 4_000_000  # resamples x cases per weight-matrix chunk (32 MB of float64)


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap confidence interval.

    Attributes:
        low: lower bound (``nan`` when no resample gave a value).
        high: upper bound.
        n_resamples: resamples drawn.
        n_valid: resamples where the statistic was defined.
        unit: what was resampled: ``case`` or ``patient``.
        level: coverage level, e.g. 0.95.
    """

    low: float
    high: float
    n_resamples: int
    n_valid: int
    unit: str
    level: float


@dataclass(frozen=True)
class DeLongResult:
    """DeLong test of two correlated AUCs computed on the same cases."""

    auc_a: float
    auc_b: float
    difference: float
    se_difference: float
    z: float
    p_value: float
    n: int
    n_pos: int
    n_neg: int


# ---------------------------------------------------------------------------------------------------- AUC


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUC (Mann-Whitney, ties = 1/2) of each row of case weights.

    A row of integer weights is the multiplicity of every case in one bootstrap resample, so one call
    evaluates many resamples at once in ``O(resamples x cases)`` after one sort.

    Args:
        y: true labels, 1 / True = positive, shape ``(n,)``.
        score: scores, shape ``(n,)``; higher means more likely positive.
        weights: shape ``(b, n)``; ``None`` means one row of ones (the plain AUC).

    Returns:
        Shape ``(b,)``; ``nan`` where a row has no positive or no negative weight.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]]) if y.size else np.array([0])
    w = w[:, order]
    is_pos = y[order]
    pos = np.add.reduceat(w * is_pos, starts, axis=1) if y.size else np.zeros((w.shape[0], 1))
    neg = np.add.reduceat(w * ~is_pos, starts, axis=1) if y.size else np.zeros((w.shape[0], 1))
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; ``nan`` when ``y`` holds one class only."""
    return float(weighted_auc(y, score)[0])


def macro_auc(y_onehot: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Unweighted mean of one-vs-rest AUCs over the classes (columns) that are defined, per weight row."""
    per_class = np.stack([weighted_auc(y_onehot[:, k], scores[:, k], weights) for k in range(scores.shape[1])])
    with np.errstate(invalid="ignore"):
        defined = np.isfinite(per_class)
        total = np.where(defined, per_class, 0.0).sum(axis=0)
        count = defined.sum(axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---------------------------------------------------------------------------------------------- bootstrap


def _units(n: int, clusters: Sequence[Any] | None) -> tuple[np.ndarray, int, str]:
    """Map cases to resampling units: patients when one repeats, else the cases themselves."""
    if clusters is not None:
        codes, uniques = _codes(clusters)
        if len(uniques) < n:
            return codes, len(uniques), "patient"
    return np.arange(n), n, "case"


def _codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    uniques: dict[Any, int] = {}
    codes = np.array([uniques.setdefault(v, len(uniques)) for v in values], dtype=np.int64)
    return codes, list(uniques)


def bootstrap_weights(
    strata: Sequence[Any], clusters: Sequence[Any] | None, n_resamples: int, seed: int
) -> tuple[Iterator[np.ndarray], str]:
    """Case multiplicities of stratified (cluster) bootstrap resamples, in chunks.

    Units (patients when ``clusters`` has a repeated value, else cases) are drawn with replacement within
    their stratum; a patient's stratum is the sorted set of its cases' strata.

    Args:
        strata: stratum of every case (e.g. its class).
        clusters: patient of every case, or None.
        n_resamples: resamples to draw.
        seed: seed of the generator; the same seed gives the same resamples.

    Returns:
        An iterator over ``(b, n)`` weight matrices (b summing to ``n_resamples``) and the unit name.
    """
    n = len(strata)
    unit_of_case, n_units, unit = _units(n, clusters)
    unit_strata: list[set[str]] = [set() for _ in range(n_units)]
    for u, s in zip(unit_of_case, strata):
        unit_strata[u].add(str(s))
    stratum_codes, _ = _codes(["|".join(sorted(s)) for s in unit_strata])
    members = [np.flatnonzero(stratum_codes == k) for k in range(stratum_codes.max() + 1)] if n_units else []
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    rng = np.random.default_rng(seed)

    def chunks() -> Iterator[np.ndarray]:
        done = 0
        while done < n_resamples:
            b = min(chunk, n_resamples - done)
            rows = np.arange(b)[:, None] * n_units
            counts = np.zeros(b * n_units)
            for group in members:
                drawn = group[rng.integers(0, group.size, size=(b, group.size))]
                counts += np.bincount((rows + drawn).ravel(), minlength=b * n_units)
            yield counts.reshape(b, n_units)[:, unit_of_case]
            done += b

    return chunks(), unit


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    strata: Sequence[Any],
    clusters: Sequence[Any] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``statistic`` (which maps a ``(b, n)`` weight matrix to ``(b,)`` values)."""
    if n_resamples < 1 or len(strata) == 0:
        return BootstrapCI(float("nan"), float("nan"), max(n_resamples, 0), 0, "case", level)
    chunks, unit = bootstrap_weights(strata, clusters, n_resamples, seed)
    values = np.concatenate([statistic(w) for w in chunks])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return BootstrapCI(float("nan"), float("nan"), n_resamples, 0, unit, level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return BootstrapCI(float(low), float(high), n_resamples, int(values.size), unit, level)


def bootstrap_auc_ci(
    y: np.ndarray,
    score: np.ndarray,
    clusters: Sequence[Any] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapCI:
    """Class-stratified (patient-clustered when patients repeat) percentile bootstrap CI of the AUC."""
    y = np.asarray(y).astype(bool)
    return bootstrap_ci(lambda w: weighted_auc(y, score, w), y.astype(int), clusters, n_resamples, seed, level)


# -------------------------------------------------------------------------------------- operating points


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the highest; placed as :func:`_roc_threshold` says)."""
    return _roc_threshold(y, score, lambda tpr, fpr: int(np.argmax(tpr - fpr)))


def sensitivity_threshold(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """Highest threshold whose sensitivity reaches ``target`` (the best specificity at that sensitivity)."""
    return _roc_threshold(y, score, lambda tpr, fpr: int(np.flatnonzero(tpr >= target - 1e-12)[0]))


def _roc_threshold(y: np.ndarray, score: np.ndarray, pick: Callable[[np.ndarray, np.ndarray], int]) -> float:
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    if y.all() or not y.any():
        raise ValueError("a threshold needs both classes in the validation predictions")
    values = np.unique(score)[::-1]  # candidate thresholds, high to low
    tpr = _counts_at(score[y], values) / y.sum()
    fpr = _counts_at(score[~y], values) / (~y).sum()
    k = pick(tpr, fpr)
    # The middle of the gap below the chosen score, not the score itself: the validation counts are the
    # same, and a new case scored a little below the lowest validation positive is not called negative
    # (with a perfectly separated validation set the score itself sits at the edge of the positives).
    return float((values[k] + values[k + 1]) / 2.0) if k + 1 < len(values) else float(values[k])


def _counts_at(scores: np.ndarray, thresholds_desc: np.ndarray) -> np.ndarray:
    """Number of ``scores >= t`` for each threshold ``t``."""
    return scores.size - np.searchsorted(np.sort(scores), thresholds_desc, side="left")


def choose_threshold(y: np.ndarray, score: np.ndarray, rule: str = "youden", target_sensitivity: float = 0.9) -> float:
    """The operating point of ``rule`` (``youden`` or ``sensitivity``) on validation predictions."""
    if rule == "youden":
        return youden_threshold(y, score)
    if rule == "sensitivity":
        return sensitivity_threshold(y, score, target_sensitivity)
    raise ValueError(f"unknown threshold rule {rule!r}; allowed: youden, sensitivity")


# ---------------------------------------------------------------------------------- metrics at a threshold


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def confusion_rates(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV, F1, accuracy and balanced accuracy from a 2x2 table."""
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": (sens + spec) / 2.0,
    }


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (``nan`` bounds when ``n`` is 0).

    Unlike the Wald interval it stays inside [0, 1] and keeps its coverage at 0 or ``n`` successes, e.g.
    ``wilson_ci(10, 10)`` is about (0.722, 1.0).
    """
    if n <= 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    p, z2 = successes / n, z * z / n
    centre = (p + z2 / 2.0) / (1.0 + z2)
    half = z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n)) / (1.0 + z2)
    low, high = (0.0 if successes <= 0 else centre - half), (1.0 if successes >= n else centre + half)
    return float(max(0.0, low)), float(min(1.0, high))


def calibration_bins(y: np.ndarray, prob: np.ndarray, n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Equal-width reliability bins: edges, cases, mean predicted probability and observed rate per bin."""
    y = np.asarray(y, dtype=float)
    prob = np.asarray(prob, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(prob, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(index, weights=prob, minlength=n_bins) / count
        observed = np.bincount(index, weights=y, minlength=n_bins) / count
    return {"edges": edges.tolist(), "count": count.tolist(), "mean_pred": mean_pred.tolist(),
            "observed": observed.tolist()}


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE over ``n_bins`` equal-width probability bins (empty bins contribute nothing)."""
    if len(y) == 0:
        return float("nan")
    bins = calibration_bins(y, prob, n_bins)
    count = np.array(bins["count"])
    gap = np.abs(np.array(bins["observed"]) - np.array(bins["mean_pred"]))
    return float(np.sum(np.where(count > 0, count * np.nan_to_num(gap), 0.0)) / count.sum())


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every binary metric of the report for one group of cases.

    Returns:
        ``n``, ``n_pos``, ``prevalence``, ``auc``, the threshold metrics of :func:`confusion_rates`, ``brier``,
        ``ece`` and ``confusion`` (``[[tn, fp], [fn, tp]]``, rows = truth).
    """
    y = np.asarray(y).astype(bool)
    prob = np.asarray(prob, dtype=float)
    call = prob >= threshold
    tp, fp = int((call & y).sum()), int((call & ~y).sum())
    fn, tn = int((~call & y).sum()), int((~call & ~y).sum())
    n = int(y.size)
    return {
        "n": n,
        "n_pos": int(y.sum()),
        "prevalence": _ratio(y.sum(), n),
        "auc": roc_auc(y, prob) if n else float("nan"),
        **confusion_rates(tn, fp, fn, tp),
        "brier": float(np.mean((prob - y) ** 2)) if n else float("nan"),
        "ece": expected_calibration_error(y, prob),
        "confusion": [[tn, fp], [fn, tp]],
    }


def multiclass_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Argmax metrics of a multi-class group: one-vs-rest per class and their unweighted (macro) means.

    ``balanced_accuracy`` is the mean recall of the classes present (scikit-learn's definition), ``brier`` the mean
    over cases of the squared distance between the probability vector and the one-hot truth, ``ece`` the top-label
    ECE (confidence = highest probability, outcome = argmax correct).
    """
    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=float)
    k = probs.shape[1]
    call = probs.argmax(axis=1)
    onehot = np.eye(k)[y] if y.size else np.zeros((0, k))
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, call), 1)
    per_class = []
    for c in range(k):
        tp = int(confusion[c, c])
        fn = int(confusion[c].sum() - tp)
        fp = int(confusion[:, c].sum() - tp)
        tn = int(confusion.sum() - tp - fn - fp)
        rates = confusion_rates(tn, fp, fn, tp)
        per_class.append({"n_pos": tp + fn, "prevalence": _ratio(tp + fn, y.size),
                          "auc": roc_auc(onehot[:, c], probs[:, c]), **rates})
    present = [m for m in per_class if m["n_pos"] > 0]

    def macro(key: str, rows: list[dict[str, Any]]) -> float:
        values = [m[key] for m in rows if np.isfinite(m[key])]
        return float(np.mean(values)) if values else float("nan")

    return {
        "n": int(y.size),
        "auc": macro("auc", per_class),
        "accuracy": _ratio(np.trace(confusion), y.size),
        **{key: macro(key, per_class) for key in ("sensitivity", "specificity", "ppv", "npv", "f1")},
        "balanced_accuracy": macro("sensitivity", present),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))) if y.size else float("nan"),
        "ece": expected_calibration_error(call == y, probs.max(axis=1)) if y.size else float("nan"),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


# ---------------------------------------------------------------------------------------------- DeLong


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """DeLong test of two correlated AUCs on the same cases, with the fast algorithm of Sun & Xu (2014).

    Structural components come from midranks (``O(n log n)``): for positive ``i``,
    ``V10_i = (rank of i among all - rank among positives) / n_neg``; for negative ``j``,
    ``V01_j = 1 - (rank of j among all - rank among negatives) / n_pos``. The covariance of the two AUCs is
    ``S10 / n_pos + S01 / n_neg``; ``z = (auc_a - auc_b) / sqrt(var_a + var_b - 2 cov)``, two-sided p.
    """
    y = np.asarray(y).astype(bool)
    scores = np.vstack([np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)])
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"the DeLong test needs at least 2 positive and 2 negative cases, found {m} and {n}")
    pos, neg = scores[:, y], scores[:, ~y]
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)
    tx, ty = stats.rankdata(pos, axis=1), stats.rankdata(neg, axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var > 1e-15:
        z = diff / np.sqrt(var)
        p = float(2.0 * stats.norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (float("nan"), float("nan"))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, float(np.sqrt(max(var, 0.0))), float(z), p,
                        m + n, m, n)


# ------------------------------------------------------------------------------------------- regression


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and Pearson r (``nan`` with fewer than 2 cases or a constant series)."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    err = pred - y
    r = float("nan")
    if y.size >= 2 and np.std(y) > 0 and np.std(pred) > 0:
        r = float(np.corrcoef(y, pred)[0, 1])
    return {
        "n": int(y.size),
        "mae": float(np.mean(np.abs(err))) if y.size else float("nan"),
        "rmse": float(np.sqrt(np.mean(err**2))) if y.size else float("nan"),
        "pearson_r": r,
    }


def bootstrap_mae_ci(
    y: np.ndarray, pred: np.ndarray, clusters: Sequence[Any] | None = None, n_resamples: int = 1000,
    seed: int = 0, level: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap CI of the MAE (patients resampled when they repeat; no strata)."""
    abs_err = np.abs(np.asarray(pred, dtype=float) - np.asarray(y, dtype=float))
    return bootstrap_ci(lambda w: (w @ abs_err) / w.sum(axis=1), np.zeros(abs_err.size, dtype=int), clusters,
                        n_resamples, seed, level)
