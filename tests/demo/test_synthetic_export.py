from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from pipeline.demo.synthetic_export import SITES, write_export, write_new_scans

N_PATIENTS = 6


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_export(tmp_path_factory.mktemp("ex"), n_patients=N_PATIENTS, seed=3, slices=(16, 18))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(root)}


def _datasets(export) -> dict[Path, pydicom.Dataset]:
    skip = {export.truncated_file, export.dicomdir_file, *export.non_dicom_files}
    return {p: pydicom.dcmread(p) for p in _files(export.export_dir) if p not in skip}


def test_file_and_series_counts(export):
    files = _files(export.export_dir)
    assert len(files) == export.n_files == export.n_image_files + export.n_sr + 3
    datasets = _datasets(export)
    assert len(datasets) == export.n_image_files + export.n_sr
    series = defaultdict(list)
    for ds in datasets.values():
        series[ds.SeriesInstanceUID].append(ds)
    image_series = {uid: dss for uid, dss in series.items() if "PixelData" in dss[0]}
    assert len(image_series) == export.n_image_series == 2 * N_PATIENTS
    sizes = Counter(len(dss) for dss in image_series.values())
    assert sizes[2] == N_PATIENTS  # one 2-slice localizer per study
    assert all(16 <= n <= 18 for n, count in sizes.items() if n != 2)
    sr = [ds for ds in datasets.values() if ds.Modality == "SR"]
    assert len(sr) == export.n_sr and all("PixelData" not in ds for ds in sr)


def test_layout_is_nested_and_mixed(export):
    files = _files(export.export_dir)
    image_files = [p for p in files if p.parent != export.export_dir]
    assert all(len(p.relative_to(export.export_dir).parts) == 3 for p in image_files)
    series_per_folder = defaultdict(set)
    for path, ds in _datasets(export).items():
        series_per_folder[path.parent].add(ds.SeriesInstanceUID)
    assert max(len(s) for s in series_per_folder.values()) >= 2  # series of a study share a folder
    assert len({p.name for p in image_files}) == len(image_files)  # random, unique names


def test_every_dicom_reads_back_but_the_truncated_one(export):
    datasets = _datasets(export)
    for ds in datasets.values():
        if "PixelData" in ds:
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
    truncated = pydicom.dcmread(export.truncated_file)  # pydicom reads what is there, silently
    assert "PixelData" not in truncated and "Rows" not in truncated
    assert export.truncated_file.stat().st_size < 2000
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(export.non_dicom_files[0])
    assert export.non_dicom_files[0].name == "README.txt"
    dicomdir = pydicom.dcmread(export.dicomdir_file)
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"


def test_ct_values_are_hounsfield_units_and_lesions_are_bright(export):
    datasets = _datasets(export)
    by_series = defaultdict(list)
    for ds in datasets.values():
        by_series[ds.SeriesInstanceUID].append(ds)
    for case in export.cases:
        slices = sorted(by_series[case["series_uid"]], key=lambda d: float(d.ImagePositionPatient[2]))
        assert len(slices) == case["n_slices"]
        first = slices[0]
        assert (first.RescaleIntercept, first.RescaleSlope, first.pixel_array.dtype) == (-1024, 1, np.int16)
        hu = np.stack([d.pixel_array * 1.0 + float(d.RescaleIntercept) for d in slices])
        assert np.median(hu[:, :3, :3]) < -950  # air in the corners
        assert 20 < np.median(hu[:, 28:36, 28:36]) < 70  # soft tissue in the middle
        if case["label"] == "lesion":
            les = case["lesion"]
            spacing = float(first.PixelSpacing[0])
            origin = [float(v) for v in first.ImagePositionPatient]
            col = int(round(les["x_mm"] / spacing + 31.5))
            row = int(round(les["y_mm"] / spacing + 31.5))
            z = int(les["z_mm"] // float(first.SliceThickness))
            assert origin[0] == pytest.approx(-31.5 * spacing)  # the phantom is centred on the scanner axis
            core = hu[z, row - 1:row + 2, col - 1:col + 2].mean()
            assert core > 40 + 0.6 * les["delta_hu"]
        else:
            assert case["lesion"] == {}


def test_labels_csv_matches_the_export(export):
    with export.labels_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["accession_number", "patient_id", "label", "site", "sex", "age_band"]
    assert len(rows) == N_PATIENTS
    assert Counter(r["label"] for r in rows) == {"lesion": N_PATIENTS // 2, "normal": N_PATIENTS // 2}
    assert {r["site"] for r in rows} <= {s.name for s in SITES}
    institution = {s.name: s.institution for s in SITES}
    studies = {}
    for ds in _datasets(export).values():
        studies[ds.AccessionNumber] = ds
    assert set(studies) == {r["accession_number"] for r in rows}
    for r in rows:
        ds = studies[r["accession_number"]]
        assert (ds.PatientID, ds.PatientSex, ds.InstitutionName) == (r["patient_id"], r["sex"], institution[r["site"]])
        age = int(ds.PatientAge[:3])
        low = int(r["age_band"].split("-")[0].rstrip("+"))
        assert low <= age
    assert len(export.phi_values) >= 4 * N_PATIENTS


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, export):
    again = write_export(tmp_path / "again", n_patients=N_PATIENTS, seed=3, slices=(16, 18))
    assert _digests(again.export_dir) == _digests(export.export_dir)
    assert again.labels_csv.read_bytes() == export.labels_csv.read_bytes()
    other = write_export(tmp_path / "other", n_patients=N_PATIENTS, seed=4, slices=(16, 18))
    assert set(_digests(other.export_dir).values()) & set(_digests(export.export_dir).values()) == {
        hashlib.sha256(export.non_dicom_files[0].read_bytes()).hexdigest()}


def test_new_scans_hold_good_gap_corrupt_and_sr(tmp_path):
    scans = write_new_scans(tmp_path / "new", n_series=2, seed=5, n_slices=12)
    files = _files(scans.scan_dir)
    assert len(files) == scans.n_files == 2 * 12 + 10 + 1 + 1
    assert [s["lesion"] for s in scans.good_series] == [True, False]
    series = Counter()
    for p in files:
        if p != scans.corrupt_file:
            series[pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID] += 1
    assert series[scans.gap_series_uid] == 10
    assert all(series[s["series_uid"]] == 12 for s in scans.good_series)
    assert "Rows" not in pydicom.dcmread(scans.corrupt_file)
    assert pydicom.dcmread(scans.sr_file).Modality == "SR"
