"""The cases a reader should look at: false positives and false negatives at the operating point.

Each case is named by the predictions' pseudonymised key columns (:data:`KEY_COLUMNS` present in the file;
the case id column only when none is), never by a patient identifier: columns such as ``patient_id`` or
``accession_number`` are not shown even when the file has them. The lists are sorted by confidence in the
wrong answer (false positives by descending probability of the positive class, false negatives by ascending)
and cut to the ``top`` most confident.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.report.inputs import Predictions

#: Columns naming a case by key (written by ``radpipe scan`` / ``manifest`` / ``predict``), in display order.
KEY_COLUMNS = ("series_key", "patient_key", "study_key", "case_id", "series_id")
#: Columns never shown, whatever the file holds.
IDENTIFIER_COLUMNS = ("patient_id", "patient_name", "accession_number", "birth_date", "patient_birth_date")
#: Cases listed per kind of error.
TOP_N = 10


def key_columns(pred: Predictions, id_column: str) -> list[str]:
    """The columns naming a case: the key columns present, else ``id_column`` (unless it is an identifier)."""
    columns = [c for c in KEY_COLUMNS if c in pred.frame.columns]
    if not columns and id_column in pred.frame.columns and id_column.lower() not in IDENTIFIER_COLUMNS:
        columns = [id_column]
    return columns


def misclassified(pred: Predictions, threshold: float, id_column: str = "image", top: int = TOP_N) -> dict[str, Any]:
    """False positives and false negatives of a binary task at ``threshold``, most confident first.

    Returns:
        ``key_columns``, ``threshold``, ``n_false_positives``, ``n_false_negatives`` and the lists
        ``false_positives`` / ``false_negatives`` (at most ``top`` each) of ``{<key columns>, "probability"}``
        objects.
    """
    columns = key_columns(pred, id_column)
    score = pred.positive_score
    call = score >= threshold
    truth = pred.truth.astype(bool)

    def listed(mask: np.ndarray, descending: bool) -> list[dict[str, Any]]:
        index = np.flatnonzero(mask)
        index = index[np.argsort(-score[index] if descending else score[index], kind="mergesort")][:top]
        return [{**{c: str(pred.frame[c].iloc[i]) for c in columns},
                 "probability": float(score[i])} for i in index]

    fp, fn = call & ~truth, ~call & truth
    return {"key_columns": columns, "threshold": float(threshold), "n_false_positives": int(fp.sum()),
            "n_false_negatives": int(fn.sum()), "false_positives": listed(fp, True),
            "false_negatives": listed(fn, False)}

