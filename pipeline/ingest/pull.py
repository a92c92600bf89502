"""``radpipe pull``: studies from a PACS (DICOMweb or DIMSE) into a local export that ``radpipe scan`` reads.

Targets are the rows of a label sheet (accession numbers in ``--key``) or study UIDs. For each, the studies it
names are found, then their series (of ``--modality`` only, when given), then their instances; each instance
lands in ``EXPORT_DIR/<study_key>/<series_key>/<instance_key>.dcm``, every name a keyed hash
(:mod:`pipeline.pseudonym`): no accession number, patient name or ID in a folder name, log line or message.
Each file is written whole or not at all (:mod:`pipeline.files`), so a re-run fetches only the instances not
on disk yet: a study with no folder yet is retrieved whole in one request when the PACS client can
(DICOMweb; not with ``--modality``), each instance filed under the series it names; otherwise a series with no
folder yet is retrieved whole at once, and one with a folder has its instances listed and only the missing ones
retrieved; the progress counts instances and MB received
(:func:`pipeline.progress.transfer_progress`). A target that matched nothing or failed is listed by its sheet row
(the header is row 1) with the reason, in ``<EXPORT_DIR>.pull-failures.csv`` too; the other targets go on.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, ManifestError, PipelineError
from pipeline.files import atomic_open, write_atomic, write_bytes_atomic
from pipeline.ingest.pacs_source import PacsClient, PacsError
from pipeline.locks import output_lock
from pipeline.progress import transfer_progress
from pipeline.pseudonym import Pseudonymiser
from transforms.dicom.raw import NeedMore, NotFast, instance_uids

log = logging.getLogger("radpipe")
MAX_SHEET_BYTES = 256 << 20


@dataclass(frozen=True)
class Target:
    """One thing to pull: a sheet row's accession number or a study UID; ``label`` is what messages show."""

    label: str
    accession: str = ""
    study_uid: str = ""


@dataclass
class PullSummary:
    """What a pull did; :meth:`lines` is what the command prints."""

    n_targets: int = 0
    n_studies: int = 0
    n_series: int = 0
    n_fetched: int = 0
    n_present: int = 0
    n_bytes: int = 0
    n_present_bytes: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    failures_path: Path | None = None

    def lines(self) -> list[str]:
        """A few lines for the terminal: counts, speed, then each failure."""
        mb = self.n_bytes / 1e6
        speed = f", {mb / self.seconds:.1f} MB/s, {self.n_fetched / self.seconds:.0f} instances/s" \
            if self.seconds > 0 and self.n_fetched else ""
        took = f"{self.seconds:.{2 if self.seconds < 1 else 1}f}"
        out = [(f"pulled {self.n_fetched} instance(s) ({mb:.1f} MB) in {took} s{speed}; "
                f"{self.n_present} already on disk ({self.n_present_bytes / 1e6:.1f} MB); {self.n_studies} "
                f"study(ies), {self.n_series} series from {self.n_targets} target(s)")]
        if self.failures:
            out.append(f"{len(self.failures)} target(s) failed or matched nothing (listed in {self.failures_path}):")
            out += [f"  {label}: {reason}" for label, reason in self.failures]
        return out


def _column(fields: list[str], key: str, sheet: Path) -> str:
    norm = {"".join(ch for ch in f.lower() if ch.isalnum()): f for f in fields}
    found = norm.get("".join(ch for ch in key.lower() if ch.isalnum()))
    if found is None:
        raise ConfigError(f"label sheet {sheet} has no column {key!r} (--key); its columns: {', '.join(fields)}")
    return found


def read_targets(sheet: str | Path, key: str = "accession_number") -> list[Target]:
    """One target per non-blank sheet row, labelled ``row N`` (the header is row 1, blank lines not counted)."""
    path = Path(sheet)
    try:
        if path.stat().st_size > MAX_SHEET_BYTES:
            raise ManifestError(f"label sheet {path} is larger than {MAX_SHEET_BYTES >> 20} MB; split it")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"label sheet {path} cannot be read ({type(e).__name__}); expected a UTF-8 CSV") from e
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise ManifestError(f"label sheet {path} is not a readable CSV ({e})") from None
    if not rows:
        raise ManifestError(f"label sheet {path} is empty; expected a header row with a {key!r} column")
    header = [h.strip() for h in rows[0]]
    index = header.index(_column(header, key, path))
    targets = []
    for number, row in enumerate(rows[1:], start=2):
        value = row[index].strip() if index < len(row) else ""
        targets.append(Target(f"row {number}", accession=value))
    return targets


