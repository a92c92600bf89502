"""``radpipe pull --move`` (DIMSE C-MOVE to radpipe's own storage SCP) against a real Orthanc."""
from __future__ import annotations

import socket
from pathlib import Path

import pydicom
import pytest
from orthanc_server import PASSWORD, USER, free_port, running_orthanc

from pipeline.cli import main
from pipeline.demo.synthetic_dicom import series_args, write_series

OURS = "RADPIPE"
ACCESSIONS = {"ACC-MOVE-1": ("CT", "MR"), "ACC-MOVE-2": ("CT",)}


@pytest.fixture(scope="module")
def moving(tmp_path_factory: pytest.TempPathFactory):
    """Orthanc that knows our AE title at a loopback port, holding two studies; yields (server, port)."""
    port = free_port()
    nodes = {"radpipe": [OURS, "127.0.0.1", port], "elsewhere": ["ELSEWHERE", "127.0.0.1", free_port()]}
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), nodes) as server:
        root = tmp_path_factory.mktemp("export")
        for i, (accession, modalities) in enumerate(ACCESSIONS.items()):
            patient = {"PatientID": f"PID-MOVE-{i}", "PatientName": f"Doe^Move{i}", "AccessionNumber": accession}
            for j, modality in enumerate(modalities):
                server.upload(write_series(root / f"{i}-{j}", *series_args(
                    modality=modality, rows=16, cols=12, n_slices=4 + j, patient=patient, seed=10 * i + 1,
                    series_number=j + 1)))
        yield server, port


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("accession_number,label\nACC-MOVE-1,1\nACC-MOVE-2,0\nACC-NOT-THERE,1\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path_factory.getbasetemp() / "secret.key"))
    monkeypatch.setenv("RADPIPE_PACS_USER", USER)
    monkeypatch.setenv("RADPIPE_PACS_PASSWORD", PASSWORD)


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.dcm"))


def _move(server, port: int, out: Path, sheet: Path, aet: str = OURS) -> list[str]:
    return ["pull", server.dimse_url, "--aet", aet, "--move", "--move-port", str(port), "--move-host", "127.0.0.1",
            "--out", str(out), "--accessions", str(sheet), "--timeout", "10"]


def test_c_move_gives_the_same_export_as_dicomweb_and_resumes(moving, sheet, tmp_path, capsys):
    server, port = moving
    web, moved = tmp_path / "web", tmp_path / "moved"
    assert main(["pull", server.dicomweb_url, "--out", str(web), "--accessions", str(sheet)]) == 1
    assert main(_move(server, port, moved, sheet)) == 1  # row 4 matches no study
    printed = capsys.readouterr().out
    assert "row 4: matched no study" in printed and "pulled 13 instance(s)" in printed
    files = _files(moved)
    assert files == _files(web) and len(files) == 4 + 5 + 4
    for name in files:
        a, b = pydicom.dcmread(web / name), pydicom.dcmread(moved / name)
        assert a == b  # every element of the dataset, pixel data included (the file meta is each transport's own)
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
    assert "ACC-MOVE" not in printed and "PID-MOVE" not in printed

    (moved / files[5]).unlink()
    assert main(_move(server, port, moved, sheet)) == 1
    again = capsys.readouterr().out
    assert "pulled 1 instance(s)" in again and "12 already on disk" in again
    assert _files(moved) == files


def test_a_destination_the_pacs_does_not_know_is_listed_per_row(moving, sheet, tmp_path, capsys):
    server, port = moving
    out = tmp_path / "x"
    assert main(_move(server, port, out, sheet, aet="STRANGER")) == 1
    printed = capsys.readouterr().out
    assert _files(out) == []
    failures = [line for line in printed.splitlines() if line.startswith("  row ")]
    assert len(failures) == 3, printed
    for line in failures[:2]:
        assert "failed (C-MOVE status 0x" in line  # 0xA801 by the standard; Orthanc 1.10 answers 0xC000
        assert "does not know our AE title 'STRANGER'" in line and f"port {port}" in line
    assert "ACC-MOVE" not in printed


def test_a_destination_at_an_address_where_no_one_listens_is_listed_per_row(moving, sheet, tmp_path, capsys):
    server, port = moving
    out = tmp_path / "x"
    assert main(_move(server, port, out, sheet, aet="ELSEWHERE")) == 1  # Orthanc sends to a port no one listens on
    printed = capsys.readouterr().out
    failures = [line for line in printed.splitlines() if line.startswith("  row ")]
    assert _files(out) == [] and len(failures) == 3, printed
    for line in failures[:2]:  # Orthanc 1.10 answers 0xC000 (a PACS may say 0xA702 or 0xB000)
        assert "C-MOVE status 0x" in line and "cannot reach us at the address it has for it" in line


def test_a_port_in_use_or_a_dicomweb_source_is_one_line_and_exit_2(moving, sheet, tmp_path, capsys):
    server, _port = moving
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        rc = main(_move(server, busy.getsockname()[1], tmp_path / "x", sheet))
    err = capsys.readouterr().err
    assert rc == 2 and "cannot listen for C-MOVE" in err and "port in use" in err and len(err.strip().splitlines()) == 1
    rc = main(["pull", server.dicomweb_url, "--move", "--out", str(tmp_path / "y"), "--accessions", str(sheet)])
    err = capsys.readouterr().err
    assert rc == 2 and "--move is a DIMSE retrieve" in err


def test_the_storage_scp_refuses_an_instance_of_a_series_no_one_asked_for(tmp_path):
    from pynetdicom import AE

    from pipeline.ingest.pacs_move import MoveClient
    from pipeline.ingest.pacs_source import parse_source

    port = free_port()
    client = MoveClient(parse_source("dimse://PACS@127.0.0.1:1"), OURS, move_host="127.0.0.1", move_port=port)
    try:
        path = write_series(tmp_path / "s", *series_args(rows=8, cols=8, n_slices=1, seed=3))[0]
        ds = pydicom.dcmread(path)
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = stranger.associate("127.0.0.1", port, ae_title=OURS)
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0x0124  # refused: not authorised
    finally:
        client.close()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]  # nothing written
