"""Import a folder of pictures (PNG, JPEG, TIFF, BMP) as a manifest: ``radpipe import-images``.

Two layouts:

* an **ImageFolder** tree, as torchvision's ``ImageFolder`` reads it: one subfolder per class
  (``NORMAL/``, ``PNEUMONIA/``), optionally under ``train/``, ``val/``, ``test/`` (also ``training``,
  ``validation``, ``valid``, ``dev``, ``testing``), which become the ``split`` column; classes are the folder
  names in sorted order, as ``ImageFolder`` numbers them;
* a **flat** (or any) folder with a **label sheet** (``--labels SHEET.csv --key COLUMN``) whose key column names
  each file by its path relative to SRC, its file name, or its stem; labels come from ``--label-column``
  (several comma-separated columns: a multi-label task of 0/1 cells). The sheet's other columns are carried
  (cohorts: site, sex, ...), except identifier columns, dropped under any spelling as ``radpipe manifest``
  drops them.

Patients: public sets hold several images per patient (``COVID-00003a.jpg``, ``COVID-00003b.jpg``, follow-up
films). ``--patient-column COL`` (a sheet column) or ``--patient-pattern REGEX`` (searched in the file name;
its first group, or the whole match) gives the patient, written pseudonymised as ``patient_key``
(:mod:`pipeline.pseudonym`), so splits keep a patient's images on one side. Without either, ``patient_id``
is the image's relative path and a warning says that splits are per image and may leak patients.

Splits: kept from the tree (or a sheet ``split`` column); a tree without ``val/`` gets a validation side carved
from ``train`` by patient; rows without a split are assigned train / val / test (patient-grouped, stratified,
as ``radpipe split``).

Writes ``DIR/manifest.csv`` (image paths relative to DIR), ``DIR/labels.json``, ``DIR/config.yaml`` (the
``--preset`` config with this data section, else a 224-px 2D starting config) and ``DIR/unmatched.csv`` (every
file and sheet row that matched nothing, with the reason).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import (
    Config,
    config_from_dict,
    load_config,
    save_config,
    with_changes,
)
from pipeline.errors import ManifestError
from pipeline.files import atomic_open
from pipeline.manifest.join import HASHED_KEY_COLUMNS
from pipeline.manifest.labels import LabelMap, normalise_label, numeric_aware_key
from pipeline.manifest.reading import read_manifest_csv
from pipeline.manifest.schema import (
    SPLIT_SYNONYMS,
    SPLITS,
    is_identifier_column,
    normalised_column_name,
    normalised_split,
)
from pipeline.manifest.split import assign_splits
from pipeline.pseudonym import Pseudonymiser
from transforms.image_files import PICTURE_SUFFIXES, is_picture

if TYPE_CHECKING:
    import pandas as pd

SPLIT_FOLDERS = frozenset(SPLITS) | frozenset(SPLIT_SYNONYMS)
#: The starting config without ``--preset``: a 2D 224-px ResNet-18 that trains offline.
DEFAULT_SECTIONS = {
    "transforms": {"spatial_dims": 2, "size": [224, 224], "orientation": "", "intensity": "minmax",
                   "channels": "auto", "augment": "light"},
    "model": {"name": "resnet18"},
}
_RESERVED = ("image", "split", "patient_key", "patient_id")


@dataclass
class ImageImport:
    """What :func:`import_images` wrote and found.

    Attributes:
        manifest: the manifest written.
        label_map: task, classes, label columns.
        counts: cases per (split, class); multi-label: per (split, "cases").
        unmatched: ``(file or "row N", reason)`` for every file and sheet row left out.
        dropped_columns: sheet columns left out as identifiers.
        patients: where patients come from: ``column 'X'``, ``pattern``, or "" (per image).
        n_patients: distinct patients.
        leaking: patients with images in more than one split (kept from the folders or the sheet).
    """

    manifest: Path
    label_map: LabelMap
    counts: Counter = field(default_factory=Counter)
    unmatched: list[tuple[str, str]] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)
    patients: str = ""
    n_patients: int = 0
    leaking: int = 0

    def lines(self, shown: int = 50) -> list[str]:
        """The summary printed by ``radpipe import-images``."""
        splits = sorted({s for s, _ in self.counts}, key=lambda s: (SPLITS + ("",)).index(s) if s in SPLITS else 9)
        classes = list(self.label_map.classes) if self.label_map.task != "multilabel" else ["cases"]
        width = max([len(c) for c in classes] + [5])
        out = [f"task {self.label_map.task}; classes {list(self.label_map.classes)}",
               f"{'split':<6} " + " ".join(f"{c:>{width}}" for c in classes) + f" {'total':>7}"]
        for s in splits:
            row = [self.counts[(s, c)] for c in classes]
            out.append(f"{s:<6} " + " ".join(f"{n:>{width}}" for n in row) + f" {sum(row):>7}")
        if self.patients:
            out.append(f"{self.n_patients} patient(s) from {self.patients}; splits keep each patient's images together")
        else:
            out.append("warning: no patient column or --patient-pattern: each image is its own patient, so splits are "
                       "per image and may put one patient's images on both sides (give --patient-pattern REGEX or "
                       "--patient-column COL)")
        if self.leaking:
            out.append(f"warning: {self.leaking} patient(s) have images in several splits of the folder or sheet; "
                       "their images leak between training and evaluation (validate-manifest lists them)")
        if self.dropped_columns:
            out.append(f"label-sheet identifier columns left out: {', '.join(self.dropped_columns)}")
        if self.unmatched:
            out.append(f"{len(self.unmatched)} file(s) / sheet row(s) matched nothing (all in unmatched.csv):")
            out += [f"  {what}: {why}" for what, why in self.unmatched[:shown]]
            if len(self.unmatched) > shown:
                out.append(f"  ... and {len(self.unmatched) - shown} more")
        return out


def _files(src: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Relative paths (posix, sorted) of the pictures under ``src``, and the other files with the reason."""
    pictures, others = [], []
    for folder, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            rel = (Path(folder) / name).relative_to(src).as_posix()
            if is_picture(name):
                pictures.append(rel)
            else:
                others.append((rel, f"not a picture ({', '.join(PICTURE_SUFFIXES)})"))
    return sorted(pictures), others


