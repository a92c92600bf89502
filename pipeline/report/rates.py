"""Wilson 95% confidence intervals of the rates at the operating point: sensitivity, specificity, PPV, NPV.

Each is a proportion of cases (``tp / (tp + fn)``, ``tn / (tn + fp)``, ``tp / (tp + fp)``, ``tn / (tn + fn)``), so
its interval is :func:`pipeline.statistics.wilson_ci` of that count; ``nan`` where the denominator is 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import statistics as M

#: Rates given with a Wilson 95% CI (``<rate>_ci_low`` / ``<rate>_ci_high``).
CI_RATES = ("sensitivity", "specificity", "ppv", "npv")
CI_KEYS = tuple(f"{rate}_ci_{end}" for rate in CI_RATES for end in ("low", "high"))


def rate_cis(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    """Wilson 95% CIs of sensitivity, specificity, PPV and NPV from a 2x2 table (``nan`` where undefined)."""
    bounds = {"sensitivity": M.wilson_ci(tp, tp + fn), "specificity": M.wilson_ci(tn, tn + fp),
              "ppv": M.wilson_ci(tp, tp + fp), "npv": M.wilson_ci(tn, tn + fn)}
    return {f"{rate}_ci_{end}": bounds[rate][k] for rate in CI_RATES for k, end in enumerate(("low", "high"))}


def one_vs_rest(confusion: Any, j: int, name: str) -> tuple[int, int, int, int]:
    """``tn, fp, fn, tp`` of class ``j``: from its own 2x2 table (multi-label) or the k x k matrix (multi-class)."""
    if isinstance(confusion, dict):
        return tuple(int(v) for v in np.ravel(confusion[name]))  # type: ignore[return-value]
    matrix = np.asarray(confusion)
    tp = int(matrix[j, j])
    fn, fp = int(matrix[j].sum()) - tp, int(matrix[:, j].sum()) - tp
    return int(matrix.sum()) - tp - fn - fp, fp, fn, tp
