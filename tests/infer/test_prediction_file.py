from __future__ import annotations

import json

import pytest

from pipeline.infer.prediction_file import (
    PredictionFileError,
    ResumableCsvWriter,
    done_marker,
    finalize,
    in_shard,
    merge_parts,
    parse_shard,
    part_path,
    read_rows,
    shard_from_env,
    sibling,
    write_skipped,
)

COLUMNS = ["series_id", "pred", "prob_a", "status", "error"]


def _row(i: int, status: str = "ok") -> dict[str, str]:
    return {"series_id": f"id-{i:02d}", "pred": "a", "prob_a": f"0.{i:02d}", "status": status, "error": ""}


def test_writer_appends_and_resumes(tmp_path):
    out = tmp_path / "p.csv"
    with ResumableCsvWriter(out, COLUMNS) as w:
        w.write_rows([_row(2), _row(1)])
    with ResumableCsvWriter(out, COLUMNS) as w:
        assert w.done == {"id-01", "id-02"}
        w.write_rows([_row(3)])
    columns, rows, dropped = read_rows(out)
    assert columns == COLUMNS and dropped == 0
    assert [r["series_id"] for r in rows] == ["id-02", "id-01", "id-03"]


def test_half_written_last_line_is_repaired(tmp_path):
    out = tmp_path / "p.csv"
    with ResumableCsvWriter(out, COLUMNS) as w:
        w.write_rows([_row(1), _row(2)])
    with open(out, "a") as f:
        f.write("id-03,a,0.0")  # killed mid-write: no newline, too few fields
    with ResumableCsvWriter(out, COLUMNS) as w:
        assert w.done == {"id-01", "id-02"}
        w.write_rows([_row(3)])
    _, rows, dropped = read_rows(out)
    assert dropped == 0
    assert [r["series_id"] for r in rows] == ["id-01", "id-02", "id-03"]
    assert rows[2]["prob_a"] == "0.03"


def test_truncated_header_and_nul_bytes(tmp_path):
    out = tmp_path / "p.csv"
    out.write_bytes(b"series_id,pr")
    with ResumableCsvWriter(out, COLUMNS) as w:
        assert w.done == set()
    assert out.read_text() == ",".join(COLUMNS) + "\n"
    with open(out, "ab") as f:
        f.write(b"id-01,a,0.01,ok,\n\x00\x00\x00")
    with ResumableCsvWriter(out, COLUMNS) as w:
        assert w.done == {"id-01"}


def test_other_columns_refused(tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("series_id,pred,prob_b,status,error\n")
    with pytest.raises(PredictionFileError, match="another run"):
        ResumableCsvWriter(out, COLUMNS)


def test_finalize_sorts_dedupes_and_marks_done(tmp_path):
    out = tmp_path / "p.csv"
    out.write_text(",".join(COLUMNS) + "\nid-02,a,0.5,error,bad\nid-01,a,0.1,ok,\nid-02,a,0.5,error,bad\n")
    assert finalize(out, summary={"input": "x"}) == 2
    _, rows, _ = read_rows(out)
    assert [r["series_id"] for r in rows] == ["id-01", "id-02"]
    marker = json.loads(done_marker(out).read_text())
    assert marker["rows"] == 2 and marker["status_counts"] == {"ok": 1, "error": 1} and marker["input"] == "x"
    ResumableCsvWriter(out, COLUMNS).close()  # opening again means running again: not done any more
    assert not done_marker(out).exists()


def test_shards_partition_ids():
    ids = [f"SE-{i}" for i in range(200)]
    owners = [[s for s in range(3) if in_shard(i, s, 3)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}
    assert all(in_shard(i, 0, 1) for i in ids)


def test_parse_shard_and_env():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(PredictionFileError, match="0 <= i < n"):
            parse_shard(bad)
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert part_path("/x/p.csv", 1, 4).name == "p.part-1-of-4.csv"
    assert sibling("/x/p.part-1-of-4.csv", "skipped").name == "p.part-1-of-4.skipped.csv"


def _write_part(out, i, n, rows, finished=True):
    part = part_path(out, i, n)
    with ResumableCsvWriter(part, COLUMNS) as w:
        w.write_rows(rows)
    write_skipped(sibling(part, "skipped"), ["file", "reason"], [{"file": "README.txt", "reason": "not DICOM"}])
    if finished:
        finalize(part)
    return part


def test_merge_equals_unsharded(tmp_path):
    rows = [_row(i, "error" if i % 5 == 0 else "ok") for i in range(30)]
    full = tmp_path / "full.csv"
    with ResumableCsvWriter(full, COLUMNS) as w:
        w.write_rows(rows)
    finalize(full)
    write_skipped(sibling(full, "skipped"), ["file", "reason"], [{"file": "README.txt", "reason": "not DICOM"}])
    out = tmp_path / "p.csv"
    parts = [_write_part(out, s, 3, [r for r in rows if in_shard(r["series_id"], s, 3)]) for s in range(3)]
    assert merge_parts(parts, out) == 30
    assert out.read_bytes() == full.read_bytes()
    assert sibling(out, "skipped").read_bytes() == sibling(full, "skipped").read_bytes()


def test_merge_refuses_missing_or_unfinished_parts(tmp_path):
    out = tmp_path / "p.csv"
    p0 = _write_part(out, 0, 3, [_row(1)])
    p1 = _write_part(out, 1, 3, [_row(2)], finished=False)
    with pytest.raises(PredictionFileError) as e:
        merge_parts([p0, p1], out)
    assert "unfinished" in str(e.value) and "shard(s) [2] of 3 missing" in str(e.value)
    p1 = _write_part(out, 1, 3, [_row(1)])
    p2 = _write_part(out, 2, 3, [])
    with pytest.raises(PredictionFileError, match="in two parts"):
        merge_parts([p0, p1, p2], out)
    assert not out.exists()


def test_resuming_another_jobs_file_is_refused_and_stale_rows_are_dropped(tmp_path):
    out = tmp_path / "p.csv"
    job = {"run": "/runs/a", "checkpoint_sha1": "abc", "input": "/scans", "shard": None}
    with ResumableCsvWriter(out, COLUMNS, job=job) as w:
        w.write_rows([_row(1), _row(2)])
    ResumableCsvWriter(out, COLUMNS, job=job).close()
    with pytest.raises(PredictionFileError, match="checkpoint_sha1: 'abc' -> 'def'"):
        ResumableCsvWriter(out, COLUMNS, job={**job, "checkpoint_sha1": "def"})
    assert finalize(out, keep={"id-02", "id-03"}) == 1
    assert [r["series_id"] for r in read_rows(out)[1]] == ["id-02"]


def test_merge_refuses_parts_of_different_jobs(tmp_path):
    out = tmp_path / "p.csv"
    parts = []
    for i, checkpoint in enumerate(["abc", "def"]):
        part = part_path(out, i, 2)
        with ResumableCsvWriter(part, COLUMNS, job={"checkpoint_sha1": checkpoint, "shard": [i, 2]}) as w:
            w.write_rows([_row(i)])
        finalize(part)
        parts.append(part)
    with pytest.raises(PredictionFileError, match="different runs, checkpoints or inputs"):
        merge_parts(parts, out)
