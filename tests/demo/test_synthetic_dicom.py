"""Tests of pipeline.demo.synthetic_dicom: the files are real DICOM with the geometry the docstring promises."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from pipeline.demo.synthetic_dicom import (
    CT_IMAGE_STORAGE,
    DX_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SeriesFiles,
    SeriesSpec,
    default_pattern,
    orientation_cosines,
    series_geometry,
    write_dicomdir,
    write_non_image,
    write_series,
    write_single_image,
    write_sr,
)


def _by_instance(paths):
    return sorted((pydicom.dcmread(p) for p in paths), key=lambda ds: int(ds.InstanceNumber))


def test_ct_series_has_geometry_rescale_and_pixels(tmp_path):
    data = default_pattern(1, 5, 12, 10, seed=3)
    paths = write_series(tmp_path, SeriesSpec(rows=12, cols=10, n_slices=5, pixel_spacing=(0.8, 0.6), slice_spacing=3.0,
                                              origin=(1.0, 2.0, 3.0), data=data, intercept=-1000.0, slope=2.0))
    assert len(paths) == 5
    datasets = _by_instance(paths)
    for z, ds in enumerate(datasets):
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert [float(v) for v in ds.ImagePositionPatient] == [1.0, 2.0, 3.0 + 3.0 * z]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.6]
        assert float(ds.SliceThickness) == 3.0
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1000.0)
        np.testing.assert_array_equal(ds.pixel_array, data[0, z])


@pytest.mark.parametrize("order, expected", [("ascending", [0, 1, 2, 3]), ("descending", [3, 2, 1, 0]),
                                             ("interleaved", [1, 3, 0, 2])])
def test_order_changes_instance_numbers_not_geometry(tmp_path, order, expected):
    paths = write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=4, order=order, slice_spacing=2.0))
    z_in_instance_order = [int(round(float(ds.ImagePositionPatient[2]) / 2.0)) for ds in _by_instance(paths)]
    assert z_in_instance_order == expected


def test_file_names_random_or_by_instance(tmp_path):
    random_names = [p.name for p in write_series(tmp_path / "a", SeriesSpec(rows=4, cols=4, n_slices=3))]
    assert all(len(n) == 16 and "." not in n for n in random_names)
    by_instance = write_series(tmp_path / "b", SeriesSpec(rows=4, cols=4, n_slices=3),
                               SeriesFiles(file_names="instance"))
    assert [p.name for p in by_instance] == ["IM00001.dcm", "IM00002.dcm", "IM00003.dcm"]


def test_4d_mr_repeats_positions_with_temporal_ids(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(modality="MR", rows=4, cols=4, n_slices=3, n_timepoints=2, dtype="uint16",
                                              intercept=0.0, repetition_time=2000.0, echo_time=30.0))
    datasets = _by_instance(paths)
    assert len(datasets) == 6
    assert [int(ds.TemporalPositionIdentifier) for ds in datasets] == [1, 1, 1, 2, 2, 2]
    assert {ds.SOPClassUID for ds in datasets} == {MR_IMAGE_STORAGE}
    assert float(datasets[0].RepetitionTime) == 2000.0 and float(datasets[0].EchoTime) == 30.0
    assert datasets[0].ImagePositionPatient == datasets[3].ImagePositionPatient


def test_multiframe_enhanced_has_functional_groups(tmp_path):
    data = default_pattern(2, 3, 5, 4, dtype="int16")
    (path,) = write_series(tmp_path, SeriesSpec(modality="MR", data=data, intercept=0.0), SeriesFiles(multiframe=True))
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == ENHANCED_MR_IMAGE_STORAGE and int(ds.NumberOfFrames) == 6
    assert len(ds.PerFrameFunctionalGroupsSequence) == 6
    frame = ds.PerFrameFunctionalGroupsSequence[4]
    assert frame.FrameContentSequence[0].TemporalPositionIndex == 2
    assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == [0.0, 0.0, 2.5]
    np.testing.assert_array_equal(ds.pixel_array, data.reshape(6, 5, 4))


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
def test_transfer_syntaxes_round_trip(tmp_path, syntax):
    data = default_pattern(1, 2, 32, 32, dtype="int16")  # OpenJPEG needs >= 32 x 32 pixels
    paths = write_series(tmp_path, SeriesSpec(n_slices=2, data=data), SeriesFiles(transfer_syntax=syntax))
    datasets = _by_instance(paths)
    assert datasets[0].file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(np.stack([ds.pixel_array for ds in datasets]), data[0])


def test_missing_slices_tilt_and_oblique_geometry(tmp_path):
    cos = orientation_cosines((1.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    np.testing.assert_allclose(cos, [2 ** -0.5, 2 ** -0.5, 0, 0, 0, -1])
    assert len(write_series(tmp_path / "gap", SeriesSpec(rows=4, cols=4, n_slices=5, missing_slices=(2,)))) == 4
    paths = write_series(tmp_path / "tilt", SeriesSpec(rows=4, cols=4, n_slices=3, gantry_tilt_deg=20.0))
    ds = _by_instance(paths)[2]
    assert float(ds.GantryDetectorTilt) == 20.0
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [0, 0, 5.0])
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient][3:],
                               [0, np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))], atol=1e-7)
    _, positions = series_geometry(n_slices=3, orientation="sagittal", slice_spacing=2.0)
    np.testing.assert_allclose(positions[2], [-4.0, 0, 0])  # sagittal normal: row (0,1,0) x col (0,0,-1)


def test_identifiers_uids_and_extra_tags(tmp_path):
    patient = {"PatientName": "Doe^Jane", "PatientID": "X123", "AccessionNumber": "ACC9"}
    a = write_series(tmp_path / "a", SeriesSpec(rows=4, cols=4, n_slices=2, patient=patient, extra={
        "BodyPartExamined": "CHEST", "SliceLocation": None, "ImageComments": lambda t, z: f"z{z}"}))
    b = write_series(tmp_path / "b", SeriesSpec(rows=4, cols=4, n_slices=2, patient=patient, extra={
        "BodyPartExamined": "CHEST", "SliceLocation": None, "ImageComments": lambda t, z: f"z{z}"}))
    c = write_series(tmp_path / "c", SeriesSpec(rows=4, cols=4, n_slices=2, orientation="coronal"))
    da, db, dc = _by_instance(a), _by_instance(b), _by_instance(c)
    assert str(da[0].PatientName) == "Doe^Jane" and da[0].PatientID == "X123" and da[0].AccessionNumber == "ACC9"
    assert da[1].ImageComments == "z1" and da[0].BodyPartExamined == "CHEST" and "SliceLocation" not in da[0]
    assert [d.SOPInstanceUID for d in da] == [d.SOPInstanceUID for d in db]  # deterministic
    assert da[0].SeriesInstanceUID != dc[0].SeriesInstanceUID  # a different series gets a different UID
    assert da[0].StudyInstanceUID == dc[0].StudyInstanceUID  # same seed: same study


def test_single_image_and_non_image_objects(tmp_path):
    path = write_single_image(tmp_path / "cxr.dcm", rows=30, cols=20)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == DX_IMAGE_STORAGE and ds.PhotometricInterpretation == "MONOCHROME1"
    assert ds.pixel_array.shape == (30, 20) and int(ds.BitsStored) == 12 and ds.pixel_array.max() < 4096
    sr = pydicom.dcmread(write_sr(tmp_path / "sr.dcm", text="Normal."))
    assert sr.Modality == "SR" and "PixelData" not in sr and sr.ContentSequence[0].TextValue == "Normal."
    rt = pydicom.dcmread(write_non_image(tmp_path / "rt.dcm", "RTSTRUCT"))
    assert rt.Modality == "RTSTRUCT"
    dicomdir = pydicom.dcmread(write_dicomdir(tmp_path / "DICOMDIR"))
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="orientation"):
        write_series(tmp_path, SeriesSpec(orientation="diagonal"))
    with pytest.raises(ValueError, match="order"):
        write_series(tmp_path, SeriesSpec(order="random", rows=4, cols=4, n_slices=2))
    with pytest.raises(ValueError, match="modality"):
        write_series(tmp_path, SeriesSpec(modality="DX"))
