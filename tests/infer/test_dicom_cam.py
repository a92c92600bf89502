"""Grad-CAM as a DICOM Parametric Map, without a PACS: geometry, references, deterministic UIDs, resumable writes."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from predict_helpers import write_run

from pipeline.cli import main
from pipeline.demo.synthetic_dicom import series_args, write_series
from pipeline.errors import PipelineError
from pipeline.infer.dicom_cam import LEVELS, build_cam_map, write_cam_maps
from pipeline.infer.dicom_sr import ModelIdentity, file_sha256, push_srs, pushed

MODEL = ModelIdentity("resnet18", "ab" * 32)
ROW = {"pred": "yes", "threshold": "0.5"}


@pytest.fixture
def headers(tmp_path):
    paths = write_series(tmp_path / "ct", *series_args(rows=8, cols=8, n_slices=4, seed=3,
                                                        patient={"PatientID": "PID-CAM"}))
    return sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in paths),
                  key=lambda d: float(d.ImagePositionPatient[2]))


def _source_affine_ras(headers) -> np.ndarray:
    """The NIfTI (RAS) affine of the source series' voxel grid (i: columns, j: rows, k: slices)."""
    first, last = headers[0], headers[-1]
    row_dir, col_dir = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row_dir * dc, col_dir * dr
    lps[:3, 2] = (np.array(last.ImagePositionPatient, float) - np.array(first.ImagePositionPatient, float)) / (
        len(headers) - 1)
    lps[:3, 3] = np.array(first.ImagePositionPatient, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _read_back(ds) -> tuple[pydicom.Dataset, hd.pm.ParametricMap]:
    """The map as a PACS gets it: written, read with pydicom, parsed by highdicom."""
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    read = pydicom.dcmread(pydicom.filebase.DicomBytesIO(buffer.getvalue()))
    return read, hd.pm.ParametricMap.from_dataset(read)


def test_the_map_reads_back_in_the_source_geometry_and_references_it(headers):
    cam = np.zeros((8, 8, 4), np.float32)  # (i, j, k) as the NIfTI holds it
    cam[5, 2, 3], cam[1, 6, 0] = 1.0, 0.25
    affine = _source_affine_ras(headers)
    ds, pm = _read_back(build_cam_map(headers, cam, affine, ROW, MODEL))
    first = headers[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID) == (
        first.StudyInstanceUID, first.FrameOfReferenceUID, "PID-CAM")
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID and ds.SeriesNumber == 9901
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        h.SOPInstanceUID for h in headers}
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.RealWorldValueSlope == pytest.approx(1 / LEVELS)
    # each voxel lands where the source's own voxel (i, j, k) lies: frame k, row j, column i
    frames = pm.pixel_array
    assert frames.shape == (4, 8, 8) and int(ds.NumberOfFrames) == 4
    for k_src, (i, j, value) in ((3, (5, 2, 1.0)), (0, (1, 6, 0.25))):
        position = np.array(headers[k_src].ImagePositionPatient, float)
        f = next(n for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence)
                 if np.allclose(np.array(item.PlanePositionSequence[0].ImagePositionPatient, float), position))
        assert frames[f, j, i] * mapping.RealWorldValueSlope == pytest.approx(value)
        assert int(np.count_nonzero(frames[f])) == 1
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert np.allclose(np.array(orientation, float), np.array(first.ImageOrientationPatient, float))


def test_same_inputs_give_the_same_uids(headers):
    cam, affine = np.random.default_rng(0).random((8, 8, 4)), _source_affine_ras(headers)
    a, b = build_cam_map(headers, cam, affine, ROW, MODEL), build_cam_map(headers, cam, affine, ROW, MODEL)
    def uids(ds):
        return ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.DimensionOrganizationSequence[0].DimensionOrganizationUID

    assert uids(a) == uids(b)
    other = build_cam_map(headers, cam, affine, ROW, ModelIdentity("resnet18", "cd" * 32))
    assert other.SOPInstanceUID != a.SOPInstanceUID and other.SeriesInstanceUID != a.SeriesInstanceUID


