"""PACS in, PACS out against a real Orthanc: sheet -> ``pull`` -> ``predict --dicom-out --push`` -> SRs in Orthanc."""
from __future__ import annotations

import highdicom as hd
import pydicom
import pytest
import requests
from orthanc_server import PASSWORD, USER, OrthancServer
from predict_helpers import read_rows, write_run

from pipeline.cli import main
from pipeline.demo.synthetic_dicom import series_args, write_series
from pipeline.infer.dicom_sr import file_sha256, pushed
from pipeline.pseudonym import Pseudonymiser

PATIENTS = {"ACC-SR-1": "PID-SR-1", "ACC-SR-2": "PID-SR-2"}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path_factory.getbasetemp() / "secret.key"))
    monkeypatch.setenv("RADPIPE_PACS_USER", USER)
    monkeypatch.setenv("RADPIPE_PACS_PASSWORD", PASSWORD)


_read = read_rows


def _qido(server: OrthancServer, path: str) -> list[dict]:
    r = requests.get(f"{server.dicomweb_url}{path}", auth=(USER, PASSWORD), timeout=30)
    r.raise_for_status()
    return r.json() if r.content else []


def _texts(item) -> dict[str, list[str]]:
    """TEXT content items under ``item`` by concept name."""
    found: dict[str, list[str]] = {}
    for child in getattr(item, "ContentSequence", []):
        if child.ValueType == "TEXT":
            found.setdefault(child.ConceptNameCodeSequence[0].CodeMeaning, []).append(child.TextValue)
        for name, values in _texts(child).items():
            found.setdefault(name, []).extend(values)
    return found


