"""``radpipe demo --pacs``: the PACS stage against a real Orthanc (export in, pull by accession, SRs pushed back)."""
from __future__ import annotations

import csv
import json

import pydicom
import pytest
from predict_helpers import write_run

import pipeline.demo.pacs_stage as stage
from pipeline.cli import main
from pipeline.demo.orthanc import missing
from pipeline.demo.run import Demo, run_demo
from pipeline.demo.synthetic_export import write_export


@pytest.fixture(autouse=True)
def _secret(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    for name in ("RADPIPE_PACS_USER", "RADPIPE_PACS_PASSWORD", "RADPIPE_PACS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_the_stage_pulls_the_labelled_studies_and_puts_one_sr_per_study_in_orthanc(tmp_path, capsys):
    if missing():
        pytest.skip(f"{missing()}; .ci/run installs it")
    export = write_export(tmp_path, n_patients=3, seed=5, slices=(8, 10))
    run = write_run(tmp_path / "run", size=(16, 16, 8))
    figures = stage.pacs_stage(Demo(tmp_path, seed=0), run, export.export_dir, export.labels_csv)
    printed = capsys.readouterr().out
    with export.labels_csv.open(newline="", encoding="utf-8") as f:
        n_studies = sum(1 for _ in csv.DictReader(f))
    assert figures["pacs_srs_written"] == figures["pacs_srs_in_orthanc"] == n_studies == 3
    assert "3 of 3 DICOM SR(s) reached Orthanc" in printed
    assert "$ radpipe pull http://127.0.0.1:" in printed and "--credentials" in printed
    pulled = list((tmp_path / "pacs" / "export").rglob("*.dcm"))
    assert figures["pacs_pulled_instances"] == len(pulled) > 3 * 8
    assert {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in pulled} == {"CT"}
    password = (tmp_path / "pacs" / "credentials.json").read_text()
    assert (tmp_path / "pacs" / "credentials.json").stat().st_mode & 0o077 == 0
    assert password.split('"password": "')[1].rstrip('"}') not in printed


def test_without_orthanc_the_stage_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    reason = "Orthanc is not installed (apt-get install -y orthanc)"
    monkeypatch.setattr(stage, "missing", lambda: reason)
    figures = stage.pacs_stage(Demo(tmp_path, seed=0), tmp_path / "run", tmp_path, tmp_path / "labels.csv")
    assert figures == {"pacs_skipped": reason}
    assert capsys.readouterr().out.strip() == f"[PACS stage skipped: {reason}]"
    assert not (tmp_path / "pacs").exists()


def test_pacs_with_export_only_is_refused_in_one_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--export-only", "--pacs"]) == 2
    assert "--pacs predicts with the demo's trained model" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_with_pacs_ends_with_the_srs_of_every_labelled_study_in_orthanc(tmp_path, capsys):
    if missing():
        pytest.skip(f"{missing()}; .ci/run installs it")
    summary = run_demo(tmp_path / "demo", n_patients=8, seed=0, quick=True, pacs=True)
    assert summary["pacs_srs_in_orthanc"] == summary["pacs_srs_written"] == 8
    assert "8 of 8 DICOM SR(s) reached Orthanc" in capsys.readouterr().out
    assert json.loads((tmp_path / "demo" / "demo_summary.json").read_text())["pacs_srs_in_orthanc"] == 8