def test_a_2d_map_is_one_frame_and_a_sheared_grid_is_refused(headers):
    ds, _ = _read_back(build_cam_map(headers, np.eye(8, dtype=np.float32), _source_affine_ras(headers), ROW, MODEL))
    assert int(ds.NumberOfFrames) == 1
    sheared = _source_affine_ras(headers)
    sheared[:3, 1] += sheared[:3, 0]
    with pytest.raises(PipelineError, match="sheared"):
        build_cam_map(headers, np.zeros((8, 8, 4)), sheared, ROW, MODEL)
    del headers[0].FrameOfReferenceUID
    with pytest.raises(PipelineError, match="no frame of reference"):
        build_cam_map(headers, np.zeros((8, 8, 4)), _source_affine_ras(headers), ROW, MODEL)


def test_predict_writes_one_map_per_series_resumably(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    for i in range(2):
        write_series(tmp_path / "export" / f"s{i}", *series_args(rows=20, cols=20, n_slices=10, seed=20 + i,
                                                                  patient={"PatientID": f"PID-C{i}"}))
    run = write_run(tmp_path / "run", size=(16, 16, 8))
    args = ["predict", "--run", str(run), str(tmp_path / "export"), "--out", str(tmp_path / "p.csv"), "--workers",
            "0", "--cam", str(tmp_path / "cam"), "--dicom-out", str(tmp_path / "dcm")]
    assert main(args) == 0
    assert "2 Grad-CAM parametric map(s) written, 0 already there" in capsys.readouterr().out
    maps = sorted((tmp_path / "dcm").glob("*.cam.dcm"))
    srs = sorted((tmp_path / "dcm").glob("*.sr.dcm"))
    assert len(maps) == 2 == len(srs)
    first = {p.name: pydicom.dcmread(p) for p in maps}
    for name, ds in first.items():
        sr = pydicom.dcmread(tmp_path / "dcm" / name.replace(".cam.", ".sr."))
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert ds.StudyInstanceUID == evidence.StudyInstanceUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == evidence.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert ds.ManufacturerModelName == "radpipe resnet10"
        assert ds.DeviceSerialNumber == file_sha256(run / "checkpoints" / "best.pt")[:16]
    assert main(args) == 0
    assert "0 Grad-CAM parametric map(s) written, 2 already there" in capsys.readouterr().out
    maps[0].unlink()  # a re-written map keeps its UIDs: a PACS stores a re-sent one once
    assert main(args) == 0
    again = pydicom.dcmread(maps[0])
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (first[maps[0].name].SOPInstanceUID,
                                                               first[maps[0].name].SeriesInstanceUID)

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def send(self, datasets):
            self.sent += [str(ds.SOPClassUID) for ds in datasets]

    recorder = Recorder()
    summary = push_srs(tmp_path / "dcm", recorder)
    assert summary.n_pushed == 4 and recorder.sent.count("1.2.840.10008.5.1.4.1.1.30") == 2
    assert sorted(pushed(tmp_path / "dcm")) == sorted(p.name for p in [*maps, *srs])


def test_a_series_without_its_map_is_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    write_series(tmp_path / "export" / "s", *series_args(rows=20, cols=20, n_slices=10, seed=5))
    run = write_run(tmp_path / "run", size=(16, 16, 8))
    assert main(["predict", "--run", str(run), str(tmp_path / "export"), "--out", str(tmp_path / "p.csv"),
                 "--workers", "0"]) == 0
    summary = write_cam_maps(tmp_path / "p.csv", tmp_path / "no-cams", tmp_path / "dcm", MODEL)
    assert summary.n_written == 0 and len(summary.failures) == 1
    assert "no Grad-CAM map" in summary.failures[0][1] and summary.failures[0][0].endswith(".cam.dcm")
