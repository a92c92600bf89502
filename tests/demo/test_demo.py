"""The demo: the export-only path in the default run, the whole pipeline (quick settings) as a slow test."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.demo.run import run_demo
from pipeline.demo.source import write_source_dataset


@pytest.fixture(autouse=True)
def _secret(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))


def test_export_only_writes_export_labels_new_scans_truth_and_next_command(tmp_path, capsys):
    out = tmp_path / "my demo"
    assert main(["demo", "--out", str(out), "--patients", "4", "--export-only"]) == 0
    labels = pd.read_csv(out / "labels.csv")
    assert len(labels) == 4 and set(labels["label"]) <= {"lesion", "normal"}
    assert any((out / "export").rglob("*"))
    assert sum(1 for p in (out / "new_scans").rglob("*") if p.is_file()) > 10
    printed = capsys.readouterr().out
    assert "writing a synthetic hospital export of 4 patients" in printed
    next_line = printed.strip().splitlines()[-1].strip()
    assert next_line.startswith("$ ")
    assert shlex.split(next_line[2:]) == ["radpipe", "scan", str(out / "export"), "--out", str(out / "index.csv")]
    truth = pd.read_csv(out / "truth" / "lesions.csv")
    assert list(truth.columns) == ["series_key", "x", "y", "z", "radius_mm"]
    assert len(truth) == (labels["label"] == "lesion").sum() + 2  # the export's lesions and two new scans


def test_truth_keys_are_the_index_keys_and_centres_are_in_ras_mm(tmp_path):
    from pipeline.demo.synthetic_export import write_export
    from pipeline.demo.truth import write_lesions

    export = write_export(tmp_path, n_patients=4, seed=3, slices=(8, 10))
    truth = pd.read_csv(write_lesions(tmp_path, export.cases))
    assert main(["scan", str(export.export_dir), "--out", str(tmp_path / "index.csv")]) == 0
    index = pd.read_csv(tmp_path / "index.csv")
    assert set(truth["series_key"]) <= set(index["series_key"]) and len(truth) == export.n_lesion
    case = next(c for c in export.cases if c["lesion"])
    row = truth.iloc[0]
    lesion = case["lesion"]  # phantom frame: x right-to-left of the image (LPS +x), y top-to-bottom (LPS +y)
    assert (row["x"], row["y"]) == pytest.approx((-lesion["x_mm"], -lesion["y_mm"]), abs=0.01)
    assert row["z"] == pytest.approx(case["origin_z"] + lesion["z_mm"] - case["slice_thickness"] / 2, abs=0.01)
    assert "PatientID" not in (tmp_path / "truth" / "lesions.csv").read_text()


def test_echoed_commands_paste_back_into_the_same_arguments(capsys):
    from pipeline.demo.run import Demo, command_line

    argv = ["manifest", "/a b/index.csv", "--where", 'modality == "CT"', "--out", "it's.csv"]
    line = command_line(argv)
    assert shlex.split(line) == ["radpipe", *argv]
    assert " --where 'modality == \"CT\"' " in line  # no quotes-in-quotes: '"'"' appears only for "it's"
    import pipeline.demo.run as run_module

    assert "modality == 'CT'" not in Path(run_module.__file__).read_text()  # filters use double quotes
    assert Demo  # the demo echoes through command_line


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
    assert summary["cam_cases"] >= 0 and (tmp_path / "demo" / "truth" / "lesions.csv").is_file()
    assert any((tmp_path / "demo" / "cam_test").glob("*.cam.png"))
