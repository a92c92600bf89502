"""The one way radpipe writes a file: whole or not at all.

Every output goes to a temporary sibling named for this process (``.tmp-<pid>-<random>.<name>``, so two
processes writing the same file never share a temporary), is flushed to disk, then replaces the target with
:func:`os.replace`. A reader, a kill or a crash at any moment sees the old file or the new one, never half of
one. The temporary keeps the target's suffixes, so writers that choose a format by extension (NIfTI, PNG) work
on it unchanged.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> write_atomic(out, "one line\\n").read_text()
    'one line\\n'
    >>> with atomic_open(out) as f:
    ...     _ = f.write("two\\n")
    >>> out.read_text()
    'two\\n'
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Prefix of every temporary file radpipe writes (see :func:`temporary_sibling`).
TEMP_PREFIX = ".tmp-"


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """A name beside ``path`` unique to this process and call, ending with ``path``'s own name."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.{path.name}")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the renames in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``, on error it is removed.

    Args:
        path: the file to write; its folder is created when missing.
        durable: fsync the file and its folder before returning. Files written per series in bulk and
            rebuilt when lost (the scan's series references and header cache, converted NIfTIs) turn this off:
            a fsync costs about 0.3 ms a file here, as much as reading a header. Either way a reader never
            sees half a file.
        mode: permissions of the new file (e.g. ``0o600``: owner only), given when the temporary is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        if mode is not None:  # made with its permissions, so no one else can read even a part of it
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, durable: bool = True, encoding: str = "utf-8",
    newline: str | None = None, buffering: int = -1, mode_bits: int | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing (text ``"w"`` or binary ``"wb"``); see :func:`atomic_path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', found {mode!r}")
    with atomic_path(path, durable=durable, mode=mode_bits) as tmp:
        if mode == "wb":
            with open(tmp, "wb", buffering=buffering) as f:
                yield f
        else:
            with open(tmp, "w", encoding=encoding, newline=newline, buffering=buffering) as f:
                yield f


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, durable: bool = True) -> Path:
    """Write ``data`` (text as UTF-8, written as given: no newline translation) to ``path`` atomically."""
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_bytes_atomic(path: str, data: bytes | bytearray) -> int:
    """Write ``data`` to ``path``, whose folder exists, whole or not at all; no fsync; returns the bytes written.

    :func:`write_atomic` with nothing around the system calls: for many files written in bulk (the instances
    of ``radpipe pull``), where :func:`atomic_path`'s folder creation and path objects cost as much as the write.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.{name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return len(data)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """True for a process that has exited but was not reaped yet (killed, its parent slow to wait for it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False  # no /proc (macOS): the signal check above is all there is
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"


def stale_temporaries(folder: str | os.PathLike[str], name: str = "") -> list[Path]:
    """The temporaries in ``folder`` (of the file ``name``, or of any) left by radpipe processes that no longer run.

    Temporaries of live processes (a write in progress next door) are not listed.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    found = []
    for entry in entries:
        head, dot, rest = entry.name[len(TEMP_PREFIX):].partition(".")
        if not entry.name.startswith(TEMP_PREFIX) or not dot or (name and rest != name):
            continue
        pid = head.partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete :func:`stale_temporaries` of ``folder`` (what a kill mid-write left); returns the deleted paths."""
    removed = stale_temporaries(folder)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed

