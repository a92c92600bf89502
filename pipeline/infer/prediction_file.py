"""Prediction CSV files that survive interruption: append + fsync, repair, sort, shard and merge.

A prediction file has a header and one line per case, keyed by an id column (``series_id``).
While a batch job runs, finished rows are appended and flushed to disk (``fsync``) batch by
batch, so a kill loses at most the batch in flight. Opening an existing file again
(:class:`ResumableCsvWriter`) repairs it: a half-written last line (kill mid-write) and any line
with the wrong number of fields are dropped, and the ids already written are returned so the
caller skips them. When the job ends, :func:`finalize` rewrites the file atomically with rows
sorted by id and writes a ``<stem>.done.json`` marker; without that marker the file is partial.

Sharded jobs (``--shard i/n``) each take the ids whose hash falls in their shard
(:func:`in_shard`) and write ``<stem>.part-i-of-n.csv``; :func:`merge_parts` checks that every
part of ``0..n-1`` is there and finished, and writes one file equal to an unsharded run's.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.files import write_atomic

log = logging.getLogger("radpipe")

_PART_RE = re.compile(r"^(?P<stem>.+)\.part-(?P<i>\d+)-of-(?P<n>\d+)$")


class PredictionFileError(PipelineError, ValueError):
    """A prediction file or part cannot be resumed or merged."""


def clean_cell(value: object) -> str:
    """A CSV cell as one line of text (newlines would break the line-per-row repair)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else repr(value)
    return " ".join(str(value).splitlines()).replace("\x00", "")


def format_rows(columns: Sequence[str], rows: Iterable[Mapping[str, object]], header: bool = False) -> str:
    """CSV text of ``rows`` (missing cells empty), one ``\\n``-terminated line each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([clean_cell(row.get(c, "")) for c in columns])
    return buffer.getvalue()


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    """Write a whole CSV file atomically."""
    write_atomic(path, format_rows(columns, rows, header=True))


def write_skipped(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    """Write a list of skipped inputs atomically, rows sorted by all their cells (so parts merge identically)."""
    unique = {tuple(clean_cell(r.get(c, "")) for c in columns): r for r in rows}
    write_csv_atomic(path, columns, [unique[k] for k in sorted(unique)])


def read_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]], int]:
    """Read a prediction file, skipping damaged lines.

    Returns:
        ``(columns, rows, n_dropped)``: the header, the intact rows (dicts of text) and how many lines were
        dropped (a partial last line without its newline, or a line with the wrong number of fields).
    """
    data = Path(path).read_bytes().replace(b"\x00", b"")
    dropped = 0
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        dropped += 1
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not lines:
        return [], [], dropped
    columns = next(csv.reader([lines[0]]))
    rows = []
    for line in lines[1:]:
        try:
            cells = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            cells = []
        if len(cells) != len(columns):
            dropped += 1
            continue
        rows.append(dict(zip(columns, cells)))
    return columns, rows, dropped


def done_marker(path: str | Path) -> Path:
    """The marker written next to a finished prediction file: ``<stem>.done.json``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.done.json")


