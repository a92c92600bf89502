"""``radpipe pull`` against a real Orthanc (DICOMweb and DIMSE): layout, resume, failures by row, bad input."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import pydicom
import pytest
from orthanc_server import AET, PASSWORD, USER, OrthancServer, free_port

from pipeline.cli import main
from pipeline.demo.synthetic_dicom import series_args, write_series
from pipeline.pseudonym import Pseudonymiser

ACCESSIONS = {"ACC-PULL-1": ("CT", "MR"), "ACC-PULL-2": ("CT",)}


@pytest.fixture(scope="module")
def pacs(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Orthanc holding two studies (CT + MR, CT only) of two patients; returns what was stored."""
    root = tmp_path_factory.mktemp("export")
    stored: dict[str, dict[str, list[str]]] = {}
    for i, (accession, modalities) in enumerate(ACCESSIONS.items()):
        patient = {"PatientID": f"PID-PULL-{i}", "PatientName": f"Doe^Pull{i}", "AccessionNumber": accession}
        for j, modality in enumerate(modalities):
            paths = write_series(root / f"{i}-{j}", *series_args(modality=modality, rows=16, cols=12, n_slices=4 + j,
                                                                  patient=patient, seed=10 * i + 1,
                                                                  series_number=j + 1))
            orthanc.upload(paths)
            headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
            stored.setdefault(accession, {})[headers[0].SeriesInstanceUID] = sorted(h.SOPInstanceUID for h in headers)
            stored[accession]["study"] = [headers[0].StudyInstanceUID]
    return stored


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("Accession Number,label\nACC-PULL-1,1\n\nACC-PULL-2,0\nACC-NOT-THERE,1\n,0\n", encoding="utf-8")
    return path


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADPIPE_PACS_USER", USER)
    monkeypatch.setenv("RADPIPE_PACS_PASSWORD", PASSWORD)


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.dcm"))


def test_dicomweb_pull_by_accession_lays_out_keys_lists_failures_and_resumes(pacs, orthanc, sheet, tmp_path, capsys,
                                                                              credentials):
    out = tmp_path / "export"
    rc = main(["pull", orthanc.dicomweb_url, "--out", str(out), "--accessions", str(sheet), "--key",
               "accession_number", "--modality", "CT", "--workers", "2"])
    printed = capsys.readouterr()
    assert rc == 1  # two rows failed
    files = _files(out)
    assert len(files) == 4 + 4  # the two CT series (4 slices each); the MR series (5 slices) left out
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CT"
        assert path.name == f"{Pseudonymiser().key(ds.SOPInstanceUID, 'instance')}.dcm"
        assert path.parent.name == Pseudonymiser().key(ds.SeriesInstanceUID, "series")
        assert ds.pixel_array.shape == (16, 12)
    text = printed.out + printed.err + "".join(files)
    for identifier in ("ACC-PULL", "ACC-NOT-THERE", "PID-PULL", "Doe^Pull", USER, PASSWORD):
        assert identifier not in text
    failures = list(csv.reader((out.parent / "export.pull-failures.csv").open()))
    assert failures == [["target", "reason"], ["row 4", "matched no study on the PACS"], ["row 5", "empty key cell"]]  # blank line not counted
    assert "row 4: matched no study" in printed.out

    victim = out / files[3]
    victim.unlink()
    assert main(["pull", orthanc.dicomweb_url, "--out", str(out), "--accessions", str(sheet), "--modality", "CT"]) == 1
    again = capsys.readouterr().out
    assert "pulled 1 instance(s)" in again and "7 already on disk" in again
    assert _files(out) == files


def test_dimse_pull_gives_the_same_export_as_dicomweb(pacs, orthanc, sheet, tmp_path, capsys, caplog, credentials):
    caplog.set_level(logging.DEBUG)  # radpipe -v: no library logs a query or URL holding an accession number
    web, dimse = tmp_path / "web", tmp_path / "dimse"
    assert main(["pull", orthanc.dicomweb_url, "--out", str(web), "--accessions", str(sheet)]) == 1
    assert main(["pull", orthanc.dimse_url, "--aet", "RADPIPE", "--out", str(dimse), "--accessions", str(sheet)]) == 1
    assert _files(dimse) == _files(web)
    assert len(_files(web)) == 4 + 5 + 4  # CT + MR of the first study, CT of the second
    one = _files(web)[0]
    assert pydicom.dcmread(web / one).PixelData == pydicom.dcmread(dimse / one).PixelData
    assert "row 4: matched no study" in capsys.readouterr().out
    assert caplog.records and not [r for r in caplog.records if "ACC-" in r.getMessage() or "PID-" in r.getMessage()]


def test_pull_by_study_uid_then_scan_reads_the_export(pacs, orthanc, tmp_path, capsys, credentials):
    out = tmp_path / "export"
    study = pacs["ACC-PULL-2"]["study"][0]
    assert main(["pull", orthanc.dimse_url, "--out", str(out), "--study", study]) == 0
    assert len(_files(out)) == 4
    assert main(["scan", str(out), "--out", str(tmp_path / "index.csv"), "--workers", "1"]) == 0
    rows = list(csv.DictReader((tmp_path / "index.csv").open()))
    assert len(rows) == 1 and rows[0]["study_key"] == Pseudonymiser().key(study, "study")


@pytest.mark.parametrize("case, expected", [
    ("password", "HTTP 401 (authentication failed"),
    ("base-url", "HTTP 404"),
    ("unreachable", "unreachable"),
    ("called-aet", "rejected the association"),
    ("dimse-port", "unreachable"),
])
def test_bad_pacs_input_is_one_line_and_exit_2(pacs, orthanc, sheet, tmp_path, capsys, monkeypatch, case,
                                               expected):
    monkeypatch.setenv("RADPIPE_PACS_USER", USER)
    monkeypatch.setenv("RADPIPE_PACS_PASSWORD", "wrong" if case == "password" else PASSWORD)
    source = {"password": orthanc.dicomweb_url, "base-url": f"{orthanc.url}/not-dicom-web",
              "unreachable": f"http://127.0.0.1:{free_port()}/dicom-web",
              "called-aet": f"dimse://NOT{AET}@127.0.0.1:{orthanc.dicom_port}",
              "dimse-port": f"dimse://{AET}@127.0.0.1:{free_port()}"}[case]
    rc = main(["pull", source, "--out", str(tmp_path / "x"), "--accessions", str(sheet), "--timeout", "5"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "radpipe pull: error" in line]
    assert rc == 2 and len(lines) == 1 and expected in lines[0], err
    assert "ACC-" not in err and "wrong" not in err


def test_credentials_file_and_a_source_with_a_password(tmp_path, orthanc, sheet, capsys, monkeypatch):
    for name in ("RADPIPE_PACS_USER", "RADPIPE_PACS_PASSWORD", "RADPIPE_PACS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    ini = tmp_path / "pacs.ini"
    ini.write_text(f"[pacs]\nuser = {USER}\npassword = {PASSWORD}\n")
    assert main(["pull", orthanc.dicomweb_url, "--out", str(tmp_path / "a"), "--study", "1.2.3.4",
                 "--credentials", str(ini)]) == 1  # reached the server: the study is simply not there
    assert "matched no study" in capsys.readouterr().out
    rc = main(["pull", f"http://{USER}:{PASSWORD}@127.0.0.1:{orthanc.http_port}/dicom-web", "--out",
               str(tmp_path / "b"), "--study", "1.2.3.4"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds a user or password" in err and PASSWORD not in err
