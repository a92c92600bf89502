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


SEPARATOR_NAMES = {";": "';'", "\t": "tab", "|": "'|'"}


def _sep_hint(sep: str) -> str:
    return "'\\t'" if sep == "\t" else repr(sep)


def _column_name(position: int) -> str:
    """A 1-based column position as a spreadsheet names it (1 -> A, 27 -> AA)."""
    name = ""
    while position:
        position, rest = divmod(position - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def _check_header(p: Path, header: list[str], sep: str, what: str) -> None:
    """Refuse a header that is one cell holding another separator, or that names a column twice."""
    if len(header) == 1 and sep == ",":
        other = next((s for s in SEPARATOR_NAMES if s in header[0]), None)
        if other is not None:
            raise ManifestError(
                f"{what} {p} looks like {SEPARATOR_NAMES[other]}-separated (header {header[0][:60]!r}); save it "
                f"with commas, or pass --sep {_sep_hint(other)} to radpipe validate-manifest / split (split writes "
                "commas)"
            )
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header, start=1):
        if name:
            positions.setdefault(name, []).append(i)
    doubled = [(name, where) for name, where in positions.items() if len(where) > 1]
    if doubled:
        parts = [f"column '{name}' appears {'twice' if len(where) == 2 else f'{len(where)} times'} in the header "
                 f"(columns {' and '.join(map(str, where))}: {' and '.join(_column_name(i) for i in where)})"
                 for name, where in doubled]
        raise ManifestError(f"{what} {p}: {'; '.join(parts)}; rename or remove the extra column(s) so each "
                            "name is used once")


def _rows(p: Path, sep: str, what: str) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows of a CSV file, cells stripped; blank lines skipped, short rows padded."""
    import csv

    header: list[str] | None = None
    rows: list[list[str]] = []
    long_rows: list[tuple[int, int]] = []
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=sep, skipinitialspace=True, strict=False)
            for cells in reader:
                cells = [c.strip() for c in cells]
                if not any(cells):
                    continue
                if header is None:
                    header = cells
                    _check_header(p, header, sep, what)
                    continue
                if len(cells) > len(header):
                    if any(cells[len(header):]):
                        long_rows.append((reader.line_num, len(cells)))
                        continue
                    cells = cells[:len(header)]
                rows.append(cells + [""] * (len(header) - len(cells)))
    except UnicodeDecodeError as e:
        raise ManifestError(f"{what} {p} is not a readable UTF-8 CSV ({' '.join(str(e).split())}); save it as "
                            "CSV UTF-8") from e
    except csv.Error as e:
        raise ManifestError(f"{what} {p} is not a readable CSV text file ({' '.join(str(e).split())}); save it "
                            "as CSV UTF-8 from your spreadsheet") from e
    if header is None:
        raise ManifestError(f"{what} {p} is empty; expected a header line (image,label,patient_id,...)")
    if long_rows:
        listed = "; ".join(f"row {line} has {n} cells" for line, n in long_rows[:5])
        more = f" (and {len(long_rows) - 5} more rows)" if len(long_rows) > 5 else ""
        raise ManifestError(
            f"{what} {p}: {listed}{more}, the header has {len(header)}; quote cells that hold a "
            f"{'comma' if sep == ',' else 'separator'} (\"site b, annex\") or remove the extra cells"
        )
    return header, rows


def read_manifest_csv(path: str | Path, sep: str = ",", what: str = "manifest") -> pd.DataFrame:
    """Read a manifest CSV as text cells, headers and cells stripped, empty cells as ``""``.

    Rows with fewer cells than the header get empty cells; blank lines are skipped.

    Args:
        path: the CSV file (UTF-8, a byte-order mark allowed).
        sep: the cell separator (``;`` for spreadsheets saved with a European locale).
        what: what the file is, for messages (``manifest``, ``label sheet``).

    Raises:
        ManifestError: the file is missing, empty, not UTF-8 CSV, looks separated by another character
            than ``sep``, names a column twice, or has a row with more cells than the header.
    """
    import pandas as pd

    p = Path(path)
    sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
    if len(sep) != 1 or sep in "\"\r\n":
        raise ManifestError(f"--sep {sep!r}: expected one separator character such as ',' or ';' (or '\\t')")
    if not p.is_file():
        raise ManifestError(f"{what} {p} not found; give the path of a CSV file (see data_manifests/README.md)")
    header, rows = _rows(p, sep, what)
    header = [name or f"Unnamed: {i}" for i, name in enumerate(header)]
    return pd.DataFrame(rows, columns=header, dtype=str) if rows else pd.DataFrame(columns=header, dtype=str)


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


def load_manifest(path: str | Path, data_cfg: DataConfig | None = None, *, sep: str = ",") -> pd.DataFrame:
    """Read a manifest ready for validation and datasets.

    Cells are text except ``fold`` (integers) and ``weight`` (floats) when every cell parses
    (otherwise they stay text and :func:`validate_manifest` names the bad cells). Image
    columns become absolute paths; a ``row`` column holds the CSV line number for messages
    and a ``case_id`` column (kept when the CSV has one) the image cell as written.

    Args:
        path: the CSV file.
        data_cfg: the ``data`` config section (image columns); None detects ``image`` / ``image_*``.
        sep: the cell separator.

    Returns:
        The manifest with ``df.attrs["manifest"]``, ``df.attrs["folder"]`` and ``df.attrs["absolute_images"]``
        (per image column, the rows whose cell was written as an absolute path) set.
    """
    import pandas as pd

    p = Path(path).expanduser().absolute()
    df = read_manifest_csv(p, sep=sep)
    df.insert(0, "row", range(2, len(df) + 2))
    first_image = image_columns(df, data_cfg)[0]
    if "case_id" not in df.columns and first_image in df.columns:
        df["case_id"] = df[first_image]
    absolute: dict[str, tuple[int, ...]] = {}
    for column in image_columns(df, data_cfg):
        if column in df.columns:
            absolute[column] = tuple(int(r) for r, v in zip(df["row"], df[column])
                                     if v and os.path.isabs(os.path.expanduser(v)))
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
    df.attrs["absolute_images"] = absolute
    return df
