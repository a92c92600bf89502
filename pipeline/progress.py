"""Progress for long work: a tqdm bar on a terminal, plain log lines otherwise.

Log lines go through :class:`BarSafeStream` (``radpipe``'s log stream): while a bar is on the screen a line is
written above it (``tqdm.write``), never onto the bar's line.
"""
from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

T = TypeVar("T")
log = logging.getLogger("radpipe")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every_s: float = 10.0) -> Iterator[T]:
    """Yield ``items`` while showing progress.

    On a terminal this is a tqdm bar; otherwise (CI, logs, pipes) a log line at most every
    ``every_s`` seconds and one at the end, so a log file stays readable.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, leave=False)
        return
    start = last = time.monotonic()
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s (%.0f s)", desc, count, of, now - start)
    log.debug("%s: %d done in %.1f s", desc, count, time.monotonic() - start)


@contextmanager
def progress_of(total: int, desc: str = "", every_s: float = 10.0) -> Iterator[Callable[[int], None]]:
    """Progress of work done in batches: the context gives ``advance(n)``, called after each batch of ``n``.

    Shown as :func:`progress` shows it (a tqdm bar on a terminal, log lines otherwise).
    """
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, leave=False) as bar:
            yield bar.update
        return
    start = last = time.monotonic()
    count = 0

    def advance(n: int) -> None:
        nonlocal count, last
        count += n
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            log.info("%s: %d/%d (%.0f s)", desc, count, total, now - start)

    yield advance
    log.debug("%s: %d done in %.1f s", desc, count, time.monotonic() - start)


@contextmanager
def transfer_progress(desc: str = "", unit: str = "instance", every_s: float = 10.0
                      ) -> Iterator[Callable[[int, int], None]]:
    """Progress of a transfer of unknown size: the context gives ``advance(n_items, n_bytes)``, thread-safe.

    On a terminal a tqdm bar counting items (rate included) with the MB so far; otherwise a log line
    ``desc: N unit(s), X MB (T s)`` at most every ``every_s`` seconds.
    """
    lock = threading.Lock()
    count = size = 0
    start = last = time.monotonic()
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit=unit, leave=False)

    def advance(n_items: int, n_bytes: int) -> None:
        nonlocal count, size, last
        with lock:
            count, size = count + n_items, size + n_bytes
            now = time.monotonic()
            if bar is not None:
                bar.update(n_items)
                bar.set_postfix_str(f"{size / 1e6:.1f} MB", refresh=False)
            elif now - last >= every_s:
                last = now
                log.info("%s: %d %s(s), %.1f MB (%.0f s)", desc, count, unit, size / 1e6, now - start)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()
    log.debug("%s: %d %s(s), %.1f MB in %.1f s", desc, count, unit, size / 1e6, time.monotonic() - start)


class BarSafeStream(io.TextIOBase):
    """A text stream (for a logging handler) that writes above the tqdm bars shown on it, not onto their line.

    Args:
        stream: the stream written to (``sys.stderr``).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        bars = _bars_on(self.stream)
        if bars is None:
            self.stream.write(text)
        else:
            bars.write(text.removesuffix("\n"), file=self.stream)  # clears the bars, writes, redraws them
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())


def _bars_on(stream: TextIO) -> type | None:
    """The tqdm class when a bar is shown on ``stream`` (tqdm is not imported just to ask)."""
    module = sys.modules.get("tqdm.std")
    if module is None:
        return None
    bar_class = module.tqdm
    shown = [bar for bar in list(getattr(bar_class, "_instances", ())) if getattr(bar, "fp", None) is not None]
    terminal = (sys.stderr, sys.stdout)  # tqdm moves the bars of either when writing to one
    same = [bar for bar in shown if bar.fp == stream or (stream in terminal and bar.fp in terminal)]
    return bar_class if same else None
