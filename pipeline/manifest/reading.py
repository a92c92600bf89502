"""The CSV manifest: reading it and resolving its image paths.

A manifest has one row per case: image column(s), label column(s), a patient column,
optionally ``split`` / ``fold`` / ``weight``, and any cohort columns (site, scanner, sex ...),
which are carried through untouched. The schema is documented in ``data_manifests/README.md``;
:mod:`pipeline.manifest.validation` checks a manifest read here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ManifestError
from pipeline.manifest.schema import PATIENT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import DataConfig


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
