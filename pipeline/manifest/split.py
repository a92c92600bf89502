"""Patient-grouped, label-stratified splits: train/val/test or K folds.

Every case of a patient lands on the same side, and each side gets about the same class
proportions as the whole manifest. Train/val/test uses a greedy assignment of patient
groups (rarest classes and biggest groups first, each to the side whose share of the
group's classes is furthest below its target); K folds use scikit-learn's
``StratifiedGroupKFold``. Both are deterministic for a given seed.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ManifestError, format_problems
from pipeline.manifest.labels import normalise_label, numeric_aware_key, parse_binary_flag, parse_float

from pipeline.manifest.reading import image_columns
from pipeline.manifest.schema import cell_text

if TYPE_CHECKING:
    import pandas as pd

SIDES = ("train", "val", "test")
REGRESSION_BINS = 5


def _require_column(df: pd.DataFrame, column: str, option: str) -> None:
    if column not in df.columns:
        close = difflib.get_close_matches(column, [str(c) for c in df.columns], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ManifestError(
            f"{option} column '{column}' is not in the manifest (columns: {list(df.columns)}); "
            f"give an existing column with {option}.{hint}"
        )


def stratify_targets(df: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """The per-row stratification targets as a (rows, classes) count matrix and the class names.

    One column: one-hot of its values (numbers with more than 10 distinct values are binned
    into quantiles, for regression). Several columns: their 0/1 flags (multi-label) plus a
    ``none`` column for rows with no positive label. No column: one class.
    """
    import pandas as pd

    n = len(df)
    if not columns:
        return np.ones((n, 1)), ["all"]
    for column in columns:
        _require_column(df, column, "--stratify")
    if len(columns) > 1:
        flags = np.array([[parse_binary_flag(v) or 0.0 for v in df[c]] for c in columns]).T.reshape(n, len(columns))
        none = (flags.sum(axis=1) == 0).astype(float)[:, None]
        return np.concatenate([flags, none], axis=1), [*columns, "none"]
    values = [normalise_label(v) for v in df[columns[0]]]
    numbers = [parse_float(v) for v in values]
    if all(x is not None for x in numbers) and len(set(values)) > 10:
        bins = pd.qcut(pd.Series(numbers, dtype=float), q=REGRESSION_BINS, duplicates="drop")
        values = [str(b) for b in bins]
    names = sorted(set(values), key=numeric_aware_key)
    index = {name: i for i, name in enumerate(names)}
    targets = np.zeros((n, len(names)))
    targets[np.arange(n), [index[v] for v in values]] = 1.0
    return targets, names


def _groups(df: pd.DataFrame, group: str) -> tuple[np.ndarray, int]:
    _require_column(df, group, "--group")
    cells = df[group].map(cell_text)
    empty = [i + 2 for i, v in enumerate(cells) if not v]
    if empty:
        raise ManifestError(
            format_problems([f"row {r}, column '{group}': patient id is empty" for r in empty])
            + f"; fill in '{group}' (use the case id when every case is a different patient)"
        )
    codes, uniques = cells.factorize()
    return np.asarray(codes), len(uniques)


def _check_class_groups(targets: np.ndarray, names: list[str], codes: np.ndarray, parts: int, what: str) -> None:
    """Raise when a class has fewer patients than sides to spread it over."""
    problems = []
    for c, name in enumerate(names):
        n_groups = len(np.unique(codes[targets[:, c] > 0]))
        if 0 < n_groups < parts:
            problems.append(f"class '{name}' has {n_groups} patient(s), fewer than the {parts} {what}")
    if problems:
        raise ManifestError(
            format_problems(problems)
            + "; collect more cases, merge rare classes, use fewer sides (--val 0 / --test 0 / fewer --folds) "
            "or stratify on another column"
        )


def greedy_group_assignment(
    group_targets: np.ndarray, fractions: list[float], seed: int
) -> np.ndarray:
    """Assign each patient group to a side so that every class is spread in ``fractions``.

    Args:
        group_targets: (groups, classes) case counts of each class in each group.
        fractions: target share of each side (sums to 1; a 0 side gets nothing).
        seed: ties and equal groups are ordered by this seed.

    Returns:
        The side index of each group.
    """
    rng = np.random.default_rng(seed)
    n_groups, _ = group_targets.shape
    frac = np.asarray(fractions, dtype=float)
    totals = group_targets.sum(axis=0)
    wanted = frac[:, None] * totals[None, :]
    counts = np.zeros_like(wanted)
    order = rng.permutation(n_groups)
    present = group_targets > 0
    rarity = np.where(present, totals[None, :], np.inf).min(axis=1)
    size = group_targets.sum(axis=1)
    order = order[np.lexsort((-size[order], rarity[order]))]
    side_of = np.empty(n_groups, dtype=int)
    open_sides = np.flatnonzero(frac > 0)
    for g in order:
        t = group_targets[g]
        deficit = (wanted - counts) / np.maximum(wanted, 1e-9)
        score = (deficit * t[None, :]).sum(axis=1) / max(t.sum(), 1e-9)
        score = score[open_sides] + 1e-6 * frac[open_sides]
        side = open_sides[int(np.argmax(score))]
        side_of[g] = side
        counts[side] += t
    return side_of


def assign_splits(
    df: pd.DataFrame, group: str, stratify: list[str], val: float = 0.1, test: float = 0.2, seed: int = 0
) -> list[str]:
    """A train/val/test side for each row, patients kept together, classes stratified.

    Raises:
        ManifestError: bad fractions, a missing column, an empty patient id, or a class with
            fewer patients than sides.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ManifestError(f"--val {val} and --test {test}: expected fractions >= 0 with val + test < 1")
    fractions = [1 - val - test, val, test]
    codes, n_groups = _groups(df, group)
    targets, names = stratify_targets(df, stratify)
    parts = sum(f > 0 for f in fractions)
    if n_groups < parts:
        raise ManifestError(f"{n_groups} patient(s) cannot fill {parts} sides; lower --val / --test to 0")
    if len(stratify) == 1:
        _check_class_groups(targets, names, codes, parts, "sides (train/val/test)")
    group_targets = np.zeros((n_groups, targets.shape[1]))
    np.add.at(group_targets, codes, targets)
    side_of = greedy_group_assignment(group_targets, fractions, seed)
    return [SIDES[side_of[c]] for c in codes]