@pytest.fixture(scope="module")
def pulled(orthanc, tmp_path_factory):
    """Two CT studies stored in Orthanc, pulled back by accession over DICOMweb; returns the folders."""
    root = tmp_path_factory.mktemp("sr")
    for i, (accession, pid) in enumerate(PATIENTS.items()):
        patient = {"PatientID": pid, "PatientName": f"Doe^Sr{i}", "AccessionNumber": accession}
        orthanc.upload(write_series(root / "src" / accession, *series_args(rows=20, cols=20, n_slices=10,
                                                                             patient=patient, seed=100 + i)))
    sheet = root / "sheet.csv"
    sheet.write_text("accession_number,label\n" + "".join(f"{a},1\n" for a in PATIENTS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADPIPE_SECRET_FILE", str(tmp_path_factory.getbasetemp() / "secret.key"))
        mp.setenv("RADPIPE_PACS_USER", USER)
        mp.setenv("RADPIPE_PACS_PASSWORD", PASSWORD)
        assert main(["pull", orthanc.dicomweb_url, "--out", str(root / "export"), "--accessions", str(sheet)]) == 0
    return root


def test_predict_writes_srs_that_reference_the_pulled_instances_and_pushes_them(orthanc, pulled, capsys):
    run = write_run(pulled / "run", size=(16, 16, 8))
    out, srs = pulled / "preds.csv", pulled / "srs"
    assert main(["predict", "--run", str(run), str(pulled / "export"), "--out", str(out), "--workers", "0",
                 "--dicom-out", str(srs), "--push", orthanc.dicomweb_url]) == 0
    printed = capsys.readouterr().out
    assert "2 DICOM SR(s) written" in printed and "2 DICOM object(s) sent" in printed
    rows = {r["series_id"]: r for r in _read(out)}
    files = sorted(srs.glob("*.sr.dcm"))
    assert len(files) == 2 == len(rows)
    sha = file_sha256(run / "checkpoints" / "best.pt")
    for path in files:
        ds = pydicom.dcmread(path)
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
        row = rows[path.name.removesuffix(".sr.dcm")]
        assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
        series = evidence.ReferencedSeriesSequence[0]
        assert Pseudonymiser().key(series.SeriesInstanceUID, "series") == row["series_id"]
        assert ds.StudyInstanceUID == evidence.StudyInstanceUID  # the SR joins the source study
        # every referenced instance resolves to an instance stored in Orthanc
        stored = {i["00080018"]["Value"][0] for i in _qido(
            orthanc, f"/studies/{evidence.StudyInstanceUID}/series/{series.SeriesInstanceUID}/instances")}
        referenced = {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence}
        assert referenced == stored and len(stored) == 10
        assert sr.get_evidence_series() == [(evidence.StudyInstanceUID, series.SeriesInstanceUID)]
        group = sr.content.get_image_measurement_groups()[0]
        assert group.get_qualitative_evaluations()[0].value.meaning == row["pred"]
        probs = {m.name.meaning: m.value for m in group.get_measurements()}
        assert probs["Probability of yes"] == pytest.approx(float(row["prob_yes"]), abs=1e-6)
        assert probs["Probability of no"] == pytest.approx(float(row["prob_no"]), abs=1e-6)
        texts = _texts(group[0])  # the group's container item
        assert texts["Algorithm Name"] == ["radpipe resnet10"]
        assert f"weights sha256 {sha}" in texts["Algorithm Parameters"]
        assert "threshold argmax" in texts["Algorithm Parameters"]  # the run has no operating point
        assert str(ds.PatientID) in PATIENTS.values()  # the source's patient module, as the source PACS expects
    # the SRs are in Orthanc, in the source studies
    in_pacs = {s["0020000D"]["Value"][0] for s in _qido(orthanc, "/studies?ModalitiesInStudy=SR")}
    assert in_pacs == {pydicom.dcmread(p).StudyInstanceUID for p in files}
    assert len(pushed(srs)) == 2
    # a re-run writes and sends nothing new
    assert main(["predict", "--run", str(run), str(pulled / "export"), "--out", str(out), "--workers", "0",
                 "--dicom-out", str(srs), "--push", orthanc.dicomweb_url]) == 0
    again = capsys.readouterr().out
    assert "0 DICOM SR(s) written, 2 already there" in again and "0 DICOM object(s) sent" in again
    for text in (printed, again, (srs / "pushed.csv").read_text()):
        assert not [v for v in [*PATIENTS, *PATIENTS.values()] if v in text]


def test_push_over_dimse_stores_the_srs(orthanc, pulled, capsys):
    srs = pulled / "srs"
    if not list(srs.glob("*.sr.dcm")):
        pytest.skip("needs the SRs of the previous test")
    for study in orthanc.get("/studies"):  # remove the SRs sent over DICOMweb
        for series in orthanc.get(f"/studies/{study}/series"):
            if series["MainDicomTags"].get("Modality") == "SR":
                requests.delete(f"{orthanc.url}/series/{series['ID']}", auth=(USER, PASSWORD), timeout=30)
    (srs / "pushed.csv").unlink()
    from pipeline.infer.dicom_sr import push_srs
    from pipeline.ingest.pacs_dimse import DimseClient
    from pipeline.ingest.pacs_source import parse_source

    summary = push_srs(srs, DimseClient(parse_source(orthanc.dimse_url), "RADPIPE"))
    assert (summary.n_pushed, summary.failures) == (2, [])
    assert len(_qido(orthanc, "/studies?ModalitiesInStudy=SR")) == 2


def test_grad_cam_maps_are_pushed_beside_the_srs_and_found_by_series_uid(orthanc, pulled, capsys):
    run = write_run(pulled / "run-cam", size=(16, 16, 8))
    out, dicom_out = pulled / "preds-cam.csv", pulled / "dicom-cam"
    args = ["predict", "--run", str(run), str(pulled / "export"), "--out", str(out), "--workers", "0",
            "--cam", str(pulled / "cam"), "--dicom-out", str(dicom_out), "--push", orthanc.dicomweb_url]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 Grad-CAM parametric map(s) written" in printed and "4 DICOM object(s) sent" in printed
    maps = sorted(dicom_out.glob("*.cam.dcm"))
    assert len(maps) == 2 and set(pushed(dicom_out)) >= {p.name for p in maps}
    for path in maps:
        ds = pydicom.dcmread(path)
        source = ds.ReferencedSeriesSequence[0].SeriesInstanceUID
        stored = _qido(orthanc, f"/studies/{ds.StudyInstanceUID}/series?SeriesInstanceUID={ds.SeriesInstanceUID}")
        assert [s["0020000E"]["Value"][0] for s in stored] == [ds.SeriesInstanceUID]
        instances = _qido(orthanc, f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances")
        assert [(i["00080016"]["Value"][0], i["00080018"]["Value"][0]) for i in instances] == [
            ("1.2.840.10008.5.1.4.1.1.30", ds.SOPInstanceUID)]
        assert len(_qido(orthanc, f"/studies/{ds.StudyInstanceUID}/series/{source}/instances")) == 10
    assert main(args) == 0  # a re-run writes and sends nothing new
    again = capsys.readouterr().out
    assert "0 Grad-CAM parametric map(s) written, 2 already there" in again and "0 DICOM object(s) sent" in again
    for text in (printed, again):
        assert not [v for v in [*PATIENTS, *PATIENTS.values()] if v in text]
