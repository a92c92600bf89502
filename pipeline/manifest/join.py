"""Join a scan index (``radpipe scan``) to a label sheet into a manifest, one series per study.

The hospital's label sheet is keyed by an identifier it knows (accession number, patient
ID); the index holds only pseudonymised keys. The sheet's identifiers are hashed with the
same :class:`~pipeline.pseudonym.Pseudonymiser` secret and matched on the index's key
columns, so no identifier is written in clear: the manifest drops the sheet's key column and
every column named like an identifier, under any spelling
(:func:`~pipeline.manifest.schema.is_identifier_column`: ``Patient Name``, ``Date of Birth``,
``E-mail`` ...), and the report names unmatched sheet rows by their row number in the sheet (the header is
row 1, blank lines are not counted) and unmatched index studies by their pseudonymised keys only.

Sheet keys are matched as hospitals write them (:func:`key_spellings`): the value as written, then, when that
matches no series, in upper or lower case and, in an all-digit column, without or with leading zeros (a
spreadsheet drops them); a row whose other spellings match several studies stays unmatched. When more than
``max_unmatched`` of the sheet rows or of the usable index keys match nothing, no manifest is written
(:class:`UnmatchedError`). ``--where`` is a :mod:`~pipeline.manifest.filters` expression, never a pandas query;
one that keeps no series is an error.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import ManifestError, format_problems
from pipeline.files import atomic_open
from pipeline.manifest.filters import FilterError, parse_filter
from pipeline.manifest.reading import read_manifest_csv
from pipeline.manifest.schema import is_identifier_column, normalised_column_name
from pipeline.pseudonym import Pseudonymiser

#: label-sheet identifier -> (index key column, pseudonymiser kind)
KEYS = {
    "accession_number": ("accession_key", "accession"),
    "patient_id": ("patient_key", "patient"),
    "study_instance_uid": ("study_key", "study"),
    "study_uid": ("study_key", "study"),
}
#: label-sheet key columns (normalised names) never written to the manifest, beside every identifier column
HASHED_KEY_COLUMNS = frozenset({normalised_column_name(k) for k in KEYS} | {"patientid", "patid", "ptid"})
NUMERIC_INDEX_COLUMNS = ("rows", "columns", "n_slices", "n_frames", "n_timepoints", "n_files", "series_number")
COHORT_FROM_INDEX = {"manufacturer": "manufacturer", "model": "scanner_model", "institution": "institution",
                     "modality": "modality", "sex": "sex", "age": "age"}
SELECT_RULES = ("largest-series", "first", "description:REGEX")
MAX_LISTED_KEYS = 20
#: zero-padded widths tried for an all-digit key (DICOM's accession number holds at most 16 characters)
MAX_KEY_DIGITS = 16


@dataclass
class JoinReport:
    """What matched and what did not (pseudonymised keys only)."""

    n_series: int = 0
    n_error_series: int = 0
    n_filtered_out: int = 0
    n_label_rows: int = 0
    n_rows: int = 0
    n_index_keys: int = 0
    n_normalised: int = 0
    unmatched_labels: list[int] = field(default_factory=list)
    ambiguous_labels: list[int] = field(default_factory=list)
    unmatched_index: list[str] = field(default_factory=list)
    no_series_chosen: list[str] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as text lines."""

        def keys(values: list[str]) -> str:
            shown = ", ".join(values[:MAX_LISTED_KEYS])
            more = f" ... and {len(values) - MAX_LISTED_KEYS} more" if len(values) > MAX_LISTED_KEYS else ""
            return f": {shown}{more}" if values else ""

        def rows(numbers: list[int]) -> str:
            return keys([f"sheet row {numbers[0]}", *map(str, numbers[1:])]) if numbers else ""

        out = [
            f"index: {self.n_series} series, {self.n_error_series} dropped with status error, "
            f"{self.n_filtered_out} dropped by --where",
            f"labels: {self.n_label_rows} row(s); manifest: {self.n_rows} case(s)",
            f"label rows matching no usable series: {len(self.unmatched_labels)}{rows(self.unmatched_labels)}",
            f"index keys without a label row: {len(self.unmatched_index)}{keys(self.unmatched_index)}",
        ]
        if self.n_normalised:
            out.append(f"label rows matched after normalising the key (case, spaces, leading zeros): "
                       f"{self.n_normalised}")
        if self.ambiguous_labels:
            out.append(f"label rows whose key, normalised, fits several studies (left unmatched): "
                       f"{len(self.ambiguous_labels)}{rows(self.ambiguous_labels)}")
        if self.no_series_chosen:
            out.append(f"studies where --select chose no series: {len(self.no_series_chosen)}"
                       f"{keys(self.no_series_chosen)}")
        if self.dropped_columns:
            out.append(f"label-sheet identifier columns left out: {', '.join(self.dropped_columns)}")
        return out


