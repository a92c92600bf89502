"""``--compare``: the DeLong test of the AUC difference of two models' predictions on the same cases."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import statistics as M
from pipeline.errors import ManifestError, format_problems
from pipeline.report.inputs import Predictions, check_columns


def compare_predictions(a: Predictions, b: Predictions, id_column: str = "image") -> dict[str, Any]:
    """DeLong test of the AUC difference of two models' predictions on the same cases (matched by ``id_column``).

    Raises:
        ManifestError: the id column is missing or repeated, the cases differ (naming the missing ids), or the
            true labels disagree.
    """
    if a.task == "regression":
        raise ManifestError(f"--compare tests a difference of AUCs; {a.source} is a regression task without AUC")
    for p in (a, b):
        check_columns(p.frame, [id_column], p.source, "case id (--id-column)")
        repeated = p.frame[id_column][p.frame[id_column].duplicated()].unique().tolist()
        if repeated:
            raise ManifestError(f"{p.source}: column '{id_column}' repeats {format_problems(repeated)}; "
                                "each case must appear once (choose another --id-column)")
    ids_a, ids_b = a.frame[id_column].tolist(), b.frame[id_column].tolist()
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        parts = [f"{len(only_a)} case(s) missing from {b.source}: {_head(only_a)}" if only_a else "",
                 f"{len(only_b)} case(s) missing from {a.source}: {_head(only_b)}" if only_b else ""]
        raise ManifestError(f"--compare needs the same cases (by '{id_column}'); " + "; ".join(x for x in parts if x)
                            + "; evaluate both models on the same manifest and split")
    order = b.frame.reset_index().set_index(id_column).loc[ids_a, "index"].to_numpy()
    truth_b = b.truth[order]
    if not np.array_equal(a.truth, truth_b):
        bad = [ids_a[i] for i in np.flatnonzero((a.truth != truth_b).reshape(len(ids_a), -1).any(axis=1))]
        raise ManifestError(f"--compare: the true labels of {a.source} and {b.source} differ for "
                            f"{format_problems(bad)}; both must be evaluated on the same manifest")
    out: dict[str, Any] = {"other": b.source, "id_column": id_column, "method": "DeLong (fast algorithm, Sun & Xu "
                           "2014), two-sided"}
    if a.task == "binary":
        result = M.delong_test(a.truth, a.positive_score, b.positive_score[order])
        out.update(_delong_json(result))
        out["n"] = result.n
        return out
    per_class = {}
    for k, c in enumerate(a.classes):
        y = a.truth[:, k] if a.task == "multilabel" else (a.truth == k).astype(int)
        try:
            per_class[c] = _delong_json(M.delong_test(y, a.scores[:, k], b.scores[order, k]))
        except ValueError as e:
            per_class[c] = {"error": str(e)}
    out.update({"n": len(ids_a), "per_class": per_class})
    return out


def _head(ids: list[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _delong_json(r: M.DeLongResult) -> dict[str, Any]:
    half = 1.959963984540054 * r.se_difference
    return {"auc_a": r.auc_a, "auc_b": r.auc_b, "difference": r.difference, "difference_ci_low": r.difference - half,
            "difference_ci_high": r.difference + half, "z": r.z, "p_value": r.p_value, "n": r.n, "n_pos": r.n_pos,
            "n_neg": r.n_neg}
