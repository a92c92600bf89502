"""``radpipe scan`` as an operations team runs it: two at once, links and FIFOs, kills, unchanged re-scans."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo.synthetic_dicom import SeriesSpec, write_series
from pipeline.demo.synthetic_export import write_export
from pipeline.files import TEMP_PREFIX
from pipeline.ingest.scan import output_paths, scan_export
from pipeline.locks import output_lock
from pipeline.pseudonym import Pseudonymiser

SECRET = b"0123456789abcdef0123456789abcdef-test"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_export(tmp_path_factory.mktemp("ops"), n_patients=4, seed=5, slices=(12, 14)).export_dir


def _skipped(index_csv: Path) -> dict[str, str]:
    with output_paths(index_csv)["skipped"].open(newline="", encoding="utf-8") as f:
        return {r["path"]: r["reason"] for r in csv.DictReader(f)}


def test_a_second_scan_into_the_same_output_stops_with_the_holder(export, tmp_path, capsys):
    out = tmp_path / "scan" / "index.csv"
    with output_lock(out, "scan"):
        assert main(["scan", str(export), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"radpipe scan: error: another scan is writing {out} (pid {os.getpid()}); wait for it to finish, "
                   "or write to another --out"]
    assert not out.exists()
    assert main(["scan", str(export), "--out", str(out), "--workers", "2"]) == 0  # the lock went with its holder
    assert main(["scan", str(export), "--out", str(out), "--workers", "2"]) == 0  # forked readers hold no copy


def test_two_scans_started_together_both_end_cleanly_and_the_cache_parses(export, tmp_path):
    out = tmp_path / "scan" / "index.csv"
    env = {**os.environ, "RADPIPE_SECRET_FILE": str(tmp_path / "secret.key")}
    command = [sys.executable, "-m", "pipeline", "scan", str(export), "--out", str(out), "--workers", "2"]
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(timeout=120), r.stderr.read()) for r in runs]
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2])
    assert all("Traceback" not in err for _, err in results)
    assert all("another scan is writing" in err for code, err in results if code == 2)
    json.loads(output_paths(out)["cache"].read_text())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_links_fifos_and_loops_are_listed_with_their_reason(export, tmp_path):
    work = tmp_path / "export"
    shutil.copytree(export, work)
    outside = tmp_path / "outside"
    write_series(outside, SeriesSpec(n_slices=4, rows=8, cols=8, seed=9))  # a series found only through the link
    odd = work / "odd"
    odd.mkdir()
    (odd / "a").symlink_to(odd / "b")
    (odd / "b").symlink_to(odd / "a")
    (odd / "self").symlink_to(odd / "self")
    (odd / "gone").symlink_to(tmp_path / "missing.dcm")
    (odd / "out").symlink_to(outside)
    (odd / "out_file").symlink_to(next(outside.iterdir()))
    (odd / "inside").symlink_to(work / "README.txt")
    os.mkfifo(odd / "pipe")
    ps = Pseudonymiser(SECRET)
    plain = scan_export(export, tmp_path / "plain" / "index.csv", workers=1, pseudonymiser=ps)
    summary = scan_export(work, tmp_path / "scan" / "index.csv", workers=2, pseudonymiser=ps)
    reasons = _skipped(summary.index_csv)
    assert {k: v for k, v in reasons.items() if k.startswith("odd/")} == {
        "odd/a": "symlink loop", "odd/b": "symlink loop", "odd/self": "symlink loop", "odd/gone": "dangling link",
        "odd/out": "link out of the export", "odd/out_file": "link out of the export",
        "odd/pipe": "not a regular file", "odd/inside": "not DICOM",
    }
    assert summary.n_series == plain.n_series
    followed = scan_export(work, tmp_path / "follow" / "index.csv", workers=1, pseudonymiser=ps, follow_links=True)
    assert followed.n_indexed_files == summary.n_indexed_files + 4 and followed.n_series == summary.n_series + 1
    assert "odd/out" not in _skipped(followed.index_csv)


def test_an_unchanged_rescan_reads_and_writes_nothing(export, tmp_path):
    work = tmp_path / "export"
    shutil.copytree(export, work)
    ps = Pseudonymiser(SECRET)
    first = scan_export(work, tmp_path / "index.csv", workers=1, pseudonymiser=ps)
    paths = output_paths(first.index_csv)
    refs = sorted(paths["series"].glob("*.series.json"))
    outputs = [paths["index"], paths["skipped"], paths["cache"], *refs]
    before = {p.name: p.stat().st_mtime_ns for p in outputs}
    text = paths["index"].read_bytes()
    time.sleep(0.01)
    again = scan_export(work, tmp_path / "index.csv", workers=2, pseudonymiser=ps)
    assert (again.n_read, again.n_cached, again.n_series, again.status) == (0, first.n_files, first.n_series,
                                                                           first.status)
    assert refs and {p.name: p.stat().st_mtime_ns for p in outputs} == before  # nothing rewritten
    os.utime(work / "README.txt")  # one file touched: the cache path, which rewrites no unchanged reference
    third = scan_export(work, tmp_path / "index.csv", workers=2, pseudonymiser=ps)
    assert third.n_read == 1 and {p.name: p.stat().st_mtime_ns for p in refs} == {p.name: before[p.name] for p in refs}
    assert paths["index"].read_bytes() == text
    paths["skipped"].write_text("edited by hand\n")  # an output changed: the full path writes it again
    fourth = scan_export(work, tmp_path / "index.csv", workers=1, pseudonymiser=ps)
    assert fourth.n_read == 0 and fourth.n_cached == first.n_files and "edited" not in paths["skipped"].read_text()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_scan_leaves_no_reader_no_spool_and_its_cache_is_reused(tmp_path, monkeypatch):
    export = tmp_path / "export"
    for k in range(40):  # many small files: the scan runs long enough to be killed in the middle
        folder = export / f"d{k:02d}"
        folder.mkdir(parents=True)
        for i in range(400):
            (folder / f"f{i:03d}.bin").write_bytes(os.urandom(200))
    out = tmp_path / "scan" / "index.csv"
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "scan", str(export), "--out", str(out), "--workers",
                            "2"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    partial = []
    while time.monotonic() < deadline and run.poll() is None:
        partial = [p for p in out.parent.glob(f"{TEMP_PREFIX}*.index.scan-cache.json") if p.stat().st_size > 20_000]
        if partial:
            break
        time.sleep(0.005)
    if run.poll() is not None:
        pytest.skip("the scan finished before it could be killed")
    readers = _children(run.pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    time.sleep(1.0)
    assert readers and not [r for r in readers if Path(f"/proc/{r}").exists()
                            and "Z" not in Path(f"/proc/{r}/stat").read_text().split()[2]]
    assert [p for p in out.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]  # what the kill left
    again = scan_export(export, out, workers=2, pseudonymiser=Pseudonymiser(keep_identifiers=False))
    assert 0 < again.n_read < again.n_files and again.n_cached > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert not list(Path("/tmp").glob("radpipe-scan-*.spool"))


def test_the_cache_is_owner_only_and_holds_no_date_or_identifier(export, tmp_path):
    scan_export(export, tmp_path / "index.csv", workers=2, pseudonymiser=Pseudonymiser(SECRET))
    cache = output_paths(tmp_path / "index.csv")["cache"]
    assert cache.stat().st_mode & 0o777 == 0o600
    entries = json.loads(cache.read_text())["entries"]
    headers = [e["header"] for e in entries.values() if e["header"]]
    assert headers and not any(k in h for h in headers for k in ("study_date", "patient_name", "patient_birth_date"))