def _select(candidates: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The rows of one study kept by ``rule`` (at most one)."""
    if rule == "first":
        return candidates.head(1)
    if rule.startswith("description:"):
        pattern = re.compile(rule.partition(":")[2], re.IGNORECASE)
        candidates = candidates[[bool(pattern.search(str(d))) for d in candidates["series_description"]]]
    if candidates.empty:
        return candidates
    sort_by = [c for c in ("n_slices", "n_files") if c in candidates.columns]
    ordered = candidates.assign(_order=range(len(candidates)))
    ordered = ordered.sort_values([*sort_by, "_order"], ascending=[False] * len(sort_by) + [True], kind="stable")
    return ordered.drop(columns="_order").head(1)


def join_manifest(
    index_csv: str | Path,
    labels_csv: str | Path,
    key: str,
    out: str | Path,
    where: str | None = None,
    select: str = "largest-series",
    label_columns: tuple[str, ...] = ("label",),
    pseudonymiser: Pseudonymiser | None = None,
    max_unmatched: float | None = None,
) -> tuple[pd.DataFrame, JoinReport]:
    """Build a manifest from a scan index and a label sheet and write it to ``out``.

    Args:
        index_csv: series index written by ``radpipe scan``.
        labels_csv: the label sheet (one row per study or patient).
        key: the sheet's identifier column: ``accession_number``, ``patient_id``, ``study_instance_uid``
            (hashed and matched to the index's key column), or an index key column such as
            ``accession_key`` when the sheet already holds pseudonymised keys.
        out: the manifest CSV to write; image paths are written relative to its folder.
        where: a filter of the index series applied before selection (:mod:`pipeline.manifest.filters`:
            ``"modality == 'CT' and n_slices >= 20"``, ``in [...]``, ``contains(column, 'text')``,
            ``matches(column, 'regex')``, ``and`` / ``or`` / ``not``); never run as code.
        select: one series per study: ``largest-series`` (most slices), ``first``, or
            ``description:REGEX`` (the largest series whose description matches).
        label_columns: the sheet's label column(s).
        pseudonymiser: hashes the sheet's identifiers; default: the user's secret.
        max_unmatched: the largest fraction of sheet rows, and of usable index keys, that may match nothing
            (``--max-unmatched``, 0.05 on the command line); None: no limit.

    Returns:
        The manifest and the match report.

    Raises:
        ManifestError: missing columns, a duplicated key in the sheet, or a bad ``--where`` (or one keeping no
            series).
        UnmatchedError: no case, or more unmatched rows or keys than ``max_unmatched`` (nothing written).
    """
    index_csv, labels_csv, out = Path(index_csv), Path(labels_csv), Path(out)
    index = read_manifest_csv(index_csv, what="scan index")
    sheet = read_manifest_csv(labels_csv, what="label sheet")
    _check_select(select, index, index_csv)
    index_key, kind = _index_key(key)
    problems = [f"label sheet {labels_csv} has no column '{c}'" for c in (key, *label_columns) if c not in sheet]
    problems += [f"scan index {index_csv} has no column '{c}'" for c in (index_key, "series_ref", "study_key")
                 if c not in index]
    if problems:
        raise ManifestError(format_problems(problems) + "; fix the column names or the --key / --label-column options")
    report = JoinReport(n_series=len(index), n_label_rows=len(sheet))
    all_keys = set(index[index_key].astype(str)) - {""}
    index = _usable_series(index, where, report, index_csv)
    hasher = pseudonymiser or (Pseudonymiser() if kind else None)
    sheet["_key"] = _resolve_keys(sheet[key], all_keys, hasher, kind, report)
    duplicated = sheet["_key"].duplicated(keep=False) & (sheet["_key"] != "")
    if duplicated.any():
        rows = [str(i + 2) for i in sheet.index[duplicated]]
        raise ManifestError(
            f"label sheet {labels_csv}: column '{key}' repeats a value on rows {', '.join(rows[:20])}; "
            "keep one row per key"
        )
    sheet_keys = set(sheet["_key"]) - {""}
    index_keys = set(index[index_key].astype(str)) - {""}
    report.n_index_keys = len(index_keys)
    report.unmatched_labels = [int(i) + 2 for i, k in zip(sheet.index, sheet["_key"]) if k not in index_keys]
    report.unmatched_index = sorted(index_keys - sheet_keys)
    report.dropped_columns = [c for c in sheet.columns if c != "_key" and c not in label_columns and
                              (c == key or is_identifier_column(c) or normalised_column_name(c) in HASHED_KEY_COLUMNS)]
    extra = [c for c in sheet.columns if c not in report.dropped_columns and c not in label_columns and c != "_key"]
    matched = index[index[index_key].astype(str).isin(sheet_keys)]
    by_key = sheet.set_index("_key")
    rows = []
    for study, candidates in matched.groupby("study_key", sort=False):
        chosen = _select(candidates, select)
        if chosen.empty:
            report.no_series_chosen.append(str(study))
            continue
        series = chosen.iloc[0]
        labels = by_key.loc[str(series[index_key])]
        row = {"image": _relative_ref(series["series_ref"], index_csv.parent, out.parent)}
        row.update({c: labels[c] for c in label_columns})
        row.update({c: series.get(c, "") for c in ("patient_key", "study_key", "series_key") if c in index})
        row.update({c: labels[c] for c in extra})
        row.update({name: series[source] for source, name in COHORT_FROM_INDEX.items()
                    if source in index and name not in row})
        rows.append(row)
    manifest = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["image", *label_columns, "patient_key"])
    report.n_rows = len(manifest)
    _check_matches(report, max_unmatched, index_csv, labels_csv, key)
    with atomic_open(out, newline="") as f:
        manifest.to_csv(f, index=False)
    return manifest, report


def _check_select(select: str, index: pd.DataFrame, index_csv: Path) -> None:
    if select not in ("largest-series", "first") and not select.startswith("description:"):
        raise ManifestError(f"--select {select!r}: expected one of {', '.join(SELECT_RULES)}")
    if select.startswith("description:"):
        try:
            re.compile(select.partition(":")[2])
        except re.error as e:
            raise ManifestError(f"--select {select!r}: the pattern is not a regular expression ({e})") from e
        if "series_description" not in index:
            raise ManifestError(f"--select {select!r} needs a series_description column in {index_csv}")


def _index_key(key: str) -> tuple[str, str]:
    """The index column a sheet's ``key`` matches, and the pseudonymiser kind hashing it (``""``: no hashing)."""
    if key in KEYS:
        return KEYS[key]
    if key.endswith("_key"):
        return key, ""
    raise ManifestError(f"--key {key!r}: expected one of {', '.join(KEYS)} or an index key column (e.g. "
                        "accession_key) when the sheet is already pseudonymised")


class UnmatchedError(ManifestError):
    """The join matched no case, or too many sheet rows or index keys matched nothing; ``report`` says which."""

    def __init__(self, message: str, report: JoinReport) -> None:
        super().__init__(message)
        self.report = report


def key_spellings(value: str, numeric: bool) -> list[str]:
    """The spellings of a sheet key tried against the index: as written (trimmed) first, then other forms.

    Upper and lower case; for an all-digit column (``numeric``) also the number without leading zeros and
    zero-padded to every width up to :data:`MAX_KEY_DIGITS` (a spreadsheet drops leading zeros).

    >>> key_spellings(" acc-7 ", False)
    ['acc-7', 'ACC-7']
    >>> key_spellings("0042", True)[:4]
    ['0042', '42', '042', '00042']
    """
    text = str(value).strip()
    if not text:
        return []
    spellings = [text, text.upper(), text.lower()]
    if numeric and text.isdigit():
        bare = text.lstrip("0") or "0"
        spellings += [bare, *(bare.zfill(width) for width in range(len(bare) + 1, MAX_KEY_DIGITS + 1))]
    return list(dict.fromkeys(spellings))


def _resolve_keys(values: pd.Series, index_keys: set[str], hasher: Pseudonymiser | None, kind: str,
                  report: JoinReport) -> list[str]:
    """The index key of every sheet value: its spelling as written, else the one other spelling found in the index.

    A value no spelling finds keeps its written spelling (and stays unmatched); one whose other spellings find
    several index keys is listed as ambiguous and stays unmatched.
    """
    numeric = bool(kind) and all(v.strip().isdigit() for v in values if v.strip())
    resolved = []
    for row, value in zip(values.index, values):
        if hasher is None:  # already pseudonymised keys: exact, trimmed
            resolved.append(value.strip())
            continue
        candidates = [hasher.key(v, kind) for v in key_spellings(value, numeric)]
        if not candidates or candidates[0] in index_keys:
            resolved.append(candidates[0] if candidates else "")
            continue
        hits = sorted({c for c in candidates[1:] if c in index_keys})
        if len(hits) == 1:
            report.n_normalised += 1
            resolved.append(hits[0])
        else:
            if hits:
                report.ambiguous_labels.append(int(row) + 2)
            resolved.append(candidates[0])
    return resolved


def _check_matches(report: JoinReport, max_unmatched: float | None, index_csv: Path, labels_csv: Path,
                   key: str) -> None:
    """Raise :class:`UnmatchedError` when the join found no case or left too much unmatched."""
    if report.n_rows == 0:
        raise UnmatchedError(
            f"no series of {index_csv} matched a row of {labels_csv} on '{key}'; no manifest written. Check --key, "
            "--where and that radpipe scan used the same pseudonymisation secret ($RADPIPE_SECRET_FILE)", report)
    if max_unmatched is None:
        return
    sheet_part = len(report.unmatched_labels) / max(report.n_label_rows, 1)
    index_part = len(report.unmatched_index) / max(report.n_index_keys, 1)
    if sheet_part > max_unmatched or index_part > max_unmatched:
        raise UnmatchedError(
            f"{len(report.unmatched_labels)} of {report.n_label_rows} label row(s) ({sheet_part:.0%}) and "
            f"{len(report.unmatched_index)} of {report.n_index_keys} usable index key(s) ({index_part:.0%}) "
            f"matched nothing, more than --max-unmatched {max_unmatched:g} ({max_unmatched:.0%}); no manifest "
            "written. Fix the keys of the rows listed above (or the --where filter), or raise --max-unmatched "
            "(e.g. --max-unmatched 1 to accept any)", report)


def _usable_series(index: pd.DataFrame, where: str | None, report: JoinReport, index_csv: Path) -> pd.DataFrame:
    """The index rows a manifest may use: status ``error`` and ``--where`` dropped, numeric columns parsed.

    Raises:
        ManifestError: ``where`` is not a filter expression, names a column the index lacks, or keeps no series.
    """
    try:  # on the text cells, before numeric columns are parsed
        kept = parse_filter(where or "").mask(index)
    except FilterError as e:
        raise ManifestError(f"--where: {e}") from e
    if where and len(index) and not kept.any():
        raise ManifestError(f"--where {where!r} keeps none of the {len(index)} series of {index_csv}; no manifest "
                            "written. Check the values of the filtered columns in the index (e.g. modality == 'CT')")
    usable = index["status"].str.lower() != "error" if "status" in index else pd.Series(True, index=index.index)
    report.n_error_series = int((~usable).sum())
    report.n_filtered_out = int((usable & ~kept).sum())
    index = index[usable & kept].copy()
    for column in NUMERIC_INDEX_COLUMNS:
        if column in index:
            index[column] = pd.to_numeric(index[column], errors="coerce")
    return index


def _relative_ref(ref: str, index_folder: Path, manifest_folder: Path) -> str:
    """An index ``series_ref`` (relative to the index) made relative to the manifest's folder."""
    if not ref:
        return ""
    absolute = os.path.normpath(os.path.join(index_folder.absolute(), ref))
    return os.path.relpath(absolute, manifest_folder.absolute())
