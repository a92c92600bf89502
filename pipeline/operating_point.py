"""The operating point of a binary run: fixed once on validation predictions, applied by ``predict`` and ``evaluate``.

``radpipe evaluate --split val`` and ``radpipe report --threshold-from VAL.csv --run RUN_DIR`` fix it with
:func:`fix_operating_point` (the rule of ``eval.threshold``: Youden's J, or the highest threshold reaching
``eval.target_sensitivity``; see :func:`pipeline.statistics.choose_threshold`) and record it in
``RUN_DIR/operating_point.json``::

    {"version": 1, "rule": "youden", "threshold": 0.139, "positive_class": "lesion",
     "source": "val.csv", "split": "val", "n": 40, "auc": 0.93, "sensitivity": 0.9,
     "specificity": 0.85, "date": "2026-12-06T09:40:00Z"}

A case is called positive when the probability of ``positive_class`` is ``>= threshold``. The file is read
back by :func:`read_operating_point` (checked: a run folder is untrusted input) and turned into the threshold
of a command by :func:`resolve_threshold` (``--threshold X|argmax`` overrides it).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import statistics as M
from pipeline.errors import ConfigError, RunError
from pipeline.files import write_atomic

log = logging.getLogger("radpipe")

OPERATING_POINT_FILE = "operating_point.json"
VERSION = 1
ARGMAX = "argmax"
_MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold fixed on validation predictions, and what it achieved there.

    Attributes:
        rule: ``youden`` or ``sensitivity>=T``.
        threshold: a case is positive when the probability of ``positive_class`` is ``>=`` this.
        positive_class: the class called positive.
        source: where the validation predictions came from (a file name, or ``evaluate --split val``).
        split: the split it was fixed on (``val``).
        n: validation cases used.
        auc: validation AUC.
        sensitivity: validation sensitivity at the threshold.
        specificity: validation specificity at the threshold.
        date: when it was fixed (ISO 8601, UTC).
        version: the file format version.
    """

    rule: str
    threshold: float
    positive_class: str
    source: str
    split: str
    n: int
    auc: float | None
    sensitivity: float | None
    specificity: float | None
    date: str
    version: int = VERSION

    def to_json(self) -> str:
        """The text of ``operating_point.json`` (keys in the documented order, NaN as null)."""
        data = asdict(self)
        ordered = {k: data[k] for k in ("version", "rule", "threshold", "positive_class", "source", "split", "n",
                                        "auc", "sensitivity", "specificity", "date")}
        return json.dumps({k: _finite_or_none(v) for k, v in ordered.items()}, indent=2) + "\n"

    def describe(self) -> str:
        """One line: the threshold, its rule, where it came from and what it achieved there."""
        achieved = ", ".join(f"{name} {value:.2f}" for name, value in
                             (("sensitivity", self.sensitivity), ("specificity", self.specificity))
                             if value is not None)
        return (f"threshold {self.threshold:g} for '{self.positive_class}': {self.rule} on {self.n} {self.split} "
                f"case(s) ({self.source}){'; ' + achieved if achieved else ''}")


def rule_name(rule: str, target_sensitivity: float) -> str:
    """The recorded name of an ``eval.threshold`` rule: ``youden`` or ``sensitivity>=0.9``."""
    return f"sensitivity>={target_sensitivity:g}" if rule == "sensitivity" else rule


