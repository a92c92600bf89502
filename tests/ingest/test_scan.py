from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

import pipeline.ingest.scan as scan_module
import pipeline.ingest.read as scan_read
from pipeline.cli import main
from pipeline.pseudonym import Pseudonymiser
from pipeline.ingest.scan import output_paths, scan_export
from pipeline.demo.synthetic_dicom import SeriesSpec, write_series
from pipeline.demo.synthetic_export import SITES, write_export

N_PATIENTS = 6
SECRET = b"0123456789abcdef0123456789abcdef-test"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_export(tmp_path_factory.mktemp("ex"), n_patients=N_PATIENTS, seed=11, slices=(16, 18))


@pytest.fixture(scope="module")
def scanned(export, tmp_path_factory):
    out = tmp_path_factory.mktemp("scan") / "index.csv"
    summary = scan_export(export.export_dir, out, workers=1, pseudonymiser=Pseudonymiser(SECRET))
    return summary


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _output_files(index_csv: Path) -> list[Path]:
    paths = output_paths(index_csv)
    return [paths["index"], paths["skipped"], paths["cache"], *sorted(paths["series"].glob("*"))]


def _leaks(texts: dict[str, str], export) -> list[str]:
    found = []
    for value in export.phi_values:
        if value.isdigit():  # birth dates: whole tokens only (UIDs are long digit strings)
            pattern = re.compile(rf"(?<!\d){value}(?!\d)")
        else:
            pattern = re.compile(re.escape(value), re.IGNORECASE)
        found += [f"{value} in {where}" for where, text in texts.items() if pattern.search(text)]
    return found


def test_every_file_is_accounted_for(export, scanned):
    index, skipped = _rows(scanned.index_csv), _rows(scanned.skipped_csv)
    walked = len(_all_files(export.export_dir))
    assert scanned.n_files == walked == export.n_files
    assert sum(int(r["n_files"]) for r in index) + len(skipped) == walked
    assert scanned.n_series == len(index) == export.n_image_series == 2 * N_PATIENTS
    assert scanned.n_read == walked and scanned.n_cached == 0


def test_skipped_files_have_their_reason(export, scanned):
    skipped = {r["path"]: r for r in _rows(scanned.skipped_csv)}
    rel = lambda p: p.relative_to(export.export_dir).as_posix()  # noqa: E731
    assert skipped[rel(export.truncated_file)]["reason"] == "damaged or truncated"
    assert skipped["README.txt"]["reason"] == "not DICOM"
    assert skipped["DICOMDIR"]["reason"] == "dicomdir"
    reports = [r for r in skipped.values() if r["reason"] == "non-image object"]
    assert len(reports) == export.n_sr and all("structured report" in r["detail"] for r in reports)
    assert len(skipped) == export.n_sr + 3
    assert scanned.skipped == {"damaged or truncated": 1, "not DICOM": 1, "dicomdir": 1,
                               **({"non-image object": export.n_sr} if export.n_sr else {})}


def test_index_rows_describe_the_series(export, scanned):
    index = _rows(scanned.index_csv)
    ps = Pseudonymiser(SECRET)
    by_site = {s.institution: s for s in SITES}
    cases = {ps.key(c["series_uid"], "series"): c for c in export.cases}
    axial = [r for r in index if r["orientation"] == "axial"]
    localizers = [r for r in index if r["orientation"] == "coronal"]
    assert len(axial) == len(localizers) == N_PATIENTS
    for row in axial:
        site = by_site[row["institution"]]
        case = cases[row["series_key"]]
        assert (row["status"], row["problems"]) == ("ok", "")
        assert row["spacing"] == f"{site.pixel_spacing:.3f}x{site.pixel_spacing:.3f}x{site.slice_thickness:.3f}"
        assert int(row["n_slices"]) == int(row["n_files"]) == int(row["n_frames"]) == case["n_slices"]
        assert (row["manufacturer"], row["model"], row["modality"]) == (site.manufacturer, site.model, "CT")
        assert row["accession_key"] == ps.key(case["accession_number"], "accession")
        assert row["patient_key"].startswith("P-") and row["study_key"].startswith("ST-")
        assert row["sex"] in ("F", "M") and 18 <= int(row["age"]) < 90
        assert (row["rows"], row["columns"], row["n_timepoints"]) == ("64", "64", "1")
        assert row["transfer_syntax"] == "Explicit VR Little Endian"
    for row in localizers:
        assert row["status"] == "warning" and "localizer" in row["problems"]
        assert row["n_slices"] == "2"
    assert {r["patient_key"] for r in localizers} == {r["patient_key"] for r in axial}


