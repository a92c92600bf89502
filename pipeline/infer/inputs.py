"""What ``radpipe predict`` reads: a DICOM export, a folder of NIfTI files or pictures, or a manifest CSV.

:func:`discover` turns the input into :class:`~pipeline.infer.batching.Case` objects (one per
series / file / manifest row, each with a stable id), the key columns written beside each
prediction, and the list of input files or series that are not predicted, with the reason
(written to ``<out stem>.skipped.csv``), so every input file is accounted for.

* **DICOM export** (a folder without NIfTI files): scanned with ``radpipe scan``'s loader
  (:func:`pipeline.ingest.scan.scan_export`, index in ``<out stem>.scan/``), then series are chosen
  with the run's selection rule (:mod:`pipeline.infer.dicom_inputs`). Ids are the pseudonymised
  ``series_key``; keys ``patient_key``, ``study_key``, ``series_key``, ``accession_key``,
  ``modality``. Series with scan status ``error`` or missing slices are cases with an error.
* **NIfTI or picture folder** (a folder holding ``*.nii`` / ``*.nii.gz`` or PNG / JPEG / TIFF / BMP
  pictures, e.g. an ImageFolder tree): one case per file, id = its path relative to the folder; other
  files are listed as skipped. A 2D image under a 3D model is a case with an error (checked on the
  header; a picture is always 2D).
* **Manifest CSV**: one case per row, id = ``case_id`` (the first image cell as written, or the
  manifest's own ``case_id`` column); every manifest column is carried.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError, ManifestError
from pipeline.infer.batching import Case
from transforms.image_files import PICTURE_SUFFIXES, is_picture, picture_header
from transforms.limits import nifti_header
from pipeline.manifest.reading import load_manifest, read_manifest_csv

if TYPE_CHECKING:
    from pipeline.config import Config

log = logging.getLogger("radpipe")

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SKIPPED_COLUMNS = ["file", "series_key", "reason"]
RESERVED_COLUMNS = ("series_id", "pred", "status", "error")


@dataclass
class PredictInput:
    """The cases of one input and what is not predicted.

    Attributes:
        kind: ``dicom``, ``nifti``, ``images`` (a folder holding pictures) or ``manifest``.
        root: the input folder (or the manifest's folder).
        cases: cases in a stable order.
        key_columns: columns written between ``series_id`` and ``pred``.
        keys: per case id, the cells of the key columns.
        skipped: rows of the skipped list (columns :data:`SKIPPED_COLUMNS`).
        scrub: applied to error messages (hides folder names of a DICOM export).
    """

    kind: str
    root: Path
    cases: list[Case] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    scrub: Callable[[str], str] | None = None


def input_kind(path: str | Path) -> str:
    """``manifest`` for a CSV file, ``nifti`` for a folder holding NIfTI files or pictures (PNG, JPEG, TIFF, BMP;
    read by :func:`discover_nifti`), ``dicom`` for another folder.

    Raises:
        ManifestError: the path does not exist or is a file other than a CSV.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "manifest"
        raise ManifestError(
            f"input {p} is a file but not a manifest CSV; give a DICOM export folder, a folder of NIfTI files or a "
            "manifest .csv"
        )
    if not p.is_dir():
        raise ManifestError(f"input {p} not found; give a DICOM export folder, a NIfTI folder or a manifest .csv")
    for _, _, files in os.walk(p):
        if any(f.lower().endswith(NIFTI_SUFFIXES) or is_picture(f) for f in files):
            return "nifti"
    return "dicom"


def single_image_column(cfg: Config, kind: str) -> str:
    """The run's one image column (a DICOM or NIfTI input fills one channel source).

    Raises:
        ConfigError: the run takes several image columns.
    """
    columns = list(cfg.data.image_columns)
    if len(columns) != 1:
        raise ConfigError(
            f"the run takes {len(columns)} image columns {columns} but a {kind} input gives one image per case; "
            "predict from a manifest CSV with those columns instead"
        )
    return columns[0]


def spatial_rank_of_shape(shape: Sequence[int]) -> int:
    """Spatial dimensions of an image shape: axes of the first three longer than 1."""
    return sum(1 for s in list(shape)[:3] if int(s) > 1)


def dimensionality_error(found_rank: int, cfg: Config, what: str) -> str:
    """Why an image of ``found_rank`` spatial dimensions cannot go to the run's model (empty if it can)."""
    if cfg.transforms.spatial_dims == 3 and found_rank < 3:
        return (
            f"wrong dimensionality: {what} is a {found_rank}D image but the run's model is 3D "
            "(transforms.spatial_dims: 3) and needs a volume"
        )
    return ""


def _relative_to(root: Path) -> Callable[[str], str]:
    """Error messages name files relative to the input folder, as the id column does."""
    prefix = str(root).rstrip("/") + "/"
    return lambda text: text.replace(prefix, "")


def _nifti_shape(path: Path) -> tuple[int, ...]:
    """The shape a NIfTI header claims, checked against the voxel limit without decoding anything."""
    return tuple(int(s) for s in nifti_header(path).shape)


def discover_nifti(folder: str | Path, cfg: Config) -> PredictInput:
    """Cases of a folder of NIfTI files and pictures (recursive, sorted by relative path; kind ``images`` when
    it holds pictures)."""
    root = Path(folder).absolute()
    column = single_image_column(cfg, "NIfTI folder")
    scrub = _relative_to(root)
    result = PredictInput("nifti", root, key_columns=[], scrub=scrub)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(root).as_posix()
        picture = is_picture(path.name)
        if not (picture or path.name.lower().endswith(NIFTI_SUFFIXES)):
            reason = f"not a NIfTI image (.nii / .nii.gz) or picture ({', '.join(PICTURE_SUFFIXES)})"
            result.skipped.append({"file": rel, "series_key": "", "reason": reason})
            continue
        result.kind = "images" if picture else result.kind
        try:
            shape = picture_header(path)[0] if picture else _nifti_shape(path)
            error = dimensionality_error(spatial_rank_of_shape(shape), cfg, rel)
        except Exception as e:  # noqa: BLE001 - an unreadable header is that case's error
            what = "picture" if picture else "NIfTI"
            error = scrub(f"cannot read the {what} header: {type(e).__name__}: {' '.join(str(e).split())}")
        result.cases.append(Case(rel, {column: str(path)}, error))
        result.keys[rel] = {}
    return result


def discover_manifest(manifest: str | Path, cfg: Config) -> PredictInput:
    """Cases of a manifest CSV: every row, keyed by ``case_id``, every column carried.

    Raises:
        ManifestError: an image column is missing, or a column clashes with an output column.
    """
    raw = read_manifest_csv(manifest)
    df = load_manifest(manifest, cfg.data)
    columns = list(cfg.data.image_columns)
    problems = [f"image column '{c}' is missing" for c in columns if c not in df.columns]
    clashes = [c for c in raw.columns if c in RESERVED_COLUMNS or c.startswith("prob_")]
    problems += [f"column '{c}' clashes with an output column" for c in clashes]
    if problems:
        raise ManifestError(
            f"manifest {manifest}: {'; '.join(problems)}; found columns {list(raw.columns)}; add the image columns "
            f"{columns} and rename clashing columns"
        )
    folder = Path(df.attrs["folder"])
    result = PredictInput("manifest", folder, key_columns=list(raw.columns), scrub=_relative_to(folder))
    seen: set[str] = set()
    for (_, row), (_, raw_row) in zip(df.iterrows(), raw.iterrows()):
        case_id = str(row["case_id"]) or f"row-{row['row']}"
        if case_id in seen:
            case_id = f"{case_id}#row{row['row']}"
        seen.add(case_id)
        inputs = {c: str(row[c]) for c in columns}
        empty = [c for c in columns if not inputs[c]]
        missing = [c for c in columns if inputs[c] and not os.path.exists(inputs[c])]
        error = ""
        if empty:
            error = f"row {row['row']}: image cell(s) {empty} empty"
        elif missing:
            error = f"row {row['row']}: image file(s) not found: {[raw_row[c] for c in missing]}"
        result.cases.append(Case(case_id, inputs, error))
        result.keys[case_id] = {c: str(raw_row[c]) for c in raw.columns}
    return result
