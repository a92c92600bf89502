"""Tests of pipeline.progress: log lines when stderr is not a terminal."""
from __future__ import annotations

import logging

from pipeline.progress import progress, progress_of


def test_progress_of_batches_logs_the_running_count(caplog):
    with caplog.at_level(logging.DEBUG, logger="radpipe"):
        with progress_of(10, "reading headers", every_s=0.0) as advance:
            advance(4)
            advance(6)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["reading headers: 4/10 (0 s)", "reading headers: 10/10 (0 s)"]
    assert lines[2].startswith("reading headers: 10 done in ")


def test_progress_yields_every_item_and_logs_the_total(caplog):
    with caplog.at_level(logging.DEBUG, logger="radpipe"):
        assert list(progress(iter("abc"), total=3, desc="x", every_s=0.0)) == ["a", "b", "c"]
    assert [r.getMessage() for r in caplog.records][:3] == ["x: 1/3 (0 s)", "x: 2/3 (0 s)", "x: 3/3 (0 s)"]
