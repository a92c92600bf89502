"""The demo: the export-only path in the default run, the whole pipeline (quick settings) as a slow test."""
from __future__ import annotations

import json

import nibabel as nib
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.demo.run import run_demo
from pipeline.demo.source import write_source_dataset


@pytest.fixture(autouse=True)
def _secret(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))


def test_export_only_writes_export_and_labels(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--patients", "4", "--export-only"]) == 0
    labels = pd.read_csv(tmp_path / "d" / "labels.csv")
    assert len(labels) == 4 and set(labels["label"]) <= {"lesion", "normal"}
    assert any((tmp_path / "d" / "export").rglob("*"))
    assert "writing a synthetic hospital export of 4 patients" in capsys.readouterr().out


def test_source_dataset_is_balanced_and_deterministic(tmp_path):
    m1 = write_source_dataset(tmp_path / "a", n_cases=10, n_slices=8, seed=3)
    m2 = write_source_dataset(tmp_path / "b", n_cases=10, n_slices=8, seed=3)
    df = pd.read_csv(m1)
    assert df["label"].value_counts().to_dict() == {"normal": 5, "cyst": 5}
    assert set(df["split"]) == {"train", "val"}
    for name in df["image"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    cyst = nib.load(tmp_path / "a" / df["image"][1]).get_fdata()
    normal = nib.load(tmp_path / "a" / df["image"][0]).get_fdata()
    assert cyst.shape == normal.shape == (64, 64, 8)
    # a cyst is darker than soft tissue: more voxels in the (-60, 0) HU band than a normal phantom has
    assert ((cyst > -60) & (cyst < 0)).sum() > ((normal > -60) & (normal < 0)).sum()
    assert pd.read_csv(m2).equals(df)


@pytest.mark.slow
def test_whole_demo_runs_end_to_end(tmp_path):
    summary = run_demo(tmp_path / "demo", n_patients=16, seed=0, quick=True)
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert report["overall"]["n"] == summary["test_n"] > 0
    assert (tmp_path / "demo" / "report" / "report.html").stat().st_size > 10_000
    predictions = pd.read_csv(summary["predictions"])
    assert set(predictions["status"]) == {"ok", "error"}
    assert (predictions["status"] == "ok").sum() >= 4
    for run in ("source", "lesion"):
        assert (tmp_path / "demo" / "runs" / run / "checkpoints" / "best.pt").exists()
    weights = json.loads((tmp_path / "demo" / "runs" / "lesion" / "weights_report.json").read_text())
    assert weights["kind"] == "run"
