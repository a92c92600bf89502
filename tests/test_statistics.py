"""Tests of pipeline.statistics against scikit-learn, direct formulas and simulation."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from pipeline import statistics as M


def _binary_data(n: int = 300, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + 1.2 * y - 0.5)))
    return y, np.round(score, 2) if ties else score


def test_auc_equals_sklearn_with_ties() -> None:
    y, score = _binary_data()
    assert len(np.unique(score)) < len(score)  # ties present
    assert M.roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)


def test_weighted_auc_equals_auc_of_repeated_cases() -> None:
    y, score = _binary_data(120, seed=1)
    rng = np.random.default_rng(5)
    weights = rng.integers(0, 4, size=(3, y.size))
    got = M.weighted_auc(y, score, weights)
    for row, w in zip(got, weights):
        expected = skm.roc_auc_score(np.repeat(y, w), np.repeat(score, w))
        assert row == pytest.approx(expected, abs=1e-12)


def test_auc_nan_for_one_class() -> None:
    assert np.isnan(M.roc_auc(np.ones(5), np.linspace(0, 1, 5)))


def test_binary_metrics_equal_sklearn() -> None:
    y, prob = _binary_data(400, seed=2)
    t = 0.45
    m = M.binary_metrics(y, prob, t)
    call = (prob >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, call).ravel()
    assert m["confusion"] == [[tn, fp], [fn, tp]]
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, call))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["f1"] == pytest.approx(skm.f1_score(y, call))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, call))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, call))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, prob))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, prob))
    assert (m["n"], m["n_pos"], m["prevalence"]) == (400, int(y.sum()), pytest.approx(y.mean()))


def _ece_direct(y: np.ndarray, prob: np.ndarray) -> float:
    edges = np.linspace(0.0, 1.0, 11)
    total = 0.0
    for k in range(10):
        last = k == 9
        inside = (prob >= edges[k]) & ((prob <= edges[k + 1]) if last else (prob < edges[k + 1]))
        if inside.any():
            total += inside.sum() / len(y) * abs(y[inside].mean() - prob[inside].mean())
    return total


def test_ece_equals_direct_formula() -> None:
    y, prob = _binary_data(500, seed=3, ties=False)
    prob = np.r_[prob, 0.0, 1.0, 0.1, 0.5]  # bin edges included
    y = np.r_[y, 0, 1, 1, 0]
    assert M.expected_calibration_error(y, prob) == pytest.approx(_ece_direct(y, prob), abs=1e-12)
    assert M.expected_calibration_error(y, prob) > 0.01


def test_perfect_calibration_has_small_ece() -> None:
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=50_000)
    y = rng.uniform(size=prob.size) < prob
    assert M.expected_calibration_error(y, prob) < 0.01


def test_multiclass_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(4)
    n, k = 300, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = M.multiclass_metrics(y, probs)
    call = probs.argmax(1)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert m["confusion"] == skm.confusion_matrix(y, call).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, call))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, call))
    assert m["f1"] == pytest.approx(skm.f1_score(y, call, average="macro"))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, call, average="macro"))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, call, average="macro"))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, probs))
    confidence, correct = probs.max(1), (call == y).astype(float)
    assert m["ece"] == pytest.approx(_ece_direct(correct, confidence))


def test_regression_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(6)
    y = rng.normal(50, 10, 200)
    pred = y + rng.normal(0, 4, 200)
    m = M.regression_metrics(y, pred)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(y, pred)[0])
    ci = M.bootstrap_mae_ci(y, pred, n_resamples=500, seed=1)
    assert ci.low < m["mae"] < ci.high


def test_bootstrap_ci_covers_true_auc_at_nominal_rate() -> None:
    """200 binormal datasets (d = 1, n = 200): the 95% CI should cover Phi(d / sqrt 2) about 95% of the time."""
    d, n, datasets = 1.0, 200, 200
    true_auc = stats.norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(2024)
    covered = 0
    start = time.perf_counter()
    for i in range(datasets):
        y = np.r_[np.zeros(n // 2), np.ones(n // 2)]
        score = rng.normal(size=n) + d * y
        ci = M.bootstrap_auc_ci(y, score, n_resamples=200, seed=i)
        assert ci.n_valid == 200 and ci.unit == "case"
        covered += ci.low <= true_auc <= ci.high
    assert 0.88 <= covered / datasets <= 0.99
    assert time.perf_counter() - start < 30


def test_bootstrap_keeps_class_counts_and_is_seeded() -> None:
    y = np.r_[np.zeros(30), np.ones(10)].astype(int)
    chunks, unit = M.bootstrap_weights(y, None, 50, seed=3)
    w = np.concatenate(list(chunks))
    assert unit == "case" and w.shape == (50, 40)
    assert np.all(w[:, y == 1].sum(1) == 10) and np.all(w[:, y == 0].sum(1) == 30)
    score = np.random.default_rng(0).normal(size=40) + 0.5 * y
    a = M.bootstrap_auc_ci(y, score, n_resamples=100, seed=7)
    b = M.bootstrap_auc_ci(y, score, n_resamples=100, seed=7)
    c = M.bootstrap_auc_ci(y, score, n_resamples=100, seed=8)
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)


def test_patient_resampling_widens_ci_for_clustered_data() -> None:
    """Five near-identical cases per patient: case resampling pretends there are 5x more independent cases."""
    rng = np.random.default_rng(11)
    patients, per = 60, 5
    y_patient = np.r_[np.zeros(patients // 2), np.ones(patients // 2)].astype(int)
    latent = rng.normal(size=patients) + 0.8 * y_patient
    y = np.repeat(y_patient, per)
    score = np.repeat(latent, per) + rng.normal(scale=0.05, size=patients * per)
    ids = np.repeat(np.arange(patients), per)
    case = M.bootstrap_auc_ci(y, score, None, n_resamples=1000, seed=0)
    patient = M.bootstrap_auc_ci(y, score, ids, n_resamples=1000, seed=0)
    assert patient.unit == "patient" and case.unit == "case"
    assert (patient.high - patient.low) > 1.6 * (case.high - case.low)
    unique = M.bootstrap_auc_ci(y, score, np.arange(y.size), n_resamples=1000, seed=0)
    assert unique.unit == "case" and (unique.low, unique.high) == (case.low, case.high)


def _delong_reference(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) written out: O(n^2) structural components, returns (z, p)."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, aucs = [], [], []
    for s in (a, b):
        x, z = s[pos], s[neg]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    s = s10 / m + s01 / n
    z = (aucs[0] - aucs[1]) / np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return float(z), float(2 * (1 - stats.norm.cdf(abs(z))))


def test_delong_agrees_with_structural_components_formula() -> None:
    y, a = _binary_data(250, seed=8)
    rng = np.random.default_rng(9)
    b = np.round(np.clip(a + rng.normal(scale=0.15, size=a.size), 0, 1), 2)
    result = M.delong_test(y, a, b)
    z, p = _delong_reference(y, a, b)
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-7)
    assert result.auc_a == pytest.approx(skm.roc_auc_score(y, a))
    assert result.auc_b == pytest.approx(skm.roc_auc_score(y, b))
    assert result.difference == pytest.approx(result.auc_a - result.auc_b)
    assert (result.n, result.n_pos) == (250, int(y.sum()))


def test_delong_identical_scores_gives_p_one() -> None:
    y, a = _binary_data(50, seed=1)
    r = M.delong_test(y, a, a)
    assert r.difference == 0 and r.p_value == 1.0


def test_youden_threshold_maximises_j() -> None:
    y, score = _binary_data(300, seed=12)
    t = M.youden_threshold(y, score)
    fpr, tpr, thresholds = skm.roc_curve(y, score)
    best = np.max(tpr - fpr)
    call = score >= t
    assert (call[y == 1].mean() - call[y == 0].mean()) == pytest.approx(best)
    below, above = np.max(score[score < t]), np.min(score[score >= t])
    assert t == pytest.approx((below + above) / 2)  # the middle of the gap, not on a validation score


def test_sensitivity_threshold_reaches_target_with_best_specificity() -> None:
    y, score = _binary_data(300, seed=13, ties=False)
    t = M.sensitivity_threshold(y, score, 0.9)
    assert (score[y == 1] >= t).mean() >= 0.9
    higher = np.min(score[score > t])  # the lowest validation score called positive
    assert (score[y == 1] >= higher).mean() >= 0.9  # the threshold sits below it, in the gap
    assert (score[y == 1] > higher).mean() < 0.9  # and no higher score reaches the target
    assert M.choose_threshold(y, score, "sensitivity", 0.9) == t
    with pytest.raises(ValueError):
        M.youden_threshold(np.ones(4), np.arange(4.0))


def test_undefined_ratios_are_nan() -> None:
    m = M.binary_metrics(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]), threshold=0.9)
    assert np.isnan(m["ppv"]) and m["sensitivity"] == 0.0 and m["specificity"] == 1.0


def test_wilson_interval_matches_published_values_and_covers() -> None:
    # Wilson (1927) / Newcombe (1998): 81 of 263 -> 0.2553-0.3662; 0 of 10 -> 0-0.2775
    assert M.wilson_ci(81, 263) == pytest.approx((0.25529, 0.36621), abs=1e-4)
    assert M.wilson_ci(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert M.wilson_ci(10, 10) == (pytest.approx(0.72247, abs=1e-4), 1.0)
    assert all(np.isnan(M.wilson_ci(0, 0)))
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        k = int(rng.binomial(40, 0.8))
        low, high = M.wilson_ci(k, 40)
        hits += low <= 0.8 <= high
    assert 0.90 <= hits / 2000 <= 0.985  # Wilson coverage oscillates around 95% with n
