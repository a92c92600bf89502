"""Reading the headers of an export for ``radpipe scan``: in worker processes, pseudonymised at once.

The files are cut into chunks (whole folders where possible, as exports keep a series together)
read by child processes and by the main process itself. Each reader pseudonymises the headers
before they leave it, writes their cache form as JSON text, and assembles the series whose every
header it holds, with their index row and ``*.series.json`` text: series assembly is per
SeriesInstanceUID, so such a series is the one the whole export gives, and the main process
assembles again only the series that span chunks (or come partly from the cache).
"""
from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError, NotAnImageError
from pipeline.progress import progress
from pipeline.pseudonym import Pseudonymiser
from pipeline.scan_cache import ScanEntry, entry_json, fields_to_json, header_to_json
from pipeline.scan_headers import read_fields_fast
from transforms.dicom_headers import SliceHeader, header_from_fields
from transforms.dicom_series import SeriesInfo, assemble_series, series_key, sort_series

_MEMO_LIMIT = 50_000  # decoded values kept between files (per-file values such as UIDs make it grow)
Item = tuple[str, int, int]  # path relative to the export, size, mtime_ns
# series key -> (headers of the key in the chunk, its series, what the describe function made of each)
Assembled = dict[str, tuple[int, list[SeriesInfo], list[Any]]]


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


def _read_chunk(root: str, items: list[Item], pseudonymiser: Pseudonymiser, assemble: bool = False,
                memos: tuple[dict[Any, Any], dict[Any, Any]] | None = None,
                describe: Callable[[SeriesInfo], Any] | None = None) -> tuple[list[tuple[str, ScanEntry]], Assembled]:
    """Read and pseudonymise the headers of ``items``; failures become skip reasons.

    Each entry comes with its ``fragment`` of the cache file (JSON text written here, so the main
    process only joins text). With ``assemble``, also the series of the
    chunk's headers, by series key (see :func:`assemble_entries`), and ``describe`` of each series
    (e.g. its index row). ``memos`` (pseudonym keys, decoded values) carry over between calls on
    the files of one export.
    """
    out = []
    keys, values = memos if memos is not None else ({}, {})
    for rel, size, mtime in items:
        path = os.path.join(root, rel)
        try:
            got = read_fields_fast(path, values)
            if isinstance(got, SliceHeader):
                header = pseudonymise_header(got, pseudonymiser, keys)
                cached = header_to_json(header)
            else:
                pseudonymise_fields(got, pseudonymiser, keys)
                header, cached = header_from_fields(got), fields_to_json(got)
        except Exception as e:  # noqa: BLE001 - one bad file never stops the scan
            reason, detail = _reason(e, path)
            out.append((rel, ScanEntry(size, mtime, None, reason, detail,
                                       fragment=entry_json(rel, size, mtime, None, reason, detail))))
            continue
        out.append((rel, ScanEntry(size, mtime, header, fragment=entry_json(rel, size, mtime, cached))))
    if len(values) > _MEMO_LIMIT:
        values.clear()
    assembled: Assembled = {}
    if assemble:
        headers = [e.header for _, e in out if e.header is not None]
        counts = Counter(series_key(h) for h in headers)
        by_key: dict[str, list[SeriesInfo]] = defaultdict(list)
        for info in assemble_series(headers):
            by_key[series_key(info.header)].append(info)
        assembled = {key: (counts[key], infos, [describe(i) for i in infos] if describe is not None else [])
                     for key, infos in by_key.items()}
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
                 assembled: list[Assembled] | None = None, describe: Callable[[SeriesInfo], Any] | None = None
                 ) -> Iterator[tuple[str, ScanEntry]]:
    """Read and pseudonymise the headers of ``items`` (relative to ``root``) in ``workers`` processes.

    This process is one of them: it reads chunks too, between collecting the others' results
    (so ``workers=2`` keeps two cores busy with one child process).

    Args:
        assembled: when given, receives each chunk's series (for :func:`assemble_entries`).
        describe: made of each series a chunk's reader assembles, where it is assembled (picklable).
    """
    if not items:
        return
    collecting = gc.isenabled()
    gc.disable()  # every header read stays alive: full collections would walk them again and again
    try:
        yield from _read_headers(root, items, workers, pseudonymiser, assembled, describe)
    finally:
        if collecting:
            gc.enable()


def _read_headers(root: Path, items: list[Item], workers: int, pseudonymiser: Pseudonymiser,
                  assembled: list[Assembled] | None, describe: Callable[[SeriesInfo], Any] | None
                  ) -> Iterator[tuple[str, ScanEntry]]:
    if workers <= 1 or len(items) < 64:
        memos: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
        for item in progress(items, desc="reading headers"):
            yield from _read_chunk(str(root), [item], pseudonymiser, memos=memos)[0]
        return
    size = max(32, min(512, len(items) // (workers * 8) or 1))
    chunks = deque(_chunks(items, size))
    results = _chunk_results(str(root), chunks, workers - 1, pseudonymiser, assembled is not None, describe)
    for entries, series in progress(results, total=len(chunks), desc="reading headers"):
        if assembled is not None:
            assembled.append(series)
        yield from entries


def _chunk_results(root: str, chunks: deque[list[Item]], children: int, pseudonymiser: Pseudonymiser,
                   assemble: bool, describe: Callable[[SeriesInfo], Any] | None
                   ) -> Iterator[tuple[list[tuple[str, ScanEntry]], Assembled]]:
    """:func:`_read_chunk` of every chunk, in ``children`` child processes and this one, in any order.

    Children take chunks from the front (each holds one running and one queued), this process from
    the back, so all finish about together.
    """
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    memos: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
    with ProcessPoolExecutor(max_workers=children, mp_context=context) as pool:
        running: set[Future[Any]] = set()
        while chunks or running:
            while chunks and len(running) < 2 * children:
                running.add(pool.submit(_read_chunk, root, chunks.popleft(), pseudonymiser, assemble, None, describe))
            done = {f for f in running if f.done()}
            if not done and not chunks:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.discard(future)
                yield future.result()
            if chunks:
                yield _read_chunk(root, chunks.pop(), pseudonymiser, assemble, memos, describe)


def assemble_entries(entries: Iterable[ScanEntry], assembled: Iterable[Assembled] = (),
                     described: dict[str, Any] | None = None) -> list[SeriesInfo]:
    """The series of the entries' headers, as :func:`~transforms.dicom_series.assemble_series` makes them.

    A series a worker assembled is taken as it is when that worker held every header of its series
    key; the other keys are assembled here. ``described`` receives, by series uid, what the
    workers' ``describe`` made of the series taken from them.
    """
    headers = [e.header for e in entries if e.header is not None]
    counts = Counter(series_key(h) for h in headers)
    done: list[SeriesInfo] = []
    complete: set[str] = set()
    for chunk in assembled:
        for key, (n, infos, outputs) in chunk.items():
            if n == counts.get(key) and key not in complete:
                done.extend(infos)
                complete.add(key)
                if described is not None:
                    described.update((info.uid, out) for info, out in zip(infos, outputs))
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
