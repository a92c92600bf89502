"""Tests of pipeline.progress: log lines when stderr is not a terminal."""
from __future__ import annotations

import logging

from pipeline.progress import progress, progress_of, transfer_progress


def test_progress_of_batches_logs_the_running_count(caplog):
    with caplog.at_level(logging.DEBUG, logger="radpipe"), progress_of(10, "reading headers", every_s=0.0) as advance:
        advance(4)
        advance(6)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["reading headers: 4/10 (0 s)", "reading headers: 10/10 (0 s)"]
    assert lines[2].startswith("reading headers: 10 done in ")


def test_progress_yields_every_item_and_logs_the_total(caplog):
    with caplog.at_level(logging.DEBUG, logger="radpipe"):
        assert list(progress(iter("abc"), total=3, desc="x", every_s=0.0)) == ["a", "b", "c"]
    assert [r.getMessage() for r in caplog.records][:3] == ["x: 1/3 (0 s)", "x: 2/3 (0 s)", "x: 3/3 (0 s)"]



def test_transfer_progress_counts_items_and_megabytes_from_threads(caplog):
    from concurrent.futures import ThreadPoolExecutor

    with caplog.at_level(logging.DEBUG, logger="radpipe"), ThreadPoolExecutor(4) as pool, \
            transfer_progress("pull", unit="instance", every_s=3600.0) as advance:
        list(pool.map(lambda _: advance(1, 250_000), range(40)))
    assert [r.getMessage().rsplit(" in ", 1)[0] for r in caplog.records] == ["pull: 40 instance(s), 10.0 MB"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radpipe"), \
            transfer_progress("pull", unit="instance", every_s=0.0) as advance:
        advance(2, 1_500_000)
        advance(1, 500_000)
    assert [r.getMessage() for r in caplog.records] == ["pull: 2 instance(s), 1.5 MB (0 s)",
                                                        "pull: 3 instance(s), 2.0 MB (0 s)"]

def test_a_log_line_goes_above_a_live_bar_not_onto_its_line():
    import io

    from tqdm import tqdm

    from pipeline.progress import BarSafeStream

    screen = io.StringIO()
    stream = BarSafeStream(screen)
    with tqdm(total=3, file=screen, leave=False, desc="epoch") as bar:
        bar.update(1)
        stream.write("epoch 1/3  train_loss 0.5\n")
        bar.update(2)
    text = screen.getvalue()
    before = text[: text.index("epoch 1/3")]
    assert before.endswith("\r") and before.rstrip("\r").endswith(" ")  # the bar's line was cleared first
    assert "epoch 1/3  train_loss 0.5\n\repoch: " in text  # then the bar is drawn again below the line
    plain = io.StringIO()
    BarSafeStream(plain).write("no bar\n")
    assert plain.getvalue() == "no bar\n"


def test_radpipe_logs_through_the_bar_safe_stream(monkeypatch):
    import sys

    from pipeline import cli
    from pipeline.progress import BarSafeStream

    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    cli.main(["models", "--json"])
    assert isinstance(seen["stream"], BarSafeStream) and seen["stream"].stream is sys.stderr
