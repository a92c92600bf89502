"""pipeline.files: the one atomic writer."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

from pipeline.files import TEMP_PREFIX, atomic_open, atomic_path, remove_stale_temporaries, temporary_sibling, write_atomic


def test_write_atomic_writes_text_and_bytes_exactly(tmp_path):
    assert write_atomic(tmp_path / "a" / "t.csv", "x,y\r\n1,2\n").read_bytes() == b"x,y\r\n1,2\n"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "t.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_atomic(tmp_path / "keep.json", "old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_temporaries_are_unique_per_process_and_keep_the_suffixes(tmp_path):
    a, b = temporary_sibling(tmp_path / "x.nii.gz"), temporary_sibling(tmp_path / "x.nii.gz")
    assert a != b and a.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-") and a.name.endswith(".x.nii.gz")


def _write_many(path: str, text: str) -> None:
    for _ in range(200):
        write_atomic(path, text, durable=False)


def test_two_processes_writing_one_file_leave_a_whole_one(tmp_path):
    target = tmp_path / "shared.txt"
    texts = ["a" * 50_000, "b" * 70_000]
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_many, args=(str(target), t)) for t in texts]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0] and target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{TEMP_PREFIX}{dead_pid}-0a1b2c3d.last.pt"
    live = tmp_path / f"{TEMP_PREFIX}{os.getppid()}-0a1b2c3d.best.pt"
    mine = temporary_sibling(tmp_path / "metrics.csv")
    other = tmp_path / ".tmp-notes.txt"
    for p in (stale, live, mine, other):
        p.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, mine, other))
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_a_killed_process_not_yet_reaped_counts_as_dead():
    """A scan killed with -9 whose parent has not waited for it yet is a zombie: its temporaries are stale."""
    import signal
    import time

    from pipeline.files import _alive

    pid = os.fork()
    if pid == 0:  # the child waits to be killed
        time.sleep(30)
        os._exit(0)
    try:
        assert _alive(pid)
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # until the kernel has made it a zombie (not reaped: no waitpid yet)
            if not _alive(pid):
                break
            time.sleep(0.01)
        assert not _alive(pid)
    finally:
        os.waitpid(pid, 0)


def test_write_bytes_atomic_writes_whole_files_and_leaves_no_temporary(tmp_path, monkeypatch):
    from pipeline.files import write_bytes_atomic

    target = tmp_path / "a.dcm"
    assert write_bytes_atomic(str(target), b"x" * 100_000) == 100_000
    assert target.read_bytes() == b"x" * 100_000
    assert write_bytes_atomic(str(target), bytearray(b"new")) == 3 and target.read_bytes() == b"new"

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("pipeline.files.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(str(target), b"lost")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]