def job_file(path: str | Path) -> Path:
    """What a prediction file is the output of (run, checkpoint, input, shard): ``<stem>.job.json``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.job.json")


class ResumableCsvWriter:
    """Appends rows to a CSV file, fsync'ed per call, resuming a file an earlier run left.

    Args:
        path: the CSV file.
        columns: its header; an existing file must have the same one.
        id_column: the column identifying a case.
        job: what produces the rows (run, checkpoint hash, input, shard), kept in ``<stem>.job.json``;
            an existing file is resumed only by the same job.

    Attributes:
        done: ids already in the file when it was opened, plus those written since.

    Raises:
        PredictionFileError: the existing file has other columns or belongs to another job.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], id_column: str = "series_id",
                 job: Mapping[str, object] | None = None) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.id_column = id_column
        if id_column not in self.columns:
            raise ValueError(f"id column {id_column!r} is not among the columns {self.columns}")
        self.done: set[str] = set()
        job_text = json.dumps(dict(job), indent=2, sort_keys=True, default=str) + "\n" if job is not None else None
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_job(job_text)
            done_marker(self.path).unlink(missing_ok=True)
            self._resume()
        else:
            done_marker(self.path).unlink(missing_ok=True)
            write_atomic(self.path, format_rows(self.columns, [], header=True))
        if job_text is not None:
            write_atomic(job_file(self.path), job_text)
        self._file = open(self.path, "a", encoding="utf-8", newline="")

    def _check_job(self, job_text: str | None) -> None:
        previous = job_file(self.path)
        if job_text is None or not previous.is_file():
            return
        before, now = json.loads(previous.read_text(encoding="utf-8")), json.loads(job_text)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            what = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise PredictionFileError(
                f"{self.path} holds rows of another job ({what}); resuming would mix predictions: delete it "
                "(and its .job.json) or choose another --out"
            )

    def _resume(self) -> None:
        found, rows, dropped = read_rows(self.path)
        if found and found != self.columns:
            raise PredictionFileError(
                f"{self.path} exists with columns {found}, but this run writes {self.columns}; it belongs to "
                "another run or input: delete it or choose another --out"
            )
        unique = {}
        for row in rows:
            unique.setdefault(row[self.id_column], row)
        if dropped or not found or len(unique) != len(rows):
            log.warning(
                "%s: repaired (%d damaged line(s) dropped, %d duplicate(s) removed); those cases run again",
                self.path, dropped, len(rows) - len(unique),
            )
            write_csv_atomic(self.path, self.columns, unique.values())
        self.done = set(unique)
        if self.done:
            log.info("%s: resuming, %d case(s) already done", self.path, len(self.done))

    def write_rows(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Append rows and force them to disk."""
        if not rows:
            return
        self._file.write(format_rows(self.columns, rows))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.update(str(r[self.id_column]) for r in rows)

    def close(self) -> None:
        """Close the file (rows written so far stay)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> ResumableCsvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finalize(path: str | Path, id_column: str = "series_id", summary: Mapping[str, object] | None = None,
             keep: Collection[str] | None = None) -> int:
    """Rewrite a prediction file sorted by id (atomically) and write its done marker.

    Args:
        path: the file written by :class:`ResumableCsvWriter`.
        id_column: column to sort by.
        summary: extra facts stored in the marker (shard, input, run).
        keep: the ids of the job; rows of other ids (series gone from the input since an interrupted
            run) are dropped. None keeps every row.

    Returns:
        The number of rows.
    """
    columns, rows, _ = read_rows(path)
    unique = {r[id_column]: r for r in rows}
    if keep is not None:
        stale = [k for k in unique if k not in keep]
        if stale:
            log.warning("%s: %d row(s) of series no longer in the input dropped (first: %s)", path, len(stale),
                        stale[0])
            unique = {k: v for k, v in unique.items() if k in keep}
    ordered = [unique[k] for k in sorted(unique)]
    write_csv_atomic(path, columns, ordered)
    counts: dict[str, int] = {}
    for row in ordered:
        status = row.get("status", "ok")
        counts[status] = counts.get(status, 0) + 1
    marker = {"rows": len(ordered), "status_counts": counts, **(summary or {})}
    write_atomic(done_marker(path), json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return len(ordered)


# ---------------------------------------------------------------------------------------------------- shards


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard i/n`` (``i`` counts from 0, like torchrun's RANK).

    Raises:
        PredictionFileError: not two whole numbers with ``0 <= i < n``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise PredictionFileError(
            f"--shard {text!r}: expected i/n with 0 <= i < n (i counts from 0, like RANK), e.g. --shard 0/4"
        )
    return int(match.group(1)), int(match.group(2))


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of a torchrun process (``RANK`` / ``WORLD_SIZE``), or None outside torchrun or with 1 process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        return None
    return (rank, world) if world > 1 else None


def in_shard(case_id: str, index: int, count: int) -> bool:
    """Whether a case belongs to shard ``index`` of ``count`` (SHA-1 of its id modulo ``count``)."""
    if count <= 1:
        return True
    digest = hashlib.sha1(case_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def part_path(out: str | Path, index: int, count: int) -> Path:
    """``preds.csv`` -> ``preds.part-<index>-of-<count>.csv``."""
    p = Path(out)
    return p.with_name(f"{p.stem}.part-{index}-of-{count}{p.suffix}")


def sibling(path: str | Path, kind: str) -> Path:
    """``preds.csv`` -> ``preds.<kind>.csv`` (e.g. the ``skipped`` list)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{kind}{p.suffix or '.csv'}")


def find_parts(out: str | Path) -> list[Path]:
    """The part files of ``out`` present on disk (``<stem>.part-*-of-*.csv``)."""
    p = Path(out)
    found = p.parent.glob(f"{p.stem}.part-*-of-*{p.suffix}")
    return sorted(f for f in found if (m := _PART_RE.match(f.stem)) and m.group("stem") == p.stem)


def merge_parts(parts: Sequence[str | Path], out: str | Path, id_column: str = "series_id") -> int:
    """Merge finished shard parts into one file sorted by id, equal to an unsharded run's.

    Also merges the parts' ``.skipped.csv`` lists (union, sorted) into ``<out stem>.skipped.csv``.

    Args:
        parts: the ``*.part-i-of-n.csv`` files, all of one ``n``.
        out: the merged file.
        id_column: the id column.

    Returns:
        The number of rows merged.

    Raises:
        PredictionFileError: no parts, parts of different runs or counts, a missing or unfinished part,
            different headers, or one id in two parts.
    """
    if not parts:
        raise PredictionFileError(f"no part files to merge into {out}; give the *.part-i-of-n.csv files")
    problems: list[str] = []
    by_index: dict[int, Path] = {}
    counts = set()
    for part in map(Path, parts):
        match = _PART_RE.match(part.stem)
        if not match:
            problems.append(f"{part}: not named <name>.part-<i>-of-<n>.csv")
            continue
        counts.add(int(match.group("n")))
        by_index[int(match.group("i"))] = part
        if not part.is_file():
            problems.append(f"{part}: not found")
        elif not done_marker(part).is_file():
            problems.append(f"{part}: unfinished (no {done_marker(part).name}); run its shard again to finish it")
    jobs = {}
    for part in by_index.values():
        if job_file(part).is_file():
            job = json.loads(job_file(part).read_text(encoding="utf-8"))
            job.pop("shard", None)
            jobs[json.dumps(job, sort_keys=True)] = part.name
    if len(jobs) > 1:
        problems.append(f"parts of different runs, checkpoints or inputs ({', '.join(sorted(jobs.values()))}); "
                        "merge the parts of one job")
    if len(counts) > 1:
        problems.append(f"parts of different shard counts {sorted(counts)}; merge the parts of one run")
    elif counts:
        n = counts.pop()
        missing = [i for i in range(n) if i not in by_index]
        if missing:
            problems.append(f"shard(s) {missing} of {n} missing; run them with --shard i/{n}")
    if problems:
        raise PredictionFileError("cannot merge: " + "; ".join(problems))
    header: list[str] | None = None
    merged: dict[str, dict[str, str]] = {}
    skipped_columns: list[str] = []
    skipped: dict[tuple[str, ...], dict[str, str]] = {}
    for i in sorted(by_index):
        columns, rows, dropped = read_rows(by_index[i])
        if dropped:
            problems.append(f"{by_index[i]}: {dropped} damaged line(s); run its shard again")
        if header is None:
            header = columns
        elif columns != header:
            problems.append(f"{by_index[i]}: columns {columns} differ from {header}")
        for row in rows:
            if row[id_column] in merged:
                problems.append(f"id {row[id_column]} is in two parts")
            merged[row[id_column]] = row
        skipped_file = sibling(by_index[i], "skipped")
        if skipped_file.is_file():
            s_columns, s_rows, _ = read_rows(skipped_file)
            skipped_columns = skipped_columns or s_columns
            for row in s_rows:
                skipped.setdefault(tuple(row.get(c, "") for c in skipped_columns), row)
    if problems or header is None:
        raise PredictionFileError("cannot merge: " + "; ".join(problems[:20] or ["the parts are empty"]))
    write_csv_atomic(out, header, [merged[k] for k in sorted(merged)])
    if skipped_columns:
        write_skipped(sibling(out, "skipped"), skipped_columns, skipped.values())
    finalize(out, id_column, {"merged_from": [p.name for _, p in sorted(by_index.items())]})
    return len(merged)
