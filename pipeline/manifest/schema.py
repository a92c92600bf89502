"""The manifest's shared vocabulary: split names, identifier columns, :class:`Problem`, cell text.

Every manifest module imports these; this module imports none of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
SPLIT_SYNONYMS = {"training": "train", "validation": "val", "valid": "val", "dev": "val", "testing": "test"}
PATIENT_COLUMNS = ("patient_id", "patient_key")
IDENTIFIER_COLUMN = re.compile(
    r"^(patient_?name|name|first_?name|last_?name|surname|birth_?date|date_?of_?birth|dob|mrn|"
    r"accession(_?number|_?no)?|ssn|social_security(_number)?|address|phone)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Problem:
    """One problem of a manifest.

    Attributes:
        severity: ``error`` (training would fail or be wrong) or ``warning``.
        row: CSV line number (the header is line 1), or None for the whole manifest.
        column: the column concerned, or None.
        message: what is wrong (expected and found).
        fix: how to fix it.
    """

    severity: str
    row: int | None
    column: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = ", ".join(
            part for part in (f"row {self.row}" if self.row else "", f"column '{self.column}'" if self.column else "")
            if part
        )
        return f"{self.severity}: {where + ': ' if where else ''}{self.message}; fix: {self.fix}"


def cell_text(value: object) -> str:
    """A cell as stripped text; missing values (None, NaN, NA) as ``""``."""
    if value is None:
        return ""
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value).strip()


def normalised_split(value: str) -> str:
    """A split cell in its canonical spelling (``Validation`` -> ``val``)."""
    v = value.strip().lower()
    return SPLIT_SYNONYMS.get(v, v)