def test_series_refs_list_exactly_the_series_files(export, scanned):
    from transforms.dicom.reference import read_series_ref
    from transforms.readers import RadpipeReader

    index = _rows(scanned.index_csv)
    by_uid = {info.uid: info for info in scanned.series}
    ps = Pseudonymiser(SECRET)
    by_key = {ps.key(uid, "series"): info for uid, info in by_uid.items()}
    for row in index:
        ref = scanned.index_csv.parent / row["series_ref"]
        files = read_series_ref(ref)
        assert [str(p.resolve()) for p in files] == [str(Path(f).resolve()) for f in by_key[row["series_key"]].files]
        assert len(files) == int(row["n_files"])
    row = next(r for r in index if r["orientation"] == "axial")
    image = RadpipeReader().read(str(scanned.index_csv.parent / row["series_ref"]))
    array, meta = RadpipeReader().get_data(image)
    assert array.shape == (64, 64, int(row["n_slices"]))
    assert -1100 <= array.min() and array.max() < 1500


def test_rescan_reads_only_new_and_changed_files(export, tmp_path, monkeypatch):
    work = tmp_path / "export"
    shutil.copytree(export.export_dir, work)
    ps = Pseudonymiser(SECRET)
    reads = []
    real = scan_read.read_fields_fast
    monkeypatch.setattr(scan_read, "read_fields_fast", lambda p, memo=None: (reads.append(p), real(p, memo))[1])
    first = scan_export(work, tmp_path / "out" / "index.csv", workers=1, pseudonymiser=ps)
    assert len(reads) == first.n_read == first.n_files
    new = write_series(work / "NEW1" / "NEW2", SeriesSpec(rows=32, cols=32, n_slices=5, seed=99, series_number=7,
                                                          patient={"PatientID": "NEWPAT01"}))
    changed = next(p for p in _all_files(work) if p.parent.name != "NEW2" and p.name != "README.txt")
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    (work / "README.txt").unlink()
    reads.clear()
    again = scan_export(work, tmp_path / "out" / "index.csv", workers=1, pseudonymiser=ps)
    assert sorted(reads) == sorted(str(p.resolve()) for p in [*new, changed])
    assert (again.n_read, again.n_cached) == (len(new) + 1, first.n_files - 2)
    assert again.n_series == first.n_series + 1
    fresh = scan_export(work, tmp_path / "fresh" / "index.csv", workers=1, pseudonymiser=ps, use_cache=False)
    assert again.index_csv.read_text() == fresh.index_csv.read_text()
    assert again.skipped_csv.read_text() == fresh.skipped_csv.read_text()
    assert sorted(p.name for p in output_paths(again.index_csv)["series"].iterdir()) == sorted(
        p.name for p in output_paths(fresh.index_csv)["series"].iterdir())


def test_parallel_scan_gives_the_same_index(export, scanned, tmp_path):
    parallel = scan_export(export.export_dir, tmp_path / "index.csv", workers=2, pseudonymiser=Pseudonymiser(SECRET))
    assert parallel.index_csv.read_text() == scanned.index_csv.read_text()
    assert parallel.skipped_csv.read_text() == scanned.skipped_csv.read_text()

    def refs(summary):
        folder = output_paths(summary.index_csv)["series"]
        return {p.name: json.loads(p.read_text()) for p in folder.glob("*.series.json")}

    # series references built in the workers (series a chunk holds whole) and in the main process alike
    assert refs(parallel) == refs(scanned) and len(refs(parallel)) == parallel.n_series
    assert parallel.series == scanned.series


def test_series_cut_across_chunks_get_their_whole_reference(export, scanned, tmp_path, monkeypatch):
    """Readers write references of the series they see whole; a series cut by chunks is rewritten complete."""
    monkeypatch.setattr(scan_read, "_units", lambda items: [*range(0, len(items), 7), len(items)])
    described: list[int] = []
    real = scan_read.assemble_entries

    def counting(entries, assembled=(), found=None):
        series = real(entries, assembled, found)
        described.append(len(found))
        return series

    monkeypatch.setattr(scan_module, "assemble_entries", counting)
    cut = scan_export(export.export_dir, tmp_path / "index.csv", workers=2, pseudonymiser=Pseudonymiser(SECRET))
    assert described[0] < cut.n_series  # some series were cut, and assembled again in the main process
    assert cut.index_csv.read_text() == scanned.index_csv.read_text()
    folder = output_paths(cut.index_csv)["series"]
    refs = {p.name: json.loads(p.read_text()) for p in folder.iterdir()}
    expected = {p.name: json.loads(p.read_text()) for p in output_paths(scanned.index_csv)["series"].iterdir()}
    assert refs == expected  # no partial reference left behind, none missing


