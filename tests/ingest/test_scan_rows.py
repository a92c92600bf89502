"""Tests of pipeline.ingest.rows: what the scan writes per series."""
from __future__ import annotations

import json
import multiprocessing

from pipeline.pseudonym import Pseudonymiser
from pipeline.files import write_atomic
from pipeline.ingest.rows import SeriesWriter, series_ref_text
from pipeline.demo.synthetic_dicom import SeriesSpec, write_series
from transforms.dicom.headers import read_header
from transforms.dicom.series import assemble_series

SECRET = b"0123456789abcdef0123456789abcdef-test"


def _write_many(path: str, text: str, n: int) -> None:
    from pathlib import Path

    for _ in range(n):
        write_atomic(Path(path), text, durable=False)


def test_two_processes_writing_one_reference_at_once_leave_a_whole_file(tmp_path):
    """Two scan readers may each hold part of one series and write its reference at the same moment."""
    target = tmp_path / "s.series.json"
    texts = [json.dumps({"writer": k, "files": [f"f{i}" for i in range(500)]}) for k in range(2)]
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_many, args=(str(target), text, 300)) for text in texts]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["s.series.json"]  # no temporary file left


def test_series_writer_writes_the_reference_and_gives_the_index_row(tmp_path):
    paths = write_series(tmp_path / "export" / "ct", SeriesSpec(rows=8, cols=8, n_slices=5, seed=4, series_number=3))
    (info,) = assemble_series(read_header(p) for p in paths)
    refs = tmp_path / "out" / "index.series"
    refs.mkdir(parents=True)
    ps = Pseudonymiser(SECRET)
    name, row = SeriesWriter(ps, str(refs), "index.series")(info)
    assert name == f"{ps.key(info.uid, 'series')}.series.json"
    ref = json.loads((refs / name).read_text())
    assert ref["files"] == [f"../../export/ct/{p.name}" for p in map(type(tmp_path), info.files)]
    assert ref["meta"]["shape"] == [8, 8, 5] and ref["part"] == ""
    assert json.loads(series_ref_text(info, str(refs))) == ref
    assert row["series_ref"] == f"index.series/{name}" and row["n_files"] == 5 and row["n_slices"] == 5
    assert row["series_number"] == 3 and row["status"] == "ok" and row["series_key"] == ps.key(info.uid, "series")
