"""Reading the headers of an export for ``radpipe scan``: in worker processes, pseudonymised at once.

Each worker reads a chunk of files (whole folders where possible, as exports keep a series
together), pseudonymises the headers before they leave it, and assembles the series whose every
header it holds: series assembly is per SeriesInstanceUID, so such a series is the one the whole
export gives, and the main process assembles only the series that span chunks (or the cache).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError, NotAnImageError
from pipeline.progress import progress
from pipeline.pseudonym import Pseudonymiser
from pipeline.scan_cache import ScanEntry, fields_to_json, header_to_json
from pipeline.scan_headers import read_fields_fast
from transforms.dicom_headers import SliceHeader
from transforms.dicom_series import SeriesInfo, assemble_series, series_key, sort_series

Item = tuple[str, int, int]  # path relative to the export, size, mtime_ns
Assembled = dict[str, tuple[int, list[SeriesInfo]]]  # series key -> (headers of the key in the chunk, its series)


def _reason(error: Exception, path: str) -> tuple[str, str]:
    """A reason code and a detail (without the path, which has its own column) for a skipped file."""
    detail = " ".join(str(error).split())
    if detail.startswith(path):
        detail = detail[len(path):].lstrip(": ")
    if isinstance(error, NotAnImageError):
        return ("dicomdir" if "DICOMDIR" in detail else "non-image object"), detail
    if isinstance(error, DicomReadError):
        if "not a DICOM file" in detail:
            return "not DICOM", detail
        if "truncated" in detail or "damaged" in detail:
            return "damaged or truncated", detail
        return "unreadable", detail
    return "unreadable", f"{type(error).__name__}: {detail}"



def _read_chunk(root: str, items: list[Item], pseudonymiser: Pseudonymiser,
                assemble: bool = False) -> tuple[list[tuple[str, ScanEntry]], Assembled]:
    """Read and pseudonymise the headers of ``items``; failures become skip reasons.

    With ``assemble``, also the series of the chunk's headers, by series key (see :func:`assemble_entries`).
    """
    out = []
    memo: dict[tuple[str, str], str] = {}
    for rel, size, mtime in items:
        path = os.path.join(root, rel)
        try:
            got = read_fields_fast(path)
            if isinstance(got, SliceHeader):
                header = pseudonymise_header(got, pseudonymiser, memo)
                cached = header_to_json(header)
            else:
                pseudonymise_fields(got, pseudonymiser, memo)
                header, cached = SliceHeader(**got), fields_to_json(got)
        except Exception as e:  # noqa: BLE001 - one bad file never stops the scan
            reason, detail = _reason(e, path)
            out.append((rel, ScanEntry(size, mtime, None, reason, detail)))
            continue
        out.append((rel, ScanEntry(size, mtime, header, cached=cached)))
    assembled: Assembled = {}
    if assemble:
        headers = [e.header for _, e in out if e.header is not None]
        counts = Counter(series_key(h) for h in headers)
        by_key: dict[str, list[SeriesInfo]] = defaultdict(list)
        for info in assemble_series(headers):
            by_key[series_key(info.header)].append(info)
        assembled = {key: (counts[key], infos) for key, infos in by_key.items()}
    return out, assembled


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    """Runs of about ``size`` items, cut where the folder changes when one is near (items are sorted by path)."""
    start = 0
    while start < len(items):
        end = min(start + size, len(items))
        if end < len(items):
            folder = os.path.dirname(items[end - 1][0])
            limit = min(len(items), end + size // 2)
            while end < limit and os.path.dirname(items[end][0]) == folder:
                end += 1
        yield items[start:end]
        start = end


def read_headers(root: Path, items: list[Item], workers: int, pseudonymiser: Pseudonymiser,
                 assembled: list[Assembled] | None = None) -> Iterator[tuple[str, ScanEntry]]:
    """Read and pseudonymise the headers of ``items`` (relative to ``root``) in ``workers`` processes.

    Args:
        assembled: when given, receives each worker chunk's series (for :func:`assemble_entries`).
    """
    if not items:
        return
    if workers <= 1 or len(items) < 64:
        for item in progress(items, desc="reading headers"):
            yield from _read_chunk(str(root), [item], pseudonymiser)[0]
        return
    size = max(32, min(512, len(items) // (workers * 4) or 1))
    chunks = list(_chunks(items, size))
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_read_chunk, str(root), chunk, pseudonymiser, assembled is not None)
                   for chunk in chunks]
        for future in progress(futures, desc="reading headers"):
            entries, series = future.result()
            if assembled is not None:
                assembled.append(series)
            yield from entries


def assemble_entries(entries: Iterable[ScanEntry], assembled: Iterable[Assembled] = ()) -> list[SeriesInfo]:
    """The series of the entries' headers, as :func:`~transforms.dicom_series.assemble_series` makes them.

    A series a worker assembled is taken as it is when that worker held every header of its series
    key; the other keys are assembled here.
    """
    headers = [e.header for e in entries if e.header is not None]
    counts = Counter(series_key(h) for h in headers)
    done: list[SeriesInfo] = []
    complete: set[str] = set()
    for chunk in assembled:
        for key, (n, infos) in chunk.items():
            if n == counts.get(key) and key not in complete:
                done.extend(infos)
                complete.add(key)
    rest = [h for h in headers if series_key(h) not in complete]
    return sort_series([*done, *assemble_series(rest)])


def pseudonymise_header(header: SliceHeader, pseudonymiser: Pseudonymiser,
                        memo: dict[tuple[str, str], str] | None = None) -> SliceHeader:
    """The header with patient ID and accession number replaced by keys, name and birth date dropped.

    ``memo`` caches keys across the headers of one scan (a study's files share them).
    """
    if pseudonymiser.keep_identifiers:
        return header
    fields = {"patient_id": header.patient_id, "accession_number": header.accession_number}
    pseudonymise_fields(fields, pseudonymiser, memo)
    return dataclasses.replace(header, **fields)


def pseudonymise_fields(fields: dict[str, Any], pseudonymiser: Pseudonymiser,
                        memo: dict[tuple[str, str], str] | None = None) -> None:
    """:func:`pseudonymise_header` on a dict of header fields, in place (before the header is built)."""
    if pseudonymiser.keep_identifiers:
        return
    memo = {} if memo is None else memo
    for name, kind in (("patient_id", "patient"), ("accession_number", "accession")):
        value = fields.get(name, "")
        if (value, kind) not in memo:
            memo[(value, kind)] = pseudonymiser.key(value, kind)
        fields[name] = memo[(value, kind)]
    fields["patient_name"] = fields["patient_birth_date"] = ""