def test_files_a_dying_reader_claimed_are_read_by_the_main_process(export, scanned, tmp_path, monkeypatch):
    """A child reader killed after claiming files loses nothing: this process reads what it never sent back."""
    def dying(root, items, starts, readers, state, lock, conn, *rest):
        assert scan_read._claim(state, lock, starts, readers, from_back=False) is not None
        os._exit(9)  # as if killed: nothing sent, no clean-up

    monkeypatch.setattr(scan_read, "_child_reads", dying)
    survived = scan_export(export.export_dir, tmp_path / "index.csv", workers=2, pseudonymiser=Pseudonymiser(SECRET))
    assert survived.index_csv.read_text() == scanned.index_csv.read_text()
    assert survived.skipped_csv.read_text() == scanned.skipped_csv.read_text()
    assert survived.n_read == survived.n_files > 64  # enough files for the parallel path


def test_a_reader_dying_midway_loses_nothing_and_leaves_no_spool(export, scanned, tmp_path, monkeypatch):
    """Runs a child announced before it died are kept, the rest are read here; its spool file is removed."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    parent, calls = os.getpid(), []
    real = scan_read._read_chunk

    def read_then_die(*args, **kwargs):
        calls.append(1)
        if os.getpid() != parent and len(calls) > 1:
            os._exit(9)  # killed in its second run: the first was announced
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_read, "_read_chunk", read_then_die)
    monkeypatch.setattr(scan_read, "_SMALLEST_CLAIM", 8)
    survived = scan_export(export.export_dir, tmp_path / "index.csv", workers=2, pseudonymiser=Pseudonymiser(SECRET))
    assert survived.index_csv.read_text() == scanned.index_csv.read_text()
    assert survived.skipped_csv.read_text() == scanned.skipped_csv.read_text()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_no_identifier_in_clear_in_any_output_or_log(export, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    out = tmp_path / "scan" / "index.csv"
    with caplog.at_level(logging.DEBUG, logger="radpipe"):
        assert main(["scan", str(export.export_dir), "--out", str(out), "--workers", "2"]) == 0
        assert main(["scan", str(export.export_dir), "--out", str(out), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "series: 12" in captured.out and "0 headers read" in captured.out
    texts = {str(p): p.read_text(encoding="utf-8") for p in _output_files(out)}
    texts["stdout"], texts["stderr"], texts["log"] = captured.out, captured.err, caplog.text
    assert len(texts) == 3 + 2 * N_PATIENTS + 3
    assert _leaks(texts, export) == []
    cache = json.loads(output_paths(out)["cache"].read_text())
    header = next(e["header"] for e in cache["entries"].values() if e["header"])
    assert header["patient_id"].startswith("P-") and header["accession_number"].startswith("A-")
    assert "patient_name" not in header and "patient_birth_date" not in header


def test_keep_identifiers_is_loud_and_the_leak_check_sees_it(export, tmp_path, caplog):
    out = tmp_path / "index.csv"
    with caplog.at_level(logging.WARNING, logger="radpipe"):
        scan_export(export.export_dir, out, workers=1, keep_identifiers=True)
    assert "IN CLEAR" in caplog.text
    texts = {str(p): p.read_text(encoding="utf-8") for p in _output_files(out)}
    leaks = _leaks(texts, export)
    assert any(export.phi[0]["PatientID"] in leak for leak in leaks)
    assert any(export.phi[0]["AccessionNumber"] in leak for leak in leaks)


def test_cli_missing_folder_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    assert main(["scan", str(tmp_path / "nope"), "--out", str(tmp_path / "i.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "nope" in err
    assert not (tmp_path / "i.csv").exists() and not (tmp_path / "i.series").exists()


def test_pydicom_sample_folder_is_accounted_for_alike_by_one_and_two_workers(tmp_path):
    """pydicom's own test files (odd syntaxes, damaged files, copies of instances, DICOMDIRs, reports): every file
    is in a series or skipped with its reason, each row has a reference of its own, workers change nothing."""
    import warnings

    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    ps = Pseudonymiser(SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the samples are made to trigger pydicom's warnings
        one = scan_export(folder, tmp_path / "one" / "index.csv", workers=1, pseudonymiser=ps)
        two = scan_export(folder, tmp_path / "two" / "index.csv", workers=2, pseudonymiser=ps)
    index, skipped = _rows(one.index_csv), _rows(one.skipped_csv)
    walked = [p for p in folder.rglob("*") if p.is_file()]
    assert one.n_files == len(walked) > 64 and sum(int(r["n_files"]) for r in index) + len(skipped) == len(walked)
    assert all(r["reason"] for r in skipped) and len({r["series_ref"] for r in index}) == len(index)
    assert two.index_csv.read_text() == one.index_csv.read_text()
    assert two.skipped_csv.read_text() == one.skipped_csv.read_text()
    refs = {p.name: p.read_text() for p in output_paths(one.index_csv)["series"].iterdir()}
    assert refs == {p.name: p.read_text() for p in output_paths(two.index_csv)["series"].iterdir()}
    assert len(refs) == len(index)
