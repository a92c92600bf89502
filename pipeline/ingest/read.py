"""Reading the headers of an export for ``radpipe scan``: in worker processes, pseudonymised at once.

The files are cut into units (whole folders where possible, as exports keep a series together)
that child processes and the main process itself claim in shrinking runs from a shared counter;
children hand their results back through a temporary spool file, which the main process takes in
between its own runs. Each reader pseudonymises the headers before they leave it, writes their
cache form as JSON text, and assembles the series whose every header it holds, with their index
row and ``*.series.json`` text: series assembly is per SeriesInstanceUID, so such a series is the
one the whole export gives, and the main process assembles again only the series that span runs
(or come partly from the cache).
"""
from __future__ import annotations

import bisect
import dataclasses
import gc
import multiprocessing
import os
import pickle
import signal
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError, NotAnImageError
from pipeline.files import temporary_sibling
from pipeline.progress import progress, progress_of
from pipeline.pseudonym import Pseudonymiser
from pipeline.ingest.cache import ScanEntry, entry_json, fields_json_text, header_to_json
from transforms.dicom.scan_fields import read_fields_fast
from transforms.dicom.series import SeriesInfo, assemble_series, series_key, sort_series
from transforms.dicom.slice_header import SliceHeader, header_from_fields

_SMALLEST_CLAIM = 24  # files: the last claims are about this long, so the readers end this close
# files: claims are at most this long, so results (and the cache written from them) arrive every ~0.2 s of
# reading, and a scan killed early still leaves most of what it read in its partial cache
_LARGEST_CLAIM = 1024
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
                header, cached = header_from_fields(got), fields_json_text(got, values)
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


def _units(items: list[Item], largest: int = 64) -> list[int]:
    """Where each unit of ``items`` starts, then ``len(items)``: a unit is a folder's run of items, cut every ``largest``.

    Readers claim runs of whole units, so a series kept in one folder of up to ``largest`` files
    is never cut between readers (items are sorted by path).
    """
    starts = [0]
    folder = None
    for i, (rel, _, _) in enumerate(items):
        here = rel.rpartition("/")[0]
        if i and (here != folder or i - starts[-1] >= largest):
            starts.append(i)
        folder = here
    if len(items):
        starts.append(len(items))
    return starts


