"""Series references (``*.series.json``): the file ``radpipe scan`` writes per series, naming its files.

Format (JSON object): ``format`` (``"radpipe.series-ref"``), ``version`` (1), ``files`` (paths in volume
order, relative to the reference's folder or absolute), ``part`` (split tokens choosing one volume when the
files hold several, may be empty) and ``meta`` (descriptive, no identifiers: :func:`series_meta`).

This module reads them and describes their fields; it imports neither MONAI nor torch, so the scan and the
manifest checks can use it without paying for those imports.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError
from transforms.dicom.series import SeriesInfo

SERIES_REF_SUFFIX = ".series.json"
SERIES_REF_FORMAT = "radpipe.series-ref"
SERIES_REF_VERSION = 1


def series_part(info: SeriesInfo) -> str:
    """The split tokens of one volume of a series (``""`` when the series is one volume)."""
    return info.uid[len(info.series_uid) + 1:] if info.uid != info.series_uid else ""


def series_meta(info: SeriesInfo) -> dict[str, Any]:
    """The descriptive ``meta`` record of a series reference (no identifiers)."""
    return {"modality": info.modality, "series_description": info.description,
            "series_number": info.series_number, "shape": list(info.shape),
            "spacing": [round(v, 6) for v in info.spacing], "orientation": info.orientation_label,
            "status": info.status, "problems": list(info.problems)}


def series_ref_record(files: list[str], part: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of a series reference."""
    return {"format": SERIES_REF_FORMAT, "version": SERIES_REF_VERSION, "files": files, "part": part, "meta": meta}


def read_series_ref(path: str | Path) -> list[Path]:
    """The files of the series a ``*.series.json`` reference names, checked to exist.

    Raises:
        DicomReadError: unreadable JSON, no ``files`` list, or missing files (all listed together).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DicomReadError(f"{path}: cannot read series reference ({type(e).__name__}: {e}); re-run "
                             "`radpipe scan` to rewrite it") from e
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise DicomReadError(f"{path}: series reference needs a non-empty 'files' list of paths; found "
                             f"{type(files).__name__ if files is not None else 'none'}; re-run `radpipe scan`")
    resolved = [Path(os.path.normpath(path.parent / f)) for f in files]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise DicomReadError(f"{path}: {len(missing)} of {len(files)} listed files are missing (first: "
                             f"{missing[0]}); was the export moved? re-run `radpipe scan` on its new place")
    return resolved


def ref_part(path: Path) -> str:
    """The ``part`` of a series reference file (``""`` when it has none)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data.get("part", "") or "") if isinstance(data, dict) else ""
