"""The checks behind :func:`pipeline.manifest.validation.validate_manifest`, one function per concern.

Each check returns a list of :class:`~pipeline.manifest.schema.Problem`; none raises on bad input.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import TYPE_CHECKING

from pipeline.manifest.image_files import image_file_problems
from pipeline.manifest.labels import (
    normalise_label,
    numeric_aware_key,
    parse_binary_flag,
    parse_float,
)
from pipeline.manifest.schema import SPLIT_SYNONYMS, SPLITS, Problem, cell_text

if TYPE_CHECKING:
    import pandas as pd

MIN_PATIENTS_TO_SPLIT = 3
CHECK_WORKERS = 8


def _problem(severity: str, row: int | None, column: str | None, message: str, fix: str) -> Problem:
    return Problem(severity, row, column, message, fix)


def check_image_locations(df: pd.DataFrame, columns: list[str], strict: bool = False) -> list[Problem]:
    """Image cells written as absolute paths, and cells that lead outside the manifest's folder.

    One problem per column and kind (a warning; an error with ``strict``) naming the first rows, so a
    manifest kept apart from its images is one line, not one per row. Needs the ``folder`` and
    ``absolute_images`` attributes :func:`pipeline.manifest.reading.load_manifest` sets (without ``folder``
    nothing is checked).
    """
    folder = df.attrs.get("folder")
    if not folder:
        return []
    severity = "error" if strict else "warning"
    relax = "" if strict else "; validate-manifest --strict makes this an error"
    problems: list[Problem] = []
    for column in columns:
        absolute = df.attrs.get("absolute_images", {}).get(column, ())
        if absolute:
            problems.append(_problem(
                severity, absolute[0], column,
                f"{len(absolute)} image cell(s) hold an absolute path ({_rows(list(absolute))}): the manifest works "
                "only on this machine and may name any file on it",
                f"write paths relative to the manifest's folder {folder}{relax}"))
        written_absolute = set(absolute)
        outside = [(int(r), v) for r, v in zip(df["row"], df[column])
                   if v and int(r) not in written_absolute and os.path.commonpath([folder, v]) != folder]
        if outside:
            problems.append(_problem(
                severity, outside[0][0], column,
                f"{len(outside)} relative image path(s) lead outside the manifest's folder {folder} "
                f"({_rows([r for r, _ in outside])}; first: {outside[0][1]})",
                f"keep the images in or below the manifest's folder, or move the manifest up to them{relax}"))
    return problems


def check_images(
    df: pd.DataFrame,
    columns: list[str],
    check_files: bool,
    workers: int = CHECK_WORKERS,
    *,
    deep: bool = False,
    strict: bool = False,
) -> list[Problem]:
    """Empty, duplicated, absolute or outside image cells and (with ``check_files``) unreadable images.

    Args:
        df: the manifest (from :func:`pipeline.manifest.reading.load_manifest`).
        columns: its image columns.
        check_files: open each image: recognised by name and content, header and first slice decoded
            (:func:`~pipeline.manifest.image_files.image_file_problem`).
        workers: threads opening images when opening them waits on storage
            (:func:`~pipeline.manifest.image_files.image_file_problems`).
        deep: decode every voxel of every image instead of the first slice.
        strict: absolute paths and paths outside the manifest's folder are errors, not warnings.
    """
    problems: list[Problem] = check_image_locations(df, columns, strict)
    for column in columns:
        first_row: dict[str, int] = {}
        for row, value in zip(df["row"], df[column]):
            if not value:
                problems.append(
                    _problem("error", int(row), column, "image path is empty", "fill in the image path or drop the row")
                )
            elif value in first_row:
                problems.append(
                    _problem(
                        "error",
                        int(row),
                        column,
                        f"image is the same file as row {first_row[value]}: {value}",
                        "remove the duplicated row (one row per case)",
                    )
                )
            else:
                first_row[value] = int(row)
        if check_files and first_row:
            paths = list(first_row)
            results = image_file_problems(paths, deep=deep, workers=workers)
            for path, message in zip(paths, results):
                if message:
                    problems.append(
                        _problem(
                            "error",
                            first_row[path],
                            column,
                            message,
                            "fix the path (relative paths resolve against the manifest's folder) or the file",
                        )
                    )
    return sorted(problems, key=lambda p: (p.column or "", p.row or 0))


def row_classes(df: pd.DataFrame, labels: list[str], task: str, classes: tuple[str, ...]) -> list[frozenset[str]]:
    """The class name(s) of each row (a multi-label row: its positive columns); unusable labels give empty sets."""
    if task == "regression":
        return [frozenset()] * len(df)
    if task == "multilabel":
        names = dict(zip(labels, classes)) if len(classes) == len(labels) else {c: c for c in labels}
        return [
            frozenset(names[c] for c in labels if parse_binary_flag(cells[c]) == 1.0)
            for cells in df[labels].to_dict("records")
        ]
    known = {normalise_label(c): c for c in classes}
    result = []
    for value in df[labels[0]]:
        v = normalise_label(value)
        result.append(frozenset([known.get(v, v) if known else v]) if v and (not known or v in known) else frozenset())
    return result


def check_labels(
    df: pd.DataFrame, labels: list[str], task: str, classes: tuple[str, ...], patient: str | None
) -> list[Problem]:
    """Empty, unknown or malformed labels; class counts that cannot be trained or stratified."""
    problems: list[Problem] = []
    rows = [int(r) for r in df["row"]]
    if task == "multilabel":
        for column in labels:
            positives = 0
            for row, value in zip(rows, df[column]):
                flag = parse_binary_flag(value)
                if flag is None:
                    problems.append(
                        _problem("error", row, column, f"expected 0 or 1 for a multi-label column, found {value!r}",
                                 "write 0 or 1")
                    )
                positives += flag == 1.0
            if positives == 0:
                problems.append(
                    _problem("warning", None, column, "no case is positive for this label",
                             "drop the column from data.label_columns or add positive cases")
                )
        return problems
    column = labels[0]
    if task == "regression":
        for row, value in zip(rows, df[column]):
            if parse_float(value) is None:
                problems.append(
                    _problem("error", row, column, f"expected a number for regression, found {value!r}",
                             "write a number (e.g. 42.5)")
                )
        return problems
    known = {normalise_label(c) for c in classes}
    for row, value in zip(rows, df[column]):
        v = normalise_label(value)
        if not v:
            problems.append(_problem("error", row, column, "label is empty", "fill in the label or drop the row"))
        elif known and v not in known:
            problems.append(
                _problem("error", row, column, f"label {value!r} is not one of the classes {list(classes)}",
                         "fix the label or add the class to data.classes")
            )
    found = sorted({normalise_label(v) for v in df[column]} - {""}, key=numeric_aware_key)
    n_classes = len(classes) if classes else len(found)
    if task == "binary" and n_classes != 2:
        problems.append(
            _problem("error", None, column, f"task binary needs 2 classes, found {n_classes}: {found}",
                     "set data.task: multiclass (or fix the labels)")
        )
    if classes:
        for name in classes:
            if normalise_label(name) not in found:
                problems.append(
                    _problem("warning", None, column, f"class '{name}' of data.classes has no case",
                             "add cases of this class or remove it from data.classes")
                )
    if "split" not in df.columns and "fold" not in df.columns:
        per_class: dict[str, set[str]] = defaultdict(set)
        groups = df[patient] if patient else df["row"]
        for value, group in zip(df[column], groups):
            if normalise_label(value):
                per_class[normalise_label(value)].add(cell_text(group))
        for name, members in sorted(per_class.items()):
            if len(members) < MIN_PATIENTS_TO_SPLIT:
                problems.append(
                    _problem(
                        "error" if len(members) < 2 else "warning",
                        None,
                        column,
                        f"class '{name}' has {len(members)} patient(s); a stratified train/val/test split needs "
                        f"at least {MIN_PATIENTS_TO_SPLIT} (2 for train/test only)",
                        "collect more cases, merge the class into another, or split with fewer sides (--val 0)",
                    )
                )
    return problems


def check_splits(
    df: pd.DataFrame, patient: str | None, classes_of_row: list[frozenset[str]], all_classes: list[str]
) -> list[Problem]:
    """Bad split / fold / weight values, patients in two splits (leakage), classes absent from a split."""
    problems: list[Problem] = []
    rows = [int(r) for r in df["row"]]
    for side in ("split", "fold"):
        if side not in df.columns:
            continue
        values: list[str | None] = []
        held_out = (
            [cell_text(v).lower() == "test" for v in df["split"]] if "split" in df.columns else [False] * len(df)
        )
        for row, cell, is_test in zip(rows, df[side], held_out):
            text = cell_text(cell)
            value: str | None = None
            if side == "fold" and not text and is_test:
                pass  # a held-out test case belongs to no fold
            elif side == "split":
                if text.lower() in SPLITS:
                    value = text.lower()
                elif not text:
                    problems.append(_problem("error", row, side, "split is empty", "write train, val or test"))
                else:
                    hint = SPLIT_SYNONYMS.get(text.lower())
                    problems.append(
                        _problem("error", row, side, f"split {text!r} is not one of train, val, test",
                                 f"write '{hint}'" if hint else "write train, val or test")
                    )
            else:
                number = parse_float(text)
                if number is None or not number.is_integer() or number < 0:
                    problems.append(
                        _problem("error", row, side, f"fold {text!r} is not a whole number >= 0",
                                 "write the fold number (0, 1, ...) or run radpipe split --folds K")
                    )
                else:
                    value = str(int(number))
            values.append(value)
        present = sorted({v for v in values if v is not None}, key=numeric_aware_key)
        if side == "split" and present and "val" not in present and "fold" not in df.columns:
            problems.append(
                _problem("warning", None, side, "no case is in the val split; the best checkpoint cannot be chosen",
                         "assign val cases (radpipe split --val 0.1)")
            )
        if patient is not None:
            sides_of: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
            for row, value, group in zip(rows, values, map(cell_text, df[patient])):
                if value is not None and group:
                    sides_of[group][value].append(row)
            for where in sides_of.values():
                if len(where) > 1:
                    ordered = sorted(where.items(), key=lambda kv: (_side_order(kv[0]), numeric_aware_key(kv[0])))
                    parts = [f"{name} ({_rows(r)})" for name, r in ordered]
                    first = min(r[0] for r in where.values())
                    problems.append(
                        _problem("error", first, patient,
                                 f"the same patient is in {len(where)} {side}s: {' and '.join(parts)} (leakage)",
                                 f"put all cases of a patient in one {side} (radpipe split groups by patient)")
                    )
        for name in present:
            seen = set().union(*[c for c, v in zip(classes_of_row, values) if v == name]) if classes_of_row else set()
            for cls in all_classes:
                if cls not in seen:
                    severity = "error" if side == "split" and name == "train" else "warning"
                    problems.append(
                        _problem(severity, None, side, f"class '{cls}' has no case in {side} {name}",
                                 "re-split with radpipe split (stratified by label) or add cases")
                    )
    problems += check_weights(df)
    return problems


def _side_order(name: str) -> int:
    return SPLITS.index(name) if name in SPLITS else len(SPLITS)


def _rows(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return f"row{'s' if len(rows) > 1 else ''} {shown}{' ...' if len(rows) > limit else ''}"


def check_weights(df: pd.DataFrame) -> list[Problem]:
    """A ``weight`` column must hold finite numbers >= 0, not all zero."""
    if "weight" not in df.columns:
        return []
    problems: list[Problem] = []
    total = 0.0
    for row, cell in zip(df["row"], df["weight"]):
        number = parse_float(cell)
        if number is None or number < 0:
            problems.append(
                _problem("error", int(row), "weight", f"weight {cell!r} is not a number >= 0",
                         "write a weight >= 0 (1 = normal) or leave the column out")
            )
        else:
            total += number
    if not problems and total == 0 and len(df):
        problems.append(_problem("error", None, "weight", "every weight is 0", "give the cases weights > 0"))
    return problems
