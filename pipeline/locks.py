"""One writer per output: an advisory lock beside what a command writes.

Two runs writing the same output (a cron job and a person, two ``predict`` runs into a fresh
folder) would interleave their files. :func:`output_lock` takes an exclusive, non-blocking
``flock`` on ``<output>.lock`` for the whole command; the second run stops at once with an
exit-2 error naming the output and the holder's pid. The kernel releases the lock when the holder
exits, however it exits (a kill -9 included), so a lock file left behind never blocks a re-run.
Processes forked while a lock is held (scan readers, loader workers) close their copy of it at
once: the lock lives exactly as long as the command that took it.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "index.csv"
    >>> with output_lock(out, "scan"):
    ...     with output_lock(out, "scan"):
    ...         pass
    Traceback (most recent call last):
    ...
    pipeline.locks.OutputLockedError: another scan is writing .../index.csv (pid ...); wait for it to finish...
"""
from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError


class OutputLockedError(PipelineError, BlockingIOError):
    """Another process holds the lock of an output."""


_HELD: set[int] = set()


def _close_inherited() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited)


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside it."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


@contextmanager
def output_lock(output: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` while the block runs (see the module docstring).

    Args:
        output: the file or folder the command writes; its parent folder is created when missing.
        command: the command's name, for the message (``scan``, ``predict`` ...).

    Raises:
        OutputLockedError: another process holds it.
    """
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise OutputLockedError(
                f"another {command} is writing {Path(output)} (pid {holder}); wait for it to finish, or write "
                f"to another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _HELD.add(fd)
        yield path
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the lock