def study_targets(uids: list[str], pseudonymiser: Pseudonymiser) -> list[Target]:
    """Targets of ``--study UID``; labelled by their study key."""
    return [Target(f"study {pseudonymiser.key(uid, 'study')}", study_uid=uid.strip()) for uid in uids]


class _Writer:
    """Writes received instances into their series folder (file named by the instance key) and counts them
    (in ``totals`` and, when given, with ``advance(1, size)``: the progress in instances and bytes).

    With ``series_uid`` every instance goes to that series' folder (a series retrieve); without, each goes to
    the folder of the SeriesInstanceUID it carries (a whole-study retrieve).
    """

    def __init__(self, study_folder: Path, pseudonymiser: Pseudonymiser, totals: dict[str, int], lock: threading.Lock,
                 advance: Callable[[int, int], None] | None = None, series_uid: str = "") -> None:
        self.study_folder, self.pseudonymiser, self.totals, self.lock = study_folder, pseudonymiser, totals, lock
        self.advance, self.series_uid = advance, series_uid
        self.received: set[str] = set()
        self.series: set[str] = set()
        self._folders: dict[str, str] = {}

    def __call__(self, instance: bytes | Any) -> int:
        """Write one instance: a Part 10 file's bytes as received (a bare dataset or a Dataset is written with
        pydicom, file meta added)."""
        import pydicom

        dataset = instance
        raw = isinstance(instance, (bytes, bytearray))
        sop, series = _uids(instance) if raw else ("", "")
        if raw and not (sop and (series or self.series_uid)):
            try:
                dataset = pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True, force=True)
            except Exception as e:  # noqa: BLE001 - a damaged object is this series' failure, not a crash
                raise PacsError(f"the PACS sent an object that does not parse ({type(e).__name__})") from None
        sop = sop or str(dataset.get("SOPInstanceUID", "") or "")
        series = self.series_uid or series or str(dataset.get("SeriesInstanceUID", "") or "")
        if not sop or not series:
            raise PacsError(f"the PACS sent an object without {'SOPInstanceUID' if not sop else 'SeriesInstanceUID'}")
        folder = self._folders.get(series)
        if folder is None:
            folder = self._folders[series] = str(self.study_folder / self.pseudonymiser.key(series, "series"))
            os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{self.pseudonymiser.key(sop, 'instance')}.dcm")
        if raw and instance[128:132] == b"DICM":
            size = write_bytes_atomic(path, instance)
        else:
            with atomic_open(path, "wb", durable=False) as f:
                full = pydicom.dcmread(io.BytesIO(instance), force=True) if raw else dataset
                pydicom.dcmwrite(f, full, enforce_file_format=True)
                size = f.tell()
        self.received.add(sop)
        self.series.add(series)
        with self.lock:
            self.totals["fetched"] += 1
            self.totals["bytes"] += size
        if self.advance is not None:
            self.advance(1, size)
        return size


def _uids(data: bytes | bytearray) -> tuple[str, str]:
    """SOPInstanceUID and SeriesInstanceUID of a Part 10 file's bytes, read by the byte reader (("", "") when it
    cannot: pydicom then)."""
    try:
        return instance_uids(data)
    except (NotFast, NeedMore, struct.error, UnicodeDecodeError, KeyError, ValueError):
        return "", ""