def _claim(state: Any, lock: Any, starts: list[int], readers: int, from_back: bool) -> tuple[int, int] | None:
    """Claim the next run of units, from the front or the back of the unclaimed ones (``state``: first, end).

    A claim takes about ``1 / (2 * readers)`` of the files left (at least :data:`_SMALLEST_CLAIM`, at most
    :data:`_LARGEST_CLAIM`), so claims shrink towards the end and the readers finish close together. Returns
    the claimed item range.
    """
    with lock:
        first, end = state[0], state[1]
        if first >= end:
            return None
        want = min(_LARGEST_CLAIM, max(_SMALLEST_CLAIM, (starts[end] - starts[first]) // (2 * readers)))
        if from_back:
            k = min(max(bisect.bisect_right(starts, starts[end] - want, first, end) - 1, first), end - 1)
            state[1] = k
            return starts[k], starts[end]
        k = bisect.bisect_left(starts, starts[first] + want, first + 1, end)
        state[0] = k
        return starts[first], starts[k]


def _unclaimed(n: int, returned: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The item ranges of ``range(n)`` that no returned range covers (returned ranges do not overlap)."""
    gaps, at = [], 0
    for a, b in sorted(returned):
        if a > at:
            gaps.append((at, a))
        at = max(at, b)
    if at < n:
        gaps.append((at, n))
    return gaps


def read_headers(root: Path, items: list[Item], workers: int, pseudonymiser: Pseudonymiser,
                 assembled: list[Assembled] | None = None, describe: Callable[[SeriesInfo], Any] | None = None,
                 spool_dir: str | Path | None = None) -> Iterator[tuple[str, ScanEntry]]:
    """Read and pseudonymise the headers of ``items`` (relative to ``root``) in ``workers`` processes.

    This process is one of them: it reads too, and takes in the others' results between its own
    runs (so ``workers=2`` keeps two cores busy with one child process).

    Args:
        assembled: when given, receives the series of each run read (for :func:`assemble_entries`).
        describe: made of each series a chunk's reader assembles, where it is assembled (picklable).
        spool_dir: where the children's spool files go (beside the scan's outputs, so that a killed scan's
            spool is found and removed by the next one: :func:`pipeline.files.remove_stale_temporaries`);
            default: the system's temporary folder.
    """
    if not items:
        return
    collecting = gc.isenabled()
    gc.disable()  # every header read stays alive: full collections would walk them again and again
    try:
        yield from _read_headers(root, items, workers, pseudonymiser, assembled, describe, spool_dir)
    finally:
        if collecting:
            gc.enable()


def _read_headers(root: Path, items: list[Item], workers: int, pseudonymiser: Pseudonymiser,
                  assembled: list[Assembled] | None, describe: Callable[[SeriesInfo], Any] | None,
                  spool_dir: str | Path | None) -> Iterator[tuple[str, ScanEntry]]:
    if workers <= 1 or len(items) < 64:
        memos: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
        for item in progress(items, desc="reading headers"):
            yield from _read_chunk(str(root), [item], pseudonymiser, memos=memos)[0]
        return
    results = _chunk_results(str(root), items, _units(items), workers - 1, pseudonymiser, assembled is not None,
                             describe, spool_dir)
    for entries, series in results:
        if assembled is not None:
            assembled.append(series)
        yield from entries


def _child_reads(root: str, items: list[Item], starts: list[int], readers: int, state: Any, lock: Any, conn: Any,
                 spool: str, pseudonymiser: Pseudonymiser, assemble: bool,
                 describe: Callable[[SeriesInfo], Any] | None) -> None:
    """A child reader: claims runs of items from the front until none is left.

    Each run's result goes, pickled, to the end of the file ``spool``, and a notice
    ``(first, end, offset, length)`` down ``conn``: the notices are small, so the child never
    waits for the parent, which collects results between its own runs. Closing ``conn`` says the
    child is done; on an error it closes with the runs it finished, and the parent reads the
    rest again (and meets the error itself).
    """
    gc.disable()
    parent = os.getppid()
    _exit_with_parent()
    memos: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
    try:
        with open(spool, "ab") as out:
            at = out.tell()
            while os.getppid() == parent and (claimed := _claim(state, lock, starts, readers, from_back=False)):
                result = _read_chunk(root, items[claimed[0]:claimed[1]], pseudonymiser, assemble, memos, describe)
                blob = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
                out.write(blob)
                out.flush()
                conn.send((*claimed, at, len(blob)))
                at += len(blob)
    finally:
        conn.close()


_PR_SET_PDEATHSIG = 1


def _exit_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (a killed scan leaves no reader running on).

    Elsewhere, or if the call fails, the reader notices between runs that it was re-parented and stops.
    """
    try:
        import ctypes  # in the child only

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class _Child:
    """A child reader as the parent sees it: its process, the end of its notice pipe and its spool file."""

    def __init__(self, context: Any, claims: tuple[Any, ...], work: tuple[Any, ...],
                 spool_dir: str | Path | None = None) -> None:
        """Start :func:`_child_reads` with its arguments before ``conn`` (``claims``) and after ``spool`` (``work``)."""
        self.notices, send = context.Pipe(duplex=False)
        if spool_dir is None:
            import tempfile  # 4 ms of start-up that only this default needs

            spool_dir = tempfile.gettempdir()
        spool_name = temporary_sibling(Path(spool_dir) / "scan.spool")
        fd = os.open(spool_name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)  # readable by this user only
        self.spool = str(spool_name)
        self.results = os.fdopen(fd, "rb")
        self.open = False
        try:
            self.process = context.Process(target=_child_reads, daemon=True, name="radpipe-scan-reader",
                                           args=(*claims, send, self.spool, *work))
            self.process.start()
            self.open = True
        except BaseException:
            self.close()
            raise
        finally:
            send.close()

    def collect(self, wait: bool) -> Iterator[tuple[tuple[int, int], tuple[list[tuple[str, ScanEntry]], Assembled]]]:
        """The runs the child has announced (every one it will send, with ``wait``): (item range, result)."""
        while self.open and (wait or self.notices.poll()):
            try:
                first, end, at, length = self.notices.recv()
            except EOFError:  # done, or died: what it never announced is read by the parent
                self.open = False
                return
            self.results.seek(at)
            yield (first, end), pickle.loads(self.results.read(length))

    def close(self) -> None:
        """Stop listening; a child that has not said it is done is stopped (one that has is left to exit)."""
        self.notices.close()
        if self.open:
            self.process.terminate()
            self.process.join()
        self.results.close()
        os.unlink(self.spool)


def _chunk_results(root: str, items: list[Item], starts: list[int], children: int, pseudonymiser: Pseudonymiser,
                   assemble: bool, describe: Callable[[SeriesInfo], Any] | None, spool_dir: str | Path | None = None
                   ) -> Iterator[tuple[list[tuple[str, ScanEntry]], Assembled]]:
    """:func:`_read_chunk` of runs of ``items`` (cut at the unit ``starts``) in ``children`` child processes and this one.

    Readers claim runs from shared bounds (:func:`_claim`), children from the front and this process
    from the back, in shrinking runs so that all finish about together whatever each one's speed.
    This process has no helper thread (a pool's threads would take turns with it for the GIL while
    it reads): between its own runs it takes in the results the children have announced. Items a
    child claimed but never announced (it died) are read here.
    """
    memos: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
    returned: list[tuple[int, int]] = []
    with progress_of(len(items), "reading headers") as advance:
        for (first, end), result in _claimed_runs(root, items, starts, children, pseudonymiser, assemble, describe,
                                                  memos, spool_dir):
            returned.append((first, end))
            advance(end - first)
            yield result
        for first, end in _unclaimed(len(items), returned):
            advance(end - first)
            yield _read_chunk(root, items[first:end], pseudonymiser, assemble, memos, describe)


def _claimed_runs(root: str, items: list[Item], starts: list[int], children: int, pseudonymiser: Pseudonymiser,
                  assemble: bool, describe: Callable[[SeriesInfo], Any] | None,
                  memos: tuple[dict[Any, Any], dict[Any, Any]], spool_dir: str | Path | None = None
                  ) -> Iterator[tuple[tuple[int, int], tuple[list[tuple[str, ScanEntry]], Assembled]]]:
    """(item range, result) of every run this process and its children claimed and finished, in any order."""
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else \
        multiprocessing.get_context()
    state, lock = context.RawArray("q", [0, len(starts) - 1]), context.Lock()
    readers: list[_Child] = []
    try:
        for _ in range(children):
            readers.append(_Child(context, (root, items, starts, children + 1, state, lock),
                                  (pseudonymiser, assemble, describe), spool_dir))
        while (claimed := _claim(state, lock, starts, children + 1, from_back=True)) is not None:
            yield claimed, _read_chunk(root, items[claimed[0]:claimed[1]], pseudonymiser, assemble, memos, describe)
            for reader in readers:
                yield from reader.collect(wait=False)
        for reader in readers:
            yield from reader.collect(wait=True)
    finally:
        for reader in readers:
            reader.close()


def assemble_entries(entries: Iterable[ScanEntry], assembled: Iterable[Assembled] = (),
                     described: dict[str, Any] | None = None) -> list[SeriesInfo]:
    """The series of the entries' headers, as :func:`~transforms.dicom.series.assemble_series` makes them.

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
    """The header with patient ID and accession number replaced by keys, name, birth date and study date dropped.

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
    fields["patient_name"] = fields["patient_birth_date"] = fields["study_date"] = ""