def _split_and_class(rel: str) -> tuple[str, str]:
    """The split folder (normalised, or "") and class folder (or "") of a relative path."""
    parts = rel.split("/")
    split = ""
    if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
        split, parts = normalised_split(parts[0]), parts[1:]
    return split, (parts[-2] if len(parts) >= 2 else "")


def _file_lookup(files: list[str]) -> dict[str, list[str]]:
    """Every name a sheet may use for a file (relative path, path under a split folder, file name, stem)."""
    lookup: dict[str, set[str]] = {}
    for rel in files:
        parts = rel.split("/")
        names = {rel, parts[-1], Path(parts[-1]).stem}
        if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
            names.add("/".join(parts[1:]))
        for n in names:
            lookup.setdefault(n, set()).add(rel)
    return {k: sorted(v) for k, v in lookup.items()}


def _read_sheet(labels: Path, key: str, label_columns: tuple[str, ...], patient_column: str | None) -> pd.DataFrame:
    sheet = read_manifest_csv(labels, what="label sheet")
    wanted = [key, *label_columns, *([patient_column] if patient_column else [])]
    missing = [c for c in wanted if c not in sheet.columns]
    if missing:
        raise ManifestError(f"label sheet {labels}: no column(s) {missing}; found {list(sheet.columns)}; check --key, "
                            "--label-column and --patient-column")
    return sheet