def assign_folds(df: pd.DataFrame, group: str, stratify: list[str], folds: int, seed: int = 0) -> list[int]:
    """A fold number 0..K-1 for each row, patients kept together, classes stratified.

    One stratification column uses ``StratifiedGroupKFold``; several (multi-label) use the
    greedy assignment with equal shares.
    """
    if folds < 2:
        raise ManifestError(f"--folds {folds}: expected at least 2 folds")
    codes, n_groups = _groups(df, group)
    targets, names = stratify_targets(df, stratify)
    if n_groups < folds:
        raise ManifestError(f"{n_groups} patient(s) cannot fill {folds} folds; use fewer --folds")
    if len(stratify) == 1:
        from sklearn.model_selection import StratifiedGroupKFold

        _check_class_groups(targets, names, codes, folds, "folds")
        y = targets.argmax(axis=1)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        fold_of = np.empty(len(df), dtype=int)
        for k, (_, held) in enumerate(splitter.split(np.zeros(len(df)), y, codes)):
            fold_of[held] = k
        return fold_of.tolist()
    group_targets = np.zeros((n_groups, targets.shape[1]))
    np.add.at(group_targets, codes, targets)
    side_of = greedy_group_assignment(group_targets, [1.0 / folds] * folds, seed)
    return [int(side_of[c]) for c in codes]


def split_table(sides: list[str] | list[int], df: pd.DataFrame, stratify: list[str]) -> str:
    """Class counts per side as text."""
    import pandas as pd

    targets, names = stratify_targets(df, stratify)
    table = pd.DataFrame(targets, columns=names).groupby(pd.Series(sides, name="side")).sum().astype(int)
    table["total"] = pd.Series(sides).value_counts()
    order = sorted(table.index, key=lambda s: (SIDES.index(s) if s in SIDES else len(SIDES), str(s)))
    return table.loc[order].to_string()


def rebase_image_paths(df: pd.DataFrame, source: Path, target: Path) -> pd.DataFrame:
    """Rewrite relative image cells so they still point at the same files from ``target``'s folder."""
    src, dst = source.absolute().parent, target.absolute().parent
    if src == dst:
        return df
    df = df.copy()
    for column in image_columns(df):
        if column in df.columns:
            df[column] = [
                os.path.relpath(os.path.normpath(os.path.join(src, v)), dst) if v and not os.path.isabs(v) else v
                for v in df[column]
            ]
    return df