def fix_operating_point(y: np.ndarray, score: np.ndarray, rule: str, target_sensitivity: float, *,
                        positive_class: str, source: str, split: str = "val") -> OperatingPoint:
    """Fix the operating point of ``rule`` on validation predictions (the one place the rule is applied).

    Args:
        y: true labels, 1 = positive.
        score: probability of the positive class.
        rule: ``youden`` or ``sensitivity`` (``eval.threshold``).
        target_sensitivity: the sensitivity to reach with ``sensitivity``.
        positive_class: the positive class's name.
        source: where the predictions came from.
        split: the split they belong to.

    Raises:
        ValueError: one class only, or an unknown rule.
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    threshold = M.choose_threshold(y, score, rule, target_sensitivity)
    m = M.binary_metrics(y, score, threshold)
    return OperatingPoint(
        rule=rule_name(rule, target_sensitivity), threshold=float(threshold), positive_class=str(positive_class),
        source=source, split=split, n=len(y), auc=_finite_or_none(m["auc"]),
        sensitivity=_finite_or_none(m["sensitivity"]), specificity=_finite_or_none(m["specificity"]),
        date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def write_operating_point(run_dir: str | Path, point: OperatingPoint) -> Path:
    """Write ``RUN_DIR/operating_point.json`` atomically; returns its path."""
    return write_atomic(Path(run_dir) / OPERATING_POINT_FILE, point.to_json())


def read_operating_point(run_dir: str | Path) -> OperatingPoint | None:
    """The run's operating point, or None when it has none.

    Raises:
        RunError: the file is too large, not JSON, or its fields are missing or out of range.
    """
    path = Path(run_dir) / OPERATING_POINT_FILE
    if not path.is_file():
        return None
    fix = f"fix it again with radpipe evaluate --split val, or delete {path}"
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise RunError(f"{path} is {path.stat().st_size} bytes, not an operating point; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not JSON ({e}); {fix}") from e
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise RunError(f"{path}: expected an object with version {VERSION}; {fix}")
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise RunError(f"{path}: 'threshold' must be a number in [0, 1], found {threshold!r}; {fix}")
    if not isinstance(data.get("positive_class"), str) or not data["positive_class"]:
        raise RunError(f"{path}: 'positive_class' must name a class; {fix}")

    def number(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return OperatingPoint(
        rule=str(data.get("rule", ""))[:80], threshold=float(threshold), positive_class=data["positive_class"],
        source=str(data.get("source", ""))[:200], split=str(data.get("split", ""))[:40],
        n=int(number("n") or 0), auc=number("auc"), sensitivity=number("sensitivity"),
        specificity=number("specificity"), date=str(data.get("date", ""))[:40],
    )


def parse_threshold_option(value: str | None) -> float | str | None:
    """``--threshold``: None (the run's operating point), ``argmax``, or a number in [0, 1].

    Raises:
        ConfigError: anything else.
    """
    if value is None:
        return None
    text = value.strip().lower()
    if text == ARGMAX:
        return ARGMAX
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"--threshold {value}: expected a probability in [0, 1] (e.g. 0.3) or 'argmax'")
    return number


def resolve_threshold(run_dir: str | Path, task: str, classes: tuple[str, ...] | list[str],
                      override: float | str | None) -> tuple[float | None, str]:
    """The threshold a command applies to the positive class (None: argmax) and a line saying why.

    Binary tasks take ``override`` when given, else the run's operating point; a run without one uses the
    argmax and says so. Other tasks always use the argmax (a number given for them is an error).

    Raises:
        ConfigError: a numeric ``--threshold`` for a task that is not binary.
        RunError: the run's operating point is unreadable or names a class the run does not have.
    """
    if task != "binary" or len(classes) != 2:
        if isinstance(override, float):
            raise ConfigError(f"--threshold {override:g}: a threshold applies to binary tasks only; this run's task "
                              f"is {task} (its pred is the argmax)")
        return None, f"pred is the argmax ({task} task)"
    if override == ARGMAX:
        return None, "pred is the argmax (--threshold argmax)"
    if isinstance(override, float):
        return override, f"pred: prob_{classes[1]} >= {override:g} (--threshold)"
    point = read_operating_point(run_dir)
    if point is None:
        return None, (f"run {run_dir} has no {OPERATING_POINT_FILE}: pred is the argmax; fix an operating point "
                      "with radpipe evaluate --split val (or give --threshold)")
    if point.positive_class != classes[1]:
        raise RunError(f"{Path(run_dir) / OPERATING_POINT_FILE}: positive class '{point.positive_class}' is not "
                       f"this run's positive class '{classes[1]}'; fix the operating point again with "
                       "radpipe evaluate --split val")
    return point.threshold, (f"pred: prob_{classes[1]} >= {point.threshold:g}, the run's operating point "
                             f"({point.rule} on {point.n} {point.split} case(s), {point.source}, {point.date})")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return _finite_or_none(float(value))
    return value
