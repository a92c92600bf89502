from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_reference import dcm2niix_binary, world_mismatch

import transforms.dicom.volume
from pipeline.cli import main
from pipeline.ingest.convert import convert_export
from pipeline.errors import DicomReadError
from pipeline.pseudonym import Pseudonymiser
from pipeline.demo.synthetic_dicom import SeriesSpec, write_series
from pipeline.demo.synthetic_export import SITES, write_export

SECRET = b"convert-test-secret-convert-test-secret"
MR_UID = "1.2.826.0.1.3680043.8.498.4242"


def _dcm2niix() -> Path | None:
    return dcm2niix_binary()


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    summary = write_export(tmp_path_factory.mktemp("ex"), n_patients=2, seed=5, slices=(12, 14))
    write_series(summary.export_dir / "MRFOLDER" / "SUB", SeriesSpec(
        modality="MR", rows=16, cols=12, n_slices=4, n_timepoints=3, intercept=0.0, dtype="uint16", echo_time=30.0,
        repetition_time=2000.0, series_uid=MR_UID, series_description="ep2d_bold", manufacturer="SIEMENS", seed=3))
    return summary


@pytest.fixture(scope="module")
def converted(export, tmp_path_factory):
    return convert_export(export.export_dir, tmp_path_factory.mktemp("nii"), workers=1,
                          pseudonymiser=Pseudonymiser(SECRET))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_one_nifti_and_sidecar_per_series(export, converted):
    rows = _rows(converted.index_csv)
    assert converted.n_series == len(rows) == export.n_image_series + 1
    assert converted.n_failed == 0 and all(r["status"] in ("ok", "warning") for r in rows)
    for row in rows:
        assert row["nifti"] == f"{row['patient_key']}_{row['series_key']}.nii.gz"
        assert (converted.out_dir / row["nifti"]).is_file() and (converted.out_dir / row["sidecar"]).is_file()
    mr = next(r for r in rows if r["series_key"] == Pseudonymiser(SECRET).key(MR_UID, "series"))
    image = nib.load(converted.out_dir / mr["nifti"])
    assert image.shape == (12, 16, 4, 3) and mr["shape"] == "12x16x4x3"
    side = json.loads((converted.out_dir / mr["sidecar"]).read_text())
    assert (side["EchoTime"], side["RepetitionTime"], side["Modality"]) == (0.03, 2.0, "MR")
    assert side["SeriesDescription"] == "ep2d_bold" and side["VoxelSpacing"][:3] == [0.7, 0.7, 2.5]


def test_ct_sidecar_and_values(export, converted):
    rows = [r for r in _rows(converted.index_csv) if r["orientation"] == "axial" and r["modality"] == "CT"]
    assert len(rows) == export.n_patients
    models = {s.model: s for s in SITES}
    for row in rows:
        side = json.loads((converted.out_dir / row["sidecar"]).read_text())
        site = models[side["ManufacturersModelName"]]
        assert side["Manufacturer"] == site.manufacturer and side["SliceThickness"] == site.slice_thickness
        assert side["PatientKey"] == row["patient_key"] and side["Status"] == "ok" and side["Problems"] == []
        data = np.asarray(nib.load(converted.out_dir / row["nifti"]).dataobj)
        assert data.dtype == np.int16 and data.min() >= -1024 and -1000 < np.median(data[:3, :3]) < -900


def test_matches_dcm2niix_voxel_for_voxel_in_world_space(export, converted, tmp_path):
    binary = _dcm2niix()
    if binary is None:
        pytest.skip("dcm2niix binary not found (pip install dcm2niix); reference comparison skipped")
    subprocess.run([str(binary), "-z", "y", "-b", "y", "-f", "%j", "-o", str(tmp_path), str(export.export_dir)],
                   check=True, capture_output=True, timeout=120)
    ps = Pseudonymiser(SECRET)
    rows = {r["series_key"]: r for r in _rows(converted.index_csv)}
    references = sorted(tmp_path.glob("*.nii.gz"))
    assert len(references) == len(rows)
    for reference in references:
        uid = reference.name[: -len(".nii.gz")]
        row = rows[ps.key(uid, "series")]
        ours = nib.load(converted.out_dir / row["nifti"])
        theirs = nib.load(reference)
        assert sorted(ours.shape[:3]) == sorted(theirs.shape[:3]) and ours.shape[3:] == theirs.shape[3:]
        distance, difference = world_mismatch(np.asarray(ours.get_fdata()), ours.affine, reference)
        assert distance < 1e-3 and difference == 0, row["series_description"]


def test_a_failing_series_is_listed_and_the_rest_converted(export, tmp_path, monkeypatch):
    real = transforms.dicom.volume.load_series

    def fake(info, **kwargs):
        if info.header.is_localizer:
            raise DicomReadError(f"series {info.uid}: cannot decode pixel data (test)")
        return real(info, **kwargs)

    monkeypatch.setattr(transforms.dicom.volume, "load_series", fake)
    summary = convert_export(export.export_dir, tmp_path / "out", workers=1, pseudonymiser=Pseudonymiser(SECRET))
    failed = [r for r in summary.rows if r["status"] == "failed"]
    assert summary.n_failed == len(failed) == export.n_patients
    assert all("DicomReadError: series" in r["error"] and r["nifti"] == "" for r in failed)
    assert summary.n_written == summary.n_series - len(failed)
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == summary.n_written


def test_cli_convert_and_no_identifiers_in_outputs(export, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    out = tmp_path / "nii"
    assert main(["convert", str(export.export_dir), str(out), "--workers", "2"]) == 0
    assert f"written: {export.n_image_series + 1}" in capsys.readouterr().out
    text = "\n".join(p.read_text(encoding="utf-8") for p in out.iterdir() if p.suffix in (".json", ".csv"))
    for phi in export.phi:
        for value in (phi["PatientID"], phi["AccessionNumber"], phi["PatientName"].split("^")[0]):
            assert value.lower() not in text.lower()
    assert not any(phi["PatientID"] in p.name for p in out.iterdir() for phi in export.phi)