def _size_on_disk(path: Path) -> int:
    """Bytes of a file (0 when it is missing: an instance is on disk when its file is not empty)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def pull_target(client: PacsClient, target: Target, out: Path, pseudonymiser: Pseudonymiser,
                modalities: tuple[str, ...], totals: dict[str, int], lock: threading.Lock,
                advance: Callable[[int, int], None] | None = None) -> str:
    """Pull one target; returns "" on success, else the reason (never an identifier).

    ``advance(n_instances, n_bytes)`` is called for each instance received (the progress of :func:`pull`).
    """
    if not target.accession and not target.study_uid:
        return "empty key cell"
    studies = client.find_studies(accession=target.accession, study_uid=target.study_uid)
    if not studies:
        return "matched no study on the PACS"
    problems = []
    fetch_study = getattr(client, "fetch_study", None)
    for study in studies:
        study_key = pseudonymiser.key(study, "study")
        if fetch_study is not None and not modalities and not (out / study_key).is_dir():
            # nothing of it on disk yet: the whole study in one retrieve, without listing its series
            writer = _Writer(out / study_key, pseudonymiser, totals, lock, advance)
            fetch_study(study, writer)
            with lock:
                totals["studies"] += 1
                totals["series"] += len(writer.series)
            if not writer.received:
                problems.append(f"study {study_key}: no instance received")
            continue
        series_uids = client.find_series(study, modalities)
        with lock:
            totals["studies"] += 1
            totals["series"] += len(series_uids)
        if not series_uids:
            problems.append(f"study {study_key} has no series" + (f" of modality {','.join(modalities)}"
                                                                   if modalities else ""))
        for series in series_uids:
            folder = out / study_key / pseudonymiser.key(series, "series")
            writer = _Writer(out / study_key, pseudonymiser, totals, lock, advance, series_uid=series)
            if not folder.is_dir():  # nothing of it on disk yet: the whole series, without listing its instances
                client.fetch(study, series, None, writer)
                if not writer.received:
                    problems.append(f"series {pseudonymiser.key(series, 'series')}: no instance received")
                continue
            sops = client.find_instances(study, series)
            sizes = {s: _size_on_disk(folder / f"{pseudonymiser.key(s, 'instance')}.dcm") for s in sops}
            missing = [s for s in sops if not sizes[s]]
            with lock:
                totals["present"] += len(sops) - len(missing)
                totals["present_bytes"] += sum(sizes.values())
            if not missing:
                continue
            client.fetch(study, series, None if len(missing) == len(sops) else missing, writer)
            lost = len(set(missing) - writer.received)
            if lost:
                problems.append(f"series {pseudonymiser.key(series, 'series')}: {lost} of {len(missing)} instance(s) "
                                "not received (re-run to fetch them)")
    return "; ".join(problems)


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["target", "reason"])
    writer.writerows(failures)
    write_atomic(path, buffer.getvalue())


def pull(client: PacsClient, targets: list[Target], out: str | Path, *, modalities: tuple[str, ...] = (),
         workers: int = 4, pseudonymiser: Pseudonymiser | None = None) -> PullSummary:
    """Pull ``targets`` from ``client`` into ``out``; one failed target never stops the others.

    Raises:
        PacsError: the PACS answered no one (unreachable, refused association, 401): that one line.
    """
    out = Path(out)
    pseudonymiser = pseudonymiser or Pseudonymiser()
    totals = dict.fromkeys(("studies", "series", "fetched", "present", "bytes", "present_bytes"), 0)
    lock = threading.Lock()
    summary = PullSummary(n_targets=len(targets), failures_path=out.with_name(out.name + ".pull-failures.csv"))
    start = time.monotonic()
    results: dict[int, str] = {}
    fatal: list[PacsError] = []

    def run(i: int, advance: Callable[[int, int], None]) -> None:
        if fatal:  # the PACS cannot answer anyone: stop asking
            results[i] = ""
            return
        try:
            results[i] = pull_target(client, targets[i], out, pseudonymiser, modalities, totals, lock, advance)
        except PacsError as e:
            results[i] = " ".join(str(e).split())
            if e.fatal and not totals["studies"]:
                fatal.append(e)
        except PipelineError as e:
            results[i] = " ".join(str(e).split())

    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out, "pull"), transfer_progress("pull", unit="instance") as advance, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda i: run(i, advance), range(len(targets))))
    close = getattr(client, "close", None)
    if close is not None:
        close()
    summary.seconds = time.monotonic() - start
    summary.n_studies, summary.n_series = totals["studies"], totals["series"]
    summary.n_fetched, summary.n_present, summary.n_bytes = totals["fetched"], totals["present"], totals["bytes"]
    summary.n_present_bytes = totals["present_bytes"]
    summary.failures = [(targets[i].label, results[i]) for i in range(len(targets)) if results[i]]
    if fatal and not totals["studies"]:
        raise fatal[0]
    if summary.failures:
        _write_failures(summary.failures_path, summary.failures)  # type: ignore[arg-type]
    elif summary.failures_path is not None and summary.failures_path.exists():
        summary.failures_path.unlink()
    log.debug("pull: %d target(s), %d failed", len(targets), len(summary.failures))
    return summary
