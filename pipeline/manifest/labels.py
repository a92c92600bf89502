"""Label encoding: manifest label values <-> model target indices.

A :class:`LabelMap` is built once from the whole manifest (so every split encodes the
same way) and saved in the run directory as ``labels.json``::

    {"task": "binary", "classes": ["normal", "pneumonia"], "label_columns": ["label"]}

Tasks:
    * ``binary`` / ``multiclass``: one label column holding a class name or number;
      the target is the class index. With ``binary`` the positive class is ``classes[1]``.
    * ``multilabel``: several label columns holding 0/1 each; the target is a list of floats,
      and ``classes`` names the columns' outputs (default: the column names).
    * ``regression``: one label column holding a number; the target is that float.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import DataConfig
from pipeline.errors import ManifestError
from pipeline.files import write_atomic

if TYPE_CHECKING:
    import pandas as pd

TRUE_VALUES = frozenset({"1", "1.0", "true", "yes", "y", "t"})
FALSE_VALUES = frozenset({"0", "0.0", "false", "no", "n", "f"})


def normalise_label(value: object) -> str:
    """The comparable text of a label value: stripped, and ``1.0`` written as ``1``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return text


def numeric_aware_key(value: str) -> tuple[int, float, str]:
    """Sort key putting numbers first in numeric order ("2" < "10"), then text."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def parse_binary_flag(value: object) -> float | None:
    """A multi-label cell as 0.0 / 1.0, or None when it is neither."""
    text = normalise_label(value).lower()
    if text in TRUE_VALUES:
        return 1.0
    if text in FALSE_VALUES:
        return 0.0
    return None


def parse_float(value: object) -> float | None:
    """A finite float from a cell, or None."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class LabelMap:
    """How the label columns of a manifest become model targets.

    Attributes:
        task: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        classes: class names in index order (output names for ``multilabel``; empty for ``regression``).
        label_columns: the manifest columns holding labels.
    """

    task: str
    classes: tuple[str, ...]
    label_columns: tuple[str, ...]

    @classmethod
    def from_manifest(cls, df: pd.DataFrame, data_cfg: DataConfig | None = None) -> LabelMap:
        """Build the map from a manifest and the ``data`` config section.

        Classes are ``data_cfg.classes`` when given, else the sorted unique non-empty values of
        the label column (numbers in numeric order). ``multilabel`` classes default to the
        label column names.

        Raises:
            ManifestError: a label column is missing, or given classes do not fit the task.
        """
        cfg = data_cfg or DataConfig()
        columns = tuple(cfg.label_columns)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ManifestError(
                f"manifest has no label column(s) {missing}; found columns {list(df.columns)}; "
                "add them or set data.label_columns"
            )
        if cfg.task == "regression":
            return cls("regression", (), columns)
        if cfg.task == "multilabel":
            classes = tuple(cfg.classes) or columns
            if len(classes) != len(columns):
                raise ManifestError(
                    f"data.classes has {len(classes)} names but data.label_columns has {len(columns)} columns; "
                    "give one class name per label column (or leave data.classes empty)"
                )
            return cls("multilabel", classes, columns)
        if cfg.classes:
            classes = tuple(cfg.classes)
        else:
            values = {normalise_label(v) for v in df[columns[0]].tolist()} - {""}
            classes = tuple(sorted(values, key=numeric_aware_key))
        label_map = cls(cfg.task, classes, columns)
        if cfg.task == "binary" and len(classes) != 2:
            raise ManifestError(
                f"task binary needs exactly 2 classes, found {len(classes)} {list(classes)} in column "
                f"'{columns[0]}'; set data.task: multiclass or fix the labels"
            )
        return label_map

    @property
    def num_outputs(self) -> int:
        """Number of model outputs: classes (binary: 2), label columns for multilabel, 1 for regression."""
        if self.task == "regression":
            return 1
        return len(self.classes)

    def index_of(self, value: object) -> int | None:
        """The class index of a label value, or None when it is not a known class."""
        wanted = normalise_label(value)
        for i, name in enumerate(self.classes):
            if normalise_label(name) == wanted:
                return i
        return None

    def encode(self, row: Mapping[str, Any]) -> int | list[float] | float:
        """The target of one manifest row (a mapping from column name to cell).

        Raises:
            ManifestError: the label is empty, unknown or not a number, naming the row and column.
        """
        where = f"row {row.get('row', '?')}"
        if self.task == "multilabel":
            target = []
            for column in self.label_columns:
                flag = parse_binary_flag(row.get(column))
                if flag is None:
                    raise ManifestError(
                        f"{where}, column '{column}': expected 0 or 1 for a multi-label column, "
                        f"found {row.get(column)!r}; write 0 or 1"
                    )
                target.append(flag)
            return target
        column = self.label_columns[0]
        value = row.get(column)
        if self.task == "regression":
            number = parse_float(value)
            if number is None:
                raise ManifestError(
                    f"{where}, column '{column}': expected a number for regression, found {value!r}; fix the value"
                )
            return number
        index = self.index_of(value)
        if index is None:
            raise ManifestError(
                f"{where}, column '{column}': label {value!r} is not one of the classes {list(self.classes)}; "
                "fix the label or add the class to data.classes"
            )
        return index

    def decode(self, index: int) -> str:
        """The class (or multi-label output) name of an output index.

        Raises:
            ManifestError: the task is regression (no classes) or the index is out of range.
        """
        if not self.classes:
            raise ManifestError(f"task {self.task} has no classes to decode index {index} into")
        if not 0 <= int(index) < len(self.classes):
            raise ManifestError(f"class index {index} is outside 0..{len(self.classes) - 1} of {list(self.classes)}")
        return self.classes[int(index)]

    def to_json(self) -> str:
        """The map as the JSON text of ``labels.json``."""
        return json.dumps(
            {"task": self.task, "classes": list(self.classes), "label_columns": list(self.label_columns)}, indent=2
        )

    @classmethod
    def from_json(cls, text: str) -> LabelMap:
        """Read a map written by :meth:`to_json`.

        Raises:
            ManifestError: the text is not JSON or lacks a key.
        """
        try:
            values = json.loads(text)
            return cls(str(values["task"]), tuple(values["classes"]), tuple(values["label_columns"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ManifestError(
                f"labels.json: expected an object with task, classes and label_columns, found {text[:80]!r}"
            ) from e

    def save(self, path: str | Path) -> None:
        """Write ``labels.json``."""
        write_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """Read ``labels.json``."""
        p = Path(path)
        if not p.is_file():
            raise ManifestError(f"label map {p} not found; it is written into every run directory as labels.json")
        return cls.from_json(p.read_text(encoding="utf-8"))

    def encode_all(self, rows: Iterable[Mapping[str, Any]]) -> list[int | list[float] | float]:
        """Encode many rows (see :meth:`encode`)."""
        return [self.encode(r) for r in rows]
