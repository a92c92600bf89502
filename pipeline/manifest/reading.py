"""The CSV manifest: reading it, resolving its image paths, and validating it before training.

A manifest has one row per case: image column(s), label column(s), a patient column,
optionally ``split`` / ``fold`` / ``weight``, and any cohort columns (site, scanner, sex ...),
which are carried through untouched. The schema is documented in ``data_manifests/README.md``.

:func:`validate_manifest` collects every problem (missing columns, unreadable files, unknown
labels, duplicated images, a patient in two splits, classes too rare to stratify, bad weights
...) as :class:`Problem` objects naming the row (the CSV line number), the column and the fix.
Rows are named, never patient identifiers.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import MAX_SHOWN_PROBLEMS, ManifestError
from pipeline.manifest.labels import LabelMap, normalise_label, numeric_aware_key, parse_binary_flag, parse_float

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import Config, DataConfig

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


def read_manifest_csv(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV as text cells, headers and cells stripped, empty cells as ``""``.

    Raises:
        ManifestError: the file is missing, empty or not CSV.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest {p} not found; give the path of a CSV file (see data_manifests/README.md)")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as e:
        raise ManifestError(f"manifest {p} is empty; expected a header line (image,label,patient_id,...)") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())
        raise ManifestError(f"manifest {p} is not a readable UTF-8 CSV ({reason}); save it as CSV UTF-8") from e
    df.columns = [str(c).strip() for c in df.columns]
    for column in df.columns:
        df[column] = df[column].astype(str).str.strip()
    return df


def image_columns(df: pd.DataFrame, data_cfg: DataConfig | None = None) -> list[str]:
    """The image columns: ``data_cfg.image_columns``, or ``image`` plus every ``image_*`` column."""
    if data_cfg is not None:
        return list(data_cfg.image_columns)
    return [c for c in df.columns if c == "image" or c.startswith("image_")] or ["image"]


def patient_column(df: pd.DataFrame, data_cfg: DataConfig | None = None) -> str | None:
    """The column grouping cases by patient: ``data_cfg.patient_column`` or ``patient_key`` when only that exists."""
    wanted = data_cfg.patient_column if data_cfg is not None else PATIENT_COLUMNS[0]
    if wanted in df.columns:
        return wanted
    return next((c for c in PATIENT_COLUMNS if c in df.columns), None)


def resolve_path(value: str, folder: Path) -> str:
    """An image cell as an absolute path (relative cells resolve against ``folder``); empty stays empty."""
    if not value:
        return ""
    return os.path.normpath(os.path.join(folder, os.path.expanduser(value)))


def load_manifest(path: str | Path, data_cfg: DataConfig | None = None) -> pd.DataFrame:
    """Read a manifest ready for validation and datasets.

    Cells are text except ``fold`` (integers) and ``weight`` (floats) when every cell parses
    (otherwise they stay text and :func:`validate_manifest` names the bad cells). Image
    columns become absolute paths; a ``row`` column holds the CSV line number for messages
    and a ``case_id`` column (kept when the CSV has one) the image cell as written.

    Args:
        path: the CSV file.
        data_cfg: the ``data`` config section (image columns); None detects ``image`` / ``image_*``.

    Returns:
        The manifest with ``df.attrs["manifest"]`` and ``df.attrs["folder"]`` set.
    """
    import pandas as pd

    p = Path(path).expanduser().absolute()
    df = read_manifest_csv(p)
    df.insert(0, "row", range(2, len(df) + 2))
    first_image = image_columns(df, data_cfg)[0]
    if "case_id" not in df.columns and first_image in df.columns:
        df["case_id"] = df[first_image]
    for column in image_columns(df, data_cfg):
        if column in df.columns:
            df[column] = [resolve_path(v, p.parent) for v in df[column]]
    for column, kind in (("fold", "Int64"), ("weight", "float64")):
        if column in df.columns:
            cells = df[column].replace("", None)
            numbers = pd.to_numeric(cells, errors="coerce")
            if not (numbers.isna() & cells.notna()).any():
                if kind == "Int64" and (numbers.dropna() % 1 != 0).any():
                    continue
                df[column] = numbers.astype(kind)
    df.attrs["manifest"] = str(p)
    df.attrs["folder"] = str(p.parent)
    return df


def infer_task(df: pd.DataFrame, label_columns: list[str]) -> str:
    """Guess the task of a manifest validated without a config."""
    if len(label_columns) > 1:
        return "multilabel"
    values = {normalise_label(v) for v in df[label_columns[0]]} - {""}
    numbers = [parse_float(v) for v in values]
    if values and all(n is not None for n in numbers):
        if any(not float(n).is_integer() for n in numbers if n is not None) or len(values) > 20:
            return "regression"
    return "binary" if len(values) == 2 else "multiclass"


def _normalised_split(value: str) -> str:
    v = value.strip().lower()
    return SPLIT_SYNONYMS.get(v, v)


def validate_manifest(df: pd.DataFrame, cfg: Config | None = None, check_files: bool = True) -> list[Problem]:
    """Collect every problem of a manifest (from :func:`load_manifest`) before training starts.

    Args:
        df: the manifest.
        cfg: the run config (image and label columns, task, classes, patient column); None infers the task.
        check_files: also check that image files exist and their headers read.

    Returns:
        Problems in row order within each check; errors mean training must not start.
    """
    from pipeline.manifest.checks import cell_text, check_images, check_labels, check_splits, row_classes

    data = cfg.data if cfg is not None else None
    problems: list[Problem] = []
    if "row" not in df.columns:
        df = df.assign(row=range(2, len(df) + 2))
    images = image_columns(df, data)
    labels = list(data.label_columns) if data is not None else ["label"]
    patient = patient_column(df, data)
    required = images + labels
    for column in [c for c in required if c not in df.columns]:
        close = difflib.get_close_matches(column, [str(c) for c in df.columns], n=1, cutoff=0.6)
        hint = f"rename column '{close[0]}' to '{column}'" if close else f"add a '{column}' column"
        problems.append(Problem("error", None, column, f"required column '{column}' is missing", hint))
    if patient is None:
        wanted = data.patient_column if data is not None else PATIENT_COLUMNS[0]
        problems.append(
            Problem(
                "error",
                None,
                wanted,
                f"no patient column ('{wanted}' or patient_key); splits cannot keep a patient's cases together",
                f"add a '{wanted}' column (use the case id when every case is a different patient)",
            )
        )
    for column in df.columns:
        if IDENTIFIER_COLUMN.match(str(column)):
            problems.append(
                Problem(
                    "warning",
                    None,
                    str(column),
                    "column looks like a patient identifier in clear",
                    "remove it, or replace it with pseudonymised keys (radpipe scan writes patient_key)",
                )
            )
    problems += check_images(df, [c for c in images if c in df.columns], check_files)
    classes_of_row: list[frozenset[str]] = []
    all_classes: list[str] = []
    if all(c in df.columns for c in labels):
        task = data.task if data is not None else infer_task(df, labels)
        classes = tuple(data.classes) if data is not None else ()
        problems += check_labels(df, labels, task, classes, patient)
        classes_of_row = row_classes(df, labels, task, classes)
        if task == "multilabel":
            all_classes = list(classes) if len(classes) == len(labels) else labels
        elif task != "regression":
            found = {normalise_label(v) for v in df[labels[0]]} - {""}
            all_classes = [c for c in classes if normalise_label(c) in found] or sorted(found, key=numeric_aware_key)
    problems += check_splits(df, patient, classes_of_row, all_classes)
    if patient is not None:
        for row in df.loc[[not cell_text(v) for v in df[patient]], "row"]:
            problems.append(
                Problem("error", int(row), patient, "patient id is empty", "fill in the patient id of this case")
            )
    return problems


def label_map_for(df: pd.DataFrame, cfg: Config | None) -> LabelMap | None:
    """The label map of a manifest (task inferred without a config), or None when labels are unusable."""
    from pipeline.config import DataConfig

    data = cfg.data if cfg is not None else DataConfig()
    if cfg is None and "label" in df.columns:
        data = DataConfig(task=infer_task(df, ["label"]))
    try:
        return LabelMap.from_manifest(df, data)
    except ManifestError:
        return None


def manifest_summary(df: pd.DataFrame, label_map: LabelMap | None) -> str:
    """A table of cases per split (or fold) and class, with patient counts."""
    import pandas as pd

    from pipeline.manifest.checks import cell_text

    sides = pd.Series(["all"] * len(df), index=df.index, name="split")
    if "split" in df.columns:
        sides = df["split"].map(lambda v: _normalised_split(cell_text(v)) or "(none)")
    if "fold" in df.columns:
        folds = df["fold"].map(lambda v: f"fold {cell_text(v)}" if cell_text(v) else "")
        sides = folds.where(folds != "", sides).rename("fold")
    patient = patient_column(df)
    lines = [f"{len(df)} case(s)" + (f", {len(set(map(cell_text, df[patient])) - {''})} patient(s)" if patient else "")]
    if label_map is None:
        table = sides.value_counts().sort_index().to_frame("cases")
    elif label_map.task == "regression":
        values = pd.to_numeric(df[label_map.label_columns[0]], errors="coerce")
        table = values.groupby(sides).agg(["count", "mean", "min", "max"]).round(3)
    elif label_map.task == "multilabel":
        flags = df[list(label_map.label_columns)].map(lambda v: parse_binary_flag(v) or 0.0)
        table = flags.groupby(sides).sum().astype(int)
        table.insert(0, "cases", sides.value_counts())
    else:
        classes = df[label_map.label_columns[0]].map(
            lambda v: label_map.classes[i] if (i := label_map.index_of(v)) is not None else f"?{v}"
        )
        table = pd.crosstab(sides, classes)
        table = table[sorted(table.columns, key=lambda c: (c.startswith("?"), label_map.classes.index(c)
                                                            if c in label_map.classes else 0))]
        table["total"] = table.sum(axis=1)
    table.index = table.index.astype(str)
    order = sorted(table.index, key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, numeric_aware_key(s)))
    lines.append(table.loc[order].to_string())
    return "\n".join(lines)


def print_problems(problems: list[Problem], limit: int = MAX_SHOWN_PROBLEMS) -> None:
    """Print problems one per line (errors first), at most ``limit`` of them, plus the count of the rest."""
    ordered = sorted(problems, key=lambda p: p.severity != "error")
    for problem in ordered[:limit]:
        print(f"  {problem}")
    if len(ordered) > limit:
        print(f"  ... and {len(ordered) - limit} more")


def validate_manifest_command(args: argparse.Namespace) -> int:
    """``radpipe validate-manifest``: print problems and a summary; exit 2 when any is an error."""
    from pipeline.config import load_config

    cfg = load_config(args.config) if args.config else None
    df = load_manifest(args.manifest, cfg.data if cfg is not None else None)
    problems = validate_manifest(df, cfg, check_files=not args.no_file_check)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    label_map = label_map_for(df, cfg)
    if label_map is not None:
        how = "from --config" if cfg is not None else "inferred; pass --config to check against your config"
        print(f"task {label_map.task} ({how}); classes {list(label_map.classes)}")
    print(manifest_summary(df, label_map))
    if problems:
        print(f"{errors} error(s), {warnings} warning(s) in {args.manifest}:")
        print_problems(problems)
    else:
        print(f"{args.manifest}: no problems found")
    return 2 if errors else 0