def _sheet_rows(sheet: pd.DataFrame, key: str, files: list[str], label_columns: tuple[str, ...],
                unmatched: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """File -> its sheet row (cells as text, ``_row`` the CSV line); rows naming no file (or several) reported."""
    lookup = _file_lookup(files)
    matched: dict[str, dict[str, str]] = {}
    for i, record in enumerate(sheet.to_dict("records")):
        row, value = i + 2, str(record[key]).strip()
        candidates = lookup.get(value) or (lookup.get(Path(value).stem, []) if is_picture(value) else [])
        if not value:
            unmatched.append((f"row {row}", f"empty '{key}'"))
        elif not candidates:
            unmatched.append((f"row {row}", f"'{key}' names no picture under the folder"))
        elif len(candidates) > 1:
            why = f"'{key}' names {len(candidates)} files ({', '.join(candidates[:3])}); give the relative path"
            unmatched.append((f"row {row}", why))
        elif candidates[0] in matched:
            first = matched[candidates[0]]["_row"]
            unmatched.append((f"row {row}", f"names {candidates[0]}, already labelled by row {first}"))
        elif not all(normalise_label(record[c]) for c in label_columns):
            empty = [c for c in label_columns if not normalise_label(record[c])]
            unmatched.append((f"row {row}", f"empty label cell(s) {empty}"))
        else:
            matched[candidates[0]] = {**{k: str(v) for k, v in record.items()}, "_row": str(row)}
    return matched


def _patient(rel: str, record: dict[str, str] | None, column: str | None, pattern: re.Pattern[str] | None,
             hasher: Pseudonymiser) -> str:
    if column and record is not None:
        return hasher.key(record[column], "patient")
    if pattern is not None:
        found = pattern.search(Path(rel).name)
        if found:
            return hasher.key(found.group(1) if pattern.groups else found.group(0), "patient")
    return ""


def import_images(src: str | Path, out: str | Path, *, labels: str | Path | None = None, key: str | None = None,
                  label_column: str = "label", patient_column: str | None = None,
                  patient_pattern: str | None = None, preset: str | Path | None = None, val: float = 0.1,
                  test: float = 0.2, seed: int = 0, pseudonymiser: Pseudonymiser | None = None) -> ImageImport:
    """Write ``manifest.csv``, ``labels.json``, ``config.yaml`` and ``unmatched.csv`` for the pictures under ``src``.

    Args:
        src: an ImageFolder tree, or any folder of pictures with ``labels``.
        out: the output folder (created).
        labels: label sheet (CSV) naming each file in column ``key``.
        key: the sheet's file column (relative path, file name or stem).
        label_column: the sheet's label column(s), comma-separated (several: multi-label).
        patient_column: the sheet column holding the patient.
        patient_pattern: regular expression searched in each file name; its first group (or match) is the patient.
        preset: a config whose sections (model, transforms, transfer, train) the written config starts from.
        val, test: fractions of patients assigned to val / test when the folder gives no split.
        seed: seed of that assignment.
        pseudonymiser: hashes patients (default: the user's secret).

    Raises:
        ManifestError: no pictures, a sheet without its columns, fewer than 2 classes, a bad pattern, or splits
            that cannot be filled.
    """
    import pandas as pd

    src, out = Path(src).absolute(), Path(out).absolute()
    if not src.is_dir():
        raise ManifestError(f"{src} is not a folder; give a folder of pictures (an ImageFolder tree or a flat folder "
                            "with --labels)")
    if (labels is None) != (key is None):
        raise ManifestError("--labels and --key go together: the sheet and its column naming each file")
    if patient_column and labels is None:
        raise ManifestError("--patient-column names a label-sheet column: give --labels and --key too")
    try:
        pattern = re.compile(patient_pattern) if patient_pattern else None
    except re.error as e:
        raise ManifestError(f"--patient-pattern {patient_pattern!r} is not a valid regular expression ({e})") from e
    label_columns = tuple(c.strip() for c in label_column.split(",") if c.strip()) or ("label",)
    files, unmatched = _files(src)
    if not files:
        raise ManifestError(f"{src} holds no pictures ({', '.join(PICTURE_SUFFIXES)})")
    sheet = _read_sheet(Path(labels), str(key), label_columns, patient_column) if labels is not None else None
    records = _sheet_rows(sheet, str(key), files, label_columns, unmatched) if sheet is not None else {}
    hasher = pseudonymiser or (Pseudonymiser() if patient_column or pattern else None)
    extras, dropped = [], []
    if sheet is not None:
        for c in sheet.columns:
            if c in label_columns or c == patient_column or c == key or c in _RESERVED:
                continue
            (dropped if is_identifier_column(c) or normalised_column_name(c) in HASHED_KEY_COLUMNS else extras).append(c)
    rows = []
    for rel in files:
        split, klass = _split_and_class(rel)
        record = records.get(rel)
        if sheet is not None and record is None:
            unmatched.append((rel, "no row of the label sheet names it"))
            continue
        if sheet is None and not klass:
            unmatched.append((rel, "not in a class folder (ImageFolder: SRC/[split/]CLASS/file)"))
            continue
        row = {"image": os.path.relpath(src / rel, out).replace(os.sep, "/")}
        row.update({c: normalise_label(record[c]) for c in label_columns} if record else {label_columns[0]: klass})
        patient = _patient(rel, record, patient_column, pattern, hasher) if hasher is not None else ""
        row["patient"] = patient or "image:" + rel
        row["split"] = split or (normalised_split(record["split"]) if record and "split" in record else "")
        row.update({c: record[c] for c in extras} if record else {})
        rows.append(row)
    if not rows:
        raise ManifestError(f"no picture of {src} got a label; see the unmatched files and rows: "
                            + "; ".join(f"{w}: {r}" for w, r in unmatched[:5]))
    df = pd.DataFrame(rows)
    label_map = _label_map(df, label_columns)
    patient_col = "patient_key" if (patient_column or pattern) else "patient_id"
    df["split"] = _splits(df, label_map, val, test, seed)
    df = df.rename(columns={"patient": patient_col})
    if patient_col == "patient_id":  # no patients known: each image is its own, named by its path
        df["patient_id"] = df["patient_id"].str.removeprefix("image:")
    unmatched_patients = int(df[patient_col].str.startswith("image:").sum()) if patient_col == "patient_key" else 0
    if unmatched_patients:
        why = "no patient found by --patient-pattern / --patient-column: each is its own patient"
        unmatched.append((f"{unmatched_patients} file(s)", why))
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    with atomic_open(manifest, newline="") as f:
        df.to_csv(f, index=False)
    with atomic_open(out / "unmatched.csv", newline="") as f:
        pd.DataFrame(unmatched, columns=["file_or_row", "reason"]).to_csv(f, index=False)
    label_map.save(out / "labels.json")
    save_config(_config(manifest, label_map, patient_col, preset), out / "config.yaml")
    result = ImageImport(manifest, label_map, unmatched=unmatched, dropped_columns=dropped,
                         patients=(f"column '{patient_column}'" if patient_column else "--patient-pattern")
                         if patient_col == "patient_key" else "", n_patients=int(df[patient_col].nunique()),
                         leaking=int((df.groupby(patient_col)["split"].nunique() > 1).sum()))
    for record in df.to_dict("records"):
        if label_map.task == "multilabel":
            result.counts[(record["split"], "cases")] += 1
        else:
            result.counts[(record["split"], record[label_columns[0]])] += 1
    return result


def _label_map(df: pd.DataFrame, label_columns: tuple[str, ...]) -> LabelMap:
    if len(label_columns) > 1:
        return LabelMap("multilabel", label_columns, label_columns)
    classes = tuple(sorted(set(df[label_columns[0]]) - {""}, key=numeric_aware_key))
    if len(classes) < 2:
        raise ManifestError(f"found {len(classes)} class(es) {list(classes)}; a classifier needs at least 2 (class "
                            "folders, or label-sheet values)")
    return LabelMap("binary" if len(classes) == 2 else "multiclass", classes, label_columns)


def _splits(df: pd.DataFrame, label_map: LabelMap, val: float, test: float, seed: int) -> list[str]:
    """Splits kept where given; a missing val carved from train; rows without a split assigned."""
    sides = list(df["split"])
    stratify = list(label_map.label_columns) if label_map.task != "multilabel" else []
    unassigned = df.index[df["split"] == ""]
    if len(unassigned):
        chosen = df.loc[unassigned].reset_index(drop=True)
        for i, side in zip(unassigned, assign_splits(chosen, "patient", stratify, val=val, test=test, seed=seed)):
            sides[i] = side
    elif "val" not in sides and "train" in sides:
        train = df.index[df["split"] == "train"]
        chosen = df.loc[train].reset_index(drop=True)
        for i, side in zip(train, assign_splits(chosen, "patient", stratify, val=val, test=0.0, seed=seed)):
            sides[i] = side
    return sides


def _config(manifest: Path, label_map: LabelMap, patient_col: str, preset: str | Path | None) -> Config:
    data = {"manifest": str(manifest), "image_columns": ["image"], "label_columns": list(label_map.label_columns),
            "task": label_map.task, "classes": list(label_map.classes), "patient_column": patient_col}
    if preset is not None:
        return with_changes(load_config(preset), data=data)
    return config_from_dict({"data": data, **DEFAULT_SECTIONS})
