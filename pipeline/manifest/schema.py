"""The manifest's shared vocabulary: split names, identifier columns, :class:`Problem`, cell text.

Every manifest module imports these; this module imports none of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
SPLIT_SYNONYMS = {"training": "train", "validation": "val", "valid": "val", "dev": "val", "testing": "test"}
PATIENT_COLUMNS = ("patient_id", "patient_key")
#: matched against normalised_column_name(): the one identifier-column matcher (join and validation)
_IDENTIFIER_NAME = re.compile(
    r"""^(?:patients?|pt)?(?:
        (?:first|last|given|family|middle|full|maiden|fore|sur|nick)?names?|initials
      | dob|birth(?:date|day)|dateofbirth
      | mrn|mrno|medicalrecord(?:number|no|nr|num|id)?|hospital(?:number|no)|nhsnumber
      | ssn|socialsecurity(?:number|no|nr|num)?
      | (?:tele)?phones?(?:numbers?|no|nr|num)?|tel(?:no|nr|number)?
      | (?:mobile(?:phone)?|cellphone)(?:numbers?|no|nr|num)?
      | (?:home|street|postal|mailing)?address(?:line)?\d*|street|zip(?:code)?|post(?:al)?code
      | e?mail(?:address)?
      | accession(?:number|no|nr|num|id)?|acc(?:no|nr|num)
      | (?:study|series|sop)(?:instance)?uid
    )$""",
    re.VERBOSE,
)


def normalised_column_name(name: object) -> str:
    """A column name reduced for matching: lower case, letters and digits only.

    >>> normalised_column_name(" Date of-Birth ")
    'dateofbirth'
    """
    return re.sub(r"[^0-9a-z]", "", str(name).casefold())


def is_identifier_column(name: object) -> bool:
    """Whether a column name says it holds a patient identifier in clear, whatever its spelling.

    Case, spaces, hyphens, dots and underscores are ignored, and common spellings are known: names
    (first / last / given / family, surname, patient name), birth dates (DOB, date of birth),
    MRN / medical record number, SSN / social security, phone / telephone / mobile, address /
    street / zip / postcode, e-mail, accession number, study / series / SOP instance UIDs. The
    grouping column ``patient_id`` is not one by name (manifests need it); ``radpipe manifest``
    drops a label sheet's ``patient_id`` as a key it hashes.

    >>> [is_identifier_column(c) for c in ("Patient Name", "Date of Birth", "E-mail", "MRN#", "site", "age")]
    [True, True, True, True, False, False]
    """
    return bool(_IDENTIFIER_NAME.match(normalised_column_name(name)))



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
