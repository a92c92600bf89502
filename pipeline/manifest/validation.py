"""Validating a manifest before training: every problem collected, named by row, column and fix.

:func:`validate_manifest` collects every problem (missing columns, unreadable files, unknown
labels, duplicated images, a patient in two splits, classes too rare to stratify, bad weights
...) as :class:`~pipeline.manifest.schema.Problem` objects naming the row (the CSV line number),
the column and the fix. Rows are named, never patient identifiers.
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from pipeline.config import Config, DataConfig
from pipeline.errors import MAX_SHOWN_PROBLEMS, ManifestError
from pipeline.manifest.checks import check_images, check_labels, check_splits, row_classes
from pipeline.manifest.labels import LabelMap, normalise_label, numeric_aware_key, parse_binary_flag, parse_float
from pipeline.manifest.reading import image_columns, patient_column
from pipeline.manifest.schema import PATIENT_COLUMNS, SPLITS, Problem, cell_text, is_identifier_column, normalised_split

if TYPE_CHECKING:
    import pandas as pd


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


def validate_manifest(
    df: pd.DataFrame, cfg: Config | None = None, check_files: bool = True, *, deep: bool = False, strict: bool = False
) -> list[Problem]:
    """Collect every problem of a manifest (from :func:`load_manifest`) before training starts.

    Args:
        df: the manifest.
        cfg: the run config (image and label columns, task, classes, patient column); None infers the task.
        check_files: also open every image: recognised by name and content, header and first slice decoded
            (see :mod:`pipeline.manifest.image_files`).
        deep: with ``check_files``, decode every voxel of every image instead.
        strict: image cells holding absolute paths or leading outside the manifest's folder are errors
            (warnings otherwise).

    Returns:
        Problems in row order within each check; errors mean training must not start.
    """
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
        if is_identifier_column(str(column)):
            problems.append(
                Problem(
                    "warning",
                    None,
                    str(column),
                    "column looks like a patient identifier in clear",
                    "remove it, or replace it with pseudonymised keys (radpipe scan writes patient_key)",
                )
            )
    problems += check_images(df, [c for c in images if c in df.columns], check_files, deep=deep, strict=strict)
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
    data = cfg.data if cfg is not None else DataConfig()
    if cfg is None and "label" in df.columns:
        data = DataConfig(task=infer_task(df, ["label"]))
    try:
        return LabelMap.from_manifest(df, data)
    except ManifestError:
        return None


def class_order_line(label_map: LabelMap, from_config: bool) -> str:
    """The task and classes of a manifest, and (without a config) where their order, so the positive class, comes from.

    >>> class_order_line(LabelMap("binary", ("lesion", "normal"), ("label",)), from_config=False).split(". ")[0]
    "task binary (inferred); classes ['lesion', 'normal'] in sorted order, so the positive class would be 'normal'"
    """
    classes = list(label_map.classes)
    binary = label_map.task == "binary" and len(classes) == 2
    if from_config:
        positive = f", positive class '{classes[1]}'" if binary else ""
        return f"task {label_map.task} (from --config); classes {classes}{positive}"
    line = f"task {label_map.task} (inferred); classes {classes}"
    if not classes:
        return f"{line}; pass --config to check against your config"
    line += " in sorted order" + (f", so the positive class would be '{classes[1]}'" if binary else "")
    if binary:
        how = f"e.g. data.classes: [{classes[1]}, {classes[0]}] makes '{classes[0]}' the positive class"
    else:
        how = f"e.g. data.classes: [{', '.join(classes)}]"
    return (f"{line}. The class order (binary: negative first, positive second) comes from the config: set it "
            f"with data.classes in your config ({how}) and pass it with --config")


def manifest_summary(df: pd.DataFrame, label_map: LabelMap | None) -> str:
    """A table of cases per split (or fold) and class, with patient counts."""
    import pandas as pd

    sides = pd.Series(["all"] * len(df), index=df.index, name="split")
    if "split" in df.columns:
        sides = df["split"].map(lambda v: normalised_split(cell_text(v)) or "(none)")
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
