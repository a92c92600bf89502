"""What ``radpipe scan`` writes for one series: its index row and its ``*.series.json`` reference.

Both are made where the series is assembled: by the reader of a chunk for the series it holds
whole (:mod:`pipeline.ingest.read`, in parallel), by the main process for the others. A reference a
reader wrote for a series that turns out to span chunks is written again (or removed) by the main
process once the whole series is known.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pipeline.files import write_atomic, write_bytes_atomic
from pipeline.pseudonym import Pseudonymiser
from transforms.dicom.reference import series_meta, series_part, series_ref_record
from transforms.dicom.series import SeriesInfo
from transforms.dicom.slice_header import SliceHeader
from transforms.dicom.sop import uid_name

INDEX_COLUMNS = (
    "patient_key", "study_key", "series_key", "accession_key", "sex", "age", "modality", "body_part",
    "series_number", "series_description", "manufacturer", "model", "institution", "rows", "columns",
    "n_slices", "n_frames", "n_timepoints", "spacing", "orientation", "transfer_syntax", "series_ref", "n_files",
    "status", "problems",
)
SKIPPED_COLUMNS = ("path", "reason", "detail")
_JSON = json.JSONEncoder(separators=(",", ":"))


class SeriesOutput(NamedTuple):
    """One series as the scan wrote it."""

    ref_name: str  # file name of its reference, written in the ``<stem>.series`` folder
    row: dict[str, Any]  # its index row


class SeriesWriter:
    """Writes the reference of a series of one scan and makes its index row (picklable: sent to the readers).

    Args:
        pseudonymiser: the scan's key maker (headers are already pseudonymised).
        ref_dir: the folder the references are written to (absolute).
        ref_dir_from_index: that folder relative to the index's folder (the ``series_ref`` column).
    """

    def __init__(self, pseudonymiser: Pseudonymiser, ref_dir: str, ref_dir_from_index: str) -> None:
        self.pseudonymiser = pseudonymiser
        self.ref_dir = ref_dir
        self.ref_dir_from_index = ref_dir_from_index
        self._folders: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_folders": {}}

    def __call__(self, info: SeriesInfo) -> SeriesOutput:
        name = f"{safe_name(self.pseudonymiser.key(info.uid, 'series'))}.series.json"
        os.makedirs(self.ref_dir, exist_ok=True)  # made with its first series, never before the export is checked
        _write_if_changed(Path(self.ref_dir) / name, series_ref_text(info, self.ref_dir, self._folders))
        ref = f"{self.ref_dir_from_index}/{name}" if self.ref_dir_from_index not in ("", ".") else name
        return SeriesOutput(name, series_row(info, self.pseudonymiser, ref))


def safe_name(key: str) -> str:
    """``key`` with every character but letters, digits and ``-_.`` replaced by ``_`` (a file name)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def _write_if_changed(path: Path, text: str) -> None:
    """Write a series reference unless the file already holds ``text`` (an unchanged re-scan rewrites nothing)."""
    data = text.encode("utf-8")
    try:
        if os.stat(path).st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_bytes_atomic(str(path), data)  # not durable: a re-scan writes a lost reference again


def series_ref_text(info: SeriesInfo, base: str, folders: dict[str, str] | None = None) -> str:
    """The JSON text of the ``*.series.json`` reference of one series in folder ``base``.

    File paths are relative to ``base``, as :func:`transforms.dicom.reference.read_series_ref` reads them.
    ``folders`` caches the relative path of each DICOM folder seen from ``base``.
    """
    folders = {} if folders is None else folders
    files = []
    for f in info.files:
        folder, _, name = f.rpartition(os.sep)
        folder = folder or os.sep
        rel = folders.get(folder)
        if rel is None:
            rel = folders[folder] = os.path.relpath(folder, base).replace(os.sep, "/")
        files.append(f"{rel}/{name}")
    return _JSON.encode(series_ref_record(files, series_part(info), series_meta(info)))


def write_series_ref(path: str | Path, series: SeriesInfo | Sequence[str | Path],
                     meta: Mapping[str, Any] | None = None) -> Path:
    """Write a ``*.series.json`` reference to one series by hand (``radpipe scan`` writes one per series).

    Args:
        path: the reference file to write (atomically).
        series: a :class:`SeriesInfo` (its files, split part and description are recorded), or the
            files of one series in volume order.
        meta: more descriptive fields to record; never put patient identifiers here.

    Returns:
        ``path``.
    """
    path = Path(path)
    if isinstance(series, SeriesInfo):
        files, part, record = list(series.files), series_part(series), series_meta(series)
    else:
        files, part, record = [str(f) for f in series], "", {}
    record.update(dict(meta or {}))
    base = path.parent.resolve()
    rel = []
    for f in files:
        try:
            rel.append(os.path.relpath(Path(f).resolve(), base))
        except ValueError:  # another drive on Windows
            rel.append(str(Path(f).resolve()))
    write_atomic(path, json.dumps(series_ref_record(rel, part, record), indent=1))
    return path


def _age(text: str) -> str:
    """DICOM age (``054Y``) as whole years; ages of 90 and over become ``90+`` (HIPAA safe harbour)."""
    text = text.strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        years = int(text[:3]) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[text[3]]
        return "90+" if years >= 90 else str(int(years))
    return ""


def _spacing_text(info: SeriesInfo) -> str:
    n = 2 if len(info.shape) == 2 else 3
    return "x".join(f"{v:.3f}" for v in info.spacing[:n])


def _transfer_syntax_name(uid: str) -> str:
    name = uid_name(uid) if uid else ""
    return name if name and name != uid else uid


def patient_key(h: SliceHeader, pseudonymiser: Pseudonymiser) -> str:
    """The patient key of a pseudonymised header; a file without PatientID gets one made from its study
    (stable, and never empty: file names start with it)."""
    return h.patient_id or pseudonymiser.key(f"no-patient-id-{h.study_uid}", "patient")


def series_problems(info: SeriesInfo) -> tuple[str, list[str]]:
    """Status and problems of a series: the assembler's, plus scan-level ones (localizers)."""
    problems = list(info.problems)
    status = info.status
    if any(h.is_localizer for h in info.headers):
        problems.append("localizer (scout) images: a planning view, not a diagnostic volume; leave it out of "
                        "training manifests")
        status = "warning" if status == "ok" else status
    return status, problems


def series_row(info: SeriesInfo, pseudonymiser: Pseudonymiser, series_ref: str) -> dict[str, Any]:
    """One index row for a series whose headers are already pseudonymised."""
    h = info.header
    status, problems = series_problems(info)
    return {
        "patient_key": patient_key(h, pseudonymiser), "study_key": pseudonymiser.key(h.study_uid, "study"),
        "series_key": pseudonymiser.key(info.uid, "series"), "accession_key": h.accession_number,
        "sex": h.patient_sex, "age": _age(h.patient_age) if not pseudonymiser.keep_identifiers else h.patient_age,
        "modality": h.modality, "body_part": h.body_part,
        "series_number": "" if h.series_number is None else h.series_number,
        "series_description": h.series_description, "manufacturer": h.manufacturer, "model": h.model,
        "institution": h.institution, "rows": h.rows, "columns": h.cols, "n_slices": info.n_slices,
        "n_frames": len(info.planes), "n_timepoints": info.n_timepoints, "spacing": _spacing_text(info),
        "orientation": info.orientation_label, "transfer_syntax": _transfer_syntax_name(h.transfer_syntax),
        "series_ref": series_ref, "n_files": len(info.files), "status": status, "problems": "; ".join(problems),
    }
