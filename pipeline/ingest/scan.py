"""``radpipe scan``: index a hospital DICOM export, one row per series, reading headers only.

Every file under the export is accounted for: image files end up in a series of the index
(``INDEX.csv``), everything else (not DICOM, DICOMDIR, reports, structure sets, presentation
states, damaged or truncated files) in ``<INDEX stem>.skipped.csv`` with its reason. Headers are
read in parallel worker processes and cached beside the index (``<INDEX stem>.scan-cache.json``,
keyed by path, size and modification time), so a re-run reads only new or changed files.

Patient name, patient ID, birth date and accession number never reach an output in clear: the
index carries keyed pseudonyms (:class:`~pipeline.pseudonym.Pseudonymiser`) and the cache holds
headers whose identifiers were replaced by those keys (names and birth dates dropped) before
they were written. ``keep_identifiers=True`` opts out, loudly.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError
from pipeline.files import atomic_open, remove_stale_temporaries
from pipeline.locks import lock_path, output_lock
from pipeline.pseudonym import Pseudonymiser
from pipeline.ingest.cache import CacheWriter, ScanEntry, cache_identity, load_cache, save_cache
from pipeline.ingest.read import Assembled, assemble_entries, read_headers
from pipeline.ingest.rows import INDEX_COLUMNS, SKIPPED_COLUMNS, SeriesWriter
from pipeline.ingest.state import save_state, unchanged_counts, walk_digest
from pipeline.ingest.walk import walk_files
from transforms.dicom.series import SeriesInfo

log = logging.getLogger("radpipe")

@dataclass
class ScanSummary:
    """What a scan found and wrote.

    Attributes:
        index_csv: the series index.
        skipped_csv: the files that are in no series, with their reason.
        n_files: files walked.
        n_series: rows of the index.
        n_indexed_files: files that are in a series of the index.
        skipped: skipped files per reason.
        n_read: headers read in this run (the rest came from the cache).
        n_cached: headers taken from the cache.
        status: series per status (``ok``, ``warning``, ``error``).
        seconds: wall time of the scan.
        series: the assembled series (pseudonymised headers); empty when nothing changed since the last scan
            (:mod:`pipeline.ingest.state`: nothing was read or assembled).
    """

    index_csv: Path
    skipped_csv: Path
    n_files: int
    n_series: int
    n_indexed_files: int
    skipped: dict[str, int]
    n_read: int
    n_cached: int
    status: dict[str, int]
    seconds: float
    series: list[SeriesInfo] = field(default_factory=list, repr=False)

    def lines(self) -> list[str]:
        """The summary as printed by ``radpipe scan``."""
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        status = ", ".join(f"{self.status.get(s, 0)} {s}" for s in ("ok", "warning", "error"))
        rate = self.n_files / self.seconds if self.seconds > 0 else 0.0
        return [
            f"files: {self.n_files} walked, {self.n_read} headers read, {self.n_cached} from cache",
            f"series: {self.n_series} ({status}) holding {self.n_indexed_files} files",
            f"skipped: {sum(self.skipped.values())} files ({skipped})",
            f"time: {self.seconds:.1f} s ({rate:.0f} files/s)",
            f"index: {self.index_csv}",
            f"skipped list: {self.skipped_csv}",
        ]


def output_paths(index_csv: str | Path) -> dict[str, Path]:
    """The files a scan writes beside ``index_csv``: skipped list, cache, series reference folder and state."""
    index_csv = Path(index_csv)
    stem = index_csv.with_suffix("") if index_csv.suffix else index_csv
    return {"index": index_csv, "skipped": Path(f"{stem}.skipped.csv"), "cache": Path(f"{stem}.scan-cache.json"),
            "series": Path(f"{stem}.series"), "state": Path(f"{stem}.scan-state.json")}


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def default_workers() -> int:
    """Header-reading processes (this one included) used when none are asked for: ``min(4, cpu count)``."""
    return max(1, min(4, os.cpu_count() or 1))


def check_export(export_dir: str | Path) -> Path:
    """``export_dir`` as a path, checked to be a folder.

    Raises:
        DicomReadError: it does not exist or is a file.
    """
    export = Path(export_dir)
    if not export.is_dir():
        what = "is a file" if export.exists() else "does not exist"
        raise DicomReadError(f"export folder {export} {what}; expected a folder of DICOM files (any nesting): "
                             "check the path")
    return export


def collect_headers(export_dir: str | Path, *, workers: int | None = None, pseudonymiser: Pseudonymiser,
                    cache_path: Path | None = None, exclude: Sequence[Path] = (),
                    assembled: list[Assembled] | None = None,
                    describe: Callable[[SeriesInfo], Any] | None = None, follow_links: bool = False,
                    walked: tuple[list[tuple[str, int, int]], list[tuple[str, str, str]]] | None = None
                    ) -> tuple[int, dict[str, ScanEntry], int]:
    """Walk ``export_dir`` and read (or take from the cache) every file's pseudonymised header.

    ``assembled`` receives the series the worker processes assembled, with ``describe`` of each
    (see :func:`pipeline.ingest.read.assemble_entries`). Paths the walk does not read (links, FIFOs,
    unreadable folders: see :func:`~pipeline.ingest.walk.walk_files`) get an entry without a header, with their
    reason. ``walked``: the walk's files and paths not read, when the caller walked already.

    Returns:
        Files walked, the entry of every path by relative path, and how many came from the cache.
    """
    root = check_export(export_dir).resolve()
    if walked is None:
        not_read: list[tuple[str, str, str]] = []
        walked = walk_files(root, exclude=exclude, follow_links=follow_links, not_read=not_read), not_read
    files, not_read = walked
    identity = cache_identity(root, pseudonymiser)
    cached = load_cache(cache_path, identity, root) if cache_path is not None else {}
    entries: dict[str, ScanEntry] = {}
    todo = []
    for rel, size, mtime in files:
        hit = cached.get(rel)
        if hit is not None and hit.size == size and hit.mtime_ns == mtime:
            entries[rel] = hit
        else:
            todo.append((rel, size, mtime))
    n_cached = len(entries)
    spool_dir = cache_path.parent if cache_path is not None else None
    with closing(read_headers(root, todo, workers or default_workers(), pseudonymiser, assembled, describe,
                              spool_dir)) as read:
        if cache_path is not None and todo:
            with CacheWriter(cache_path, identity) as writer:  # written as headers come, while the readers work
                for rel, entry in entries.items():
                    writer.add(rel, entry)
                for rel, entry in read:
                    entries[rel] = entry
                    writer.add(rel, entry)
        else:
            entries.update(read)
            if cache_path is not None and len(cached) != len(entries):
                save_cache(cache_path, identity, entries)  # files gone since the last scan
    entries.update((rel, ScanEntry(0, 0, None, reason, detail)) for rel, reason, detail in not_read)
    return len(files) + len(not_read), dict(sorted(entries.items())), n_cached


def scan_export(export_dir: str | Path, out_csv: str | Path, *, workers: int | None = None,
                keep_identifiers: bool = False, pseudonymiser: Pseudonymiser | None = None,
                use_cache: bool = True, follow_links: bool = False) -> ScanSummary:
    """Index the DICOM series of ``export_dir`` into ``out_csv`` (plus skipped list, cache and series refs).

    Args:
        export_dir: the export folder (any nesting, any file names).
        out_csv: the index to write; its siblings ``<stem>.skipped.csv``, ``<stem>.scan-cache.json`` and
            ``<stem>.series/`` are written too.
        workers: header-reading processes, this one included (default :func:`default_workers`; 1: this one only).
        keep_identifiers: write identifiers in clear instead of keys (an explicit, logged opt-out).
        pseudonymiser: the key maker (default: one with the secret of ``$RADPIPE_SECRET_FILE``).
        use_cache: reuse headers cached by an earlier scan of the same export.
        follow_links: read files and walk folders that links in the export point to outside it.

    Returns:
        A :class:`ScanSummary`.

    Raises:
        DicomReadError: ``export_dir`` is not a folder.
        OutputLockedError: another scan is writing ``out_csv``.
    """
    start = time.monotonic()
    if pseudonymiser is None:
        pseudonymiser = Pseudonymiser(keep_identifiers=keep_identifiers)
    if pseudonymiser.keep_identifiers:
        log.warning("scan: --keep-identifiers: patient names, IDs, birth dates and accession numbers are written "
                    "IN CLEAR to the index and its cache; keep these files inside the hospital")
    check_export(export_dir)
    paths = output_paths(out_csv)
    with output_lock(paths["index"], "scan"):
        return _scan(export_dir, paths, workers, pseudonymiser, use_cache, follow_links, start)


def _scan(export_dir: str | Path, paths: dict[str, Path], workers: int | None, pseudonymiser: Pseudonymiser,
          use_cache: bool, follow_links: bool, start: float) -> ScanSummary:
    exclude = [*paths.values(), lock_path(paths["index"])]
    root = Path(export_dir).resolve()
    not_read: list[tuple[str, str, str]] = []
    files = walk_files(root, exclude=exclude, follow_links=follow_links, not_read=not_read)
    digest = walk_digest(cache_identity(root, pseudonymiser), files, not_read, follow_links)
    known = unchanged_counts(paths["state"], digest, paths) if use_cache else None
    if known is not None:  # nothing changed since the last scan: nothing to read, assemble or write
        _remove_leftovers(paths)
        return ScanSummary(index_csv=paths["index"], skipped_csv=paths["skipped"], n_read=0,
                           n_cached=known["n_files"], seconds=time.monotonic() - start, **known)
    paths["state"].unlink(missing_ok=True)
    ref_dir = paths["series"]
    writer = SeriesWriter(pseudonymiser, str(ref_dir.resolve()),
                          os.path.relpath(ref_dir, paths["index"].parent).replace(os.sep, "/"))
    assembled: list[Assembled] = []
    n_files, entries, n_cached = collect_headers(export_dir, workers=workers, pseudonymiser=pseudonymiser,
                                                 cache_path=paths["cache"] if use_cache else None, exclude=exclude,
                                                 assembled=assembled, describe=writer, follow_links=follow_links,
                                                 walked=(files, not_read))
    described: dict[str, Any] = {}
    series = assemble_entries(entries.values(), assembled, described)
    placed = {p for info in series for p in info.files}
    skipped = [{"path": rel, "reason": e.reason, "detail": e.detail} for rel, e in entries.items()
               if e.header is None]
    skipped += [{"path": rel, "reason": "duplicate or unplaced",
                 "detail": "a copy of an instance already indexed, or a slice the series assembly left out "
                           "(see the series' problems)"}
                for rel, e in entries.items() if e.header is not None and e.header.path not in placed]
    skipped.sort(key=lambda r: r["path"])

    ref_dir.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    written: set[str] = set()
    for info in series:
        name, row = described.get(info.uid) or writer(info)
        written.add(name)
        rows.append(row)
    for stale in ref_dir.glob("*.series.json"):
        if stale.name not in written:
            stale.unlink()
    rows.sort(key=lambda r: (r["patient_key"], r["study_key"], str(r["series_number"]).zfill(6), r["series_key"]))
    _write_csv(paths["index"], INDEX_COLUMNS, rows)
    _write_csv(paths["skipped"], SKIPPED_COLUMNS, skipped)
    _remove_leftovers(paths)
    counts = {"n_files": n_files, "n_series": len(rows), "n_indexed_files": sum(r["n_files"] for r in rows),
              "skipped": dict(Counter(r["reason"] for r in skipped)),
              "status": dict(Counter(r["status"] for r in rows))}
    if use_cache:
        save_state(paths["state"], digest, paths, counts)
    return ScanSummary(index_csv=paths["index"], skipped_csv=paths["skipped"], n_read=n_files - n_cached,
                       n_cached=n_cached, seconds=time.monotonic() - start, series=series, **counts)


def _remove_leftovers(paths: dict[str, Path]) -> None:
    """Remove what killed scans left: spools, half-written files (their partial cache was read by now)."""
    for folder in (paths["index"].parent, paths["series"]):
        for path in remove_stale_temporaries(folder):
            log.info("scan: removed %s, left by a scan that was killed", path.name)
