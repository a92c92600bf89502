"""Tests of transforms.dicom.series: grouping, splitting, sorting, spacing and problem detection."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from pipeline.demo.synthetic_dicom import SeriesFiles, SeriesSpec, write_series, write_single_image
from transforms.dicom.headers import read_header
from transforms.dicom.series import assemble_series, orientation_label

OBLIQUE = (0.866, 0.5, 0.0, -0.3, 0.52, 0.8)


def _headers(paths):
    headers = [read_header(p) for p in paths]
    random.Random(1).shuffle(headers)  # input order must never matter
    return headers


def _one(paths):
    (series,) = assemble_series(_headers(paths))
    return series


@pytest.mark.parametrize("orientation, label", [("axial", "axial"), ("coronal", "coronal"),
                                                 ("sagittal", "sagittal"), (OBLIQUE, "oblique")])
@pytest.mark.parametrize("order", ["ascending", "descending", "interleaved"])
def test_slices_sorted_along_the_normal(tmp_path, orientation, label, order):
    paths = write_series(tmp_path, SeriesSpec(rows=6, cols=5, n_slices=7, orientation=orientation, order=order,
                                              slice_spacing=3.0, slice_thickness=1.0, origin=(5.0, -7.0, 11.0)))
    s = _one(paths)
    assert (s.shape, s.n_slices, s.n_timepoints, s.status, s.problems) == ((5, 6, 7), 7, 1, "ok", ())
    assert s.orientation_label == label
    np.testing.assert_allclose(s.spacing, (0.7, 0.7, 3.0))  # from positions, not SliceThickness (1.0)
    z_of_file = {p.path: p.z for p in s.planes}
    for path in paths:
        h = read_header(path)
        expected_world = np.asarray(h.position)
        voxel = np.array([0, 0, z_of_file[str(path)], 1.0])
        np.testing.assert_allclose(s.affine_lps @ voxel, [*expected_world, 1.0], atol=1e-6)
    assert [p.z for p in s.planes] == list(range(7))


def test_ras_affine_flips_lps(tmp_path):
    s = _one(write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=3, origin=(10.0, 20.0, 30.0))))
    np.testing.assert_allclose(s.affine[:, 3], [-10.0, -20.0, 30.0, 1.0])
    np.testing.assert_allclose(np.diag(s.affine)[:3], [-0.7, -0.7, 2.5])


def test_4d_from_temporal_positions(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(modality="MR", rows=4, cols=4, n_slices=5, n_timepoints=3, intercept=0.0,
                                              repetition_time=2000.0))
    s = _one(paths)
    assert (s.shape, s.n_timepoints, s.status) == ((4, 4, 5, 3), 3, "ok")
    assert s.spacing[3] == pytest.approx(2.0) and s.temporal_spacing == pytest.approx(2.0)
    assert sorted((p.t, p.z) for p in s.planes) == [(t, z) for t in range(3) for z in range(5)]


def test_4d_from_acquisition_numbers_without_temporal_ids(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(
        modality="MR", rows=4, cols=4, n_slices=4, n_timepoints=3, intercept=0.0,
        extra={"TemporalPositionIdentifier": None, "NumberOfTemporalPositions": None,
               "AcquisitionNumber": lambda t, z: 3 - t}))
    s = _one(paths)
    assert s.shape == (4, 4, 4, 3)
    by_file = {str(p): read_header(p) for p in paths}
    assert all(by_file[p.path].acquisition_number == p.t + 1 for p in s.planes)  # ordered by acquisition


def test_acquisitions_covering_different_positions_are_split(tmp_path):
    a = write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=4, series_uid="1.2.3.4", study_uid="1.2.3",
                                          extra={"AcquisitionNumber": 1}), SeriesFiles(file_names="instance"))
    b = write_series(tmp_path / "b", SeriesSpec(rows=4, cols=4, n_slices=3, series_uid="1.2.3.4", study_uid="1.2.3", origin=(0, 0, 2.5),
                                                extra={"AcquisitionNumber": 2}, seed=5))
    found = assemble_series(_headers(a + b))
    assert sorted(s.uid for s in found) == ["1.2.3.4_a1", "1.2.3.4_a2"]
    assert sorted(s.n_slices for s in found) == [3, 4]


def test_duplicate_positions_without_ids_are_an_error(tmp_path):
    a = write_series(tmp_path / "a", SeriesSpec(rows=4, cols=4, n_slices=4, series_uid="1.2.3.5", study_uid="1.2.3"))
    b = write_series(tmp_path / "b", SeriesSpec(rows=4, cols=4, n_slices=2, series_uid="1.2.3.5", study_uid="1.2.3", seed=9))
    (s,) = assemble_series(_headers(a + b))
    assert s.status == "error" and any("duplicate slice positions" in p for p in s.problems)


def test_copies_of_one_instance_are_deduplicated(tmp_path):
    paths = write_series(tmp_path / "a", SeriesSpec(rows=4, cols=4, n_slices=3))
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(paths[1].read_bytes())
    s = _one(paths + [copy])
    assert s.n_slices == 3 and s.status == "ok" and "1 file(s) are copies" in s.problems[0]


def test_missing_slice_is_reported_and_filled(tmp_path):
    s = _one(write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=8, missing_slices=(3, 4))))
    assert s.n_slices == 8 and s.filled_slices == (3, 4) and s.status == "warning"
    assert "2 missing slice(s)" in s.problems[0]
    assert len(s.planes) == 6 and sorted(p.z for p in s.planes) == [0, 1, 2, 5, 6, 7]


def test_non_uniform_spacing_is_reported(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(
        rows=4, cols=4, n_slices=4, extra={"ImagePositionPatient": lambda t, z: [0.0, 0.0, [0.0, 2.5, 5.0, 8.7][z]]}))
    s = _one(paths)
    assert s.status == "warning" and "non-uniform slice spacing" in s.problems[0]
    assert s.spacing[2] == pytest.approx(8.7 / 3)


def test_gantry_tilt_gives_sheared_affine_with_true_positions(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=5, gantry_tilt_deg=15.0, slice_spacing=2.0))
    s = _one(paths)
    assert s.status == "warning" and "gantry tilt 15.00 degrees" in s.problems[0]
    assert s.orientation_label == "oblique"
    np.testing.assert_allclose(s.slice_step, (0.0, 0.0, 2.0), atol=1e-6)  # along the table, not the normal
    for path in paths:
        h = read_header(path)
        z = next(p.z for p in s.planes if p.path == str(path))
        np.testing.assert_allclose((s.affine_lps @ [0, 0, z, 1])[:3], h.position, atol=1e-6)


def test_series_split_by_echo_localizer_and_matrix(tmp_path):
    uid = "1.2.3.6"
    e1 = write_series(tmp_path / "e1", SeriesSpec(modality="MR", rows=4, cols=4, n_slices=3, series_uid=uid, study_uid="1.2.3",
                                                  intercept=0.0, extra={"EchoNumbers": 1}))
    e2 = write_series(tmp_path / "e2", SeriesSpec(modality="MR", rows=4, cols=4, n_slices=3, series_uid=uid, study_uid="1.2.3",
                                                  intercept=0.0, extra={"EchoNumbers": 2}, seed=2))
    found = assemble_series(_headers(e1 + e2))
    assert sorted(s.uid for s in found) == [f"{uid}_e1", f"{uid}_e2"]
    assert all(s.status == "ok" and "split into 2 volumes by echo" in s.problems[0] for s in found)

    loc = write_series(tmp_path / "loc", SeriesSpec(rows=4, cols=4, n_slices=3, series_uid="1.2.3.7", study_uid="1.2.3",
                                                    orientation="sagittal",
                                                    extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}))
    body = write_series(tmp_path / "body", SeriesSpec(rows=8, cols=8, n_slices=4, series_uid="1.2.3.7", study_uid="1.2.3", seed=3))
    found = {s.uid: s for s in assemble_series(_headers(loc + body))}
    assert set(found) == {"1.2.3.7_loc_4x4_o2", "1.2.3.7_8x8_o1"} or len(found) == 2
    shapes = sorted(s.shape for s in found.values())
    assert shapes == [(4, 4, 3), (8, 8, 4)]
    assert all(s.status == "warning" and "mixed matrix sizes" in s.problems[0] for s in found.values())


def test_multiframe_and_single_images(tmp_path):
    (mf,) = write_series(tmp_path / "mf", SeriesSpec(modality="MR", rows=4, cols=4, n_slices=3, n_timepoints=2,
                                                     intercept=0.0, order="descending"), SeriesFiles(multiframe=True))
    s = _one([mf])
    assert (s.kind, s.shape, len(s.planes)) == ("multiframe", (4, 4, 3, 2), 6)
    assert sorted((p.t, p.z) for p in s.planes) == [(t, z) for t in range(2) for z in range(3)]
    dx = _one([write_single_image(tmp_path / "dx.dcm", rows=10, cols=8)])
    assert (dx.kind, dx.shape, dx.n_slices) == ("single2d", (8, 10), 1)


def test_images_of_one_series_numbered_alike_keep_uids_of_their_own(tmp_path):
    """Distinct radiographs of one series that share an InstanceNumber (re-exports, other syntaxes) are
    separate volumes, each with its own uid, whatever the input order."""
    paths = [write_single_image(tmp_path / f"dx{k}.dcm", rows=6, cols=5, series_uid="1.2.3.4", study_uid="1.2.3",
                                seed=k, extra={"InstanceNumber": 1 if k < 3 else 2}) for k in range(4)]
    series = assemble_series(_headers(paths))
    assert sorted(s.uid for s in series) == ["1.2.3.4_i1-1", "1.2.3.4_i1-2", "1.2.3.4_i1-3", "1.2.3.4_i2"]
    assert sorted(s.files[0] for s in series) == sorted(str(p) for p in paths)
    again = assemble_series([read_header(p) for p in reversed(paths)])
    assert [(s.uid, s.files) for s in again] == [(s.uid, s.files) for s in series]


def test_uids_are_stable_and_independent_of_input_order(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=4))
    first = assemble_series([read_header(p) for p in paths])
    second = assemble_series([read_header(p) for p in reversed(paths)])
    assert [s.uid for s in first] == [s.uid for s in second]
    assert first[0].planes == second[0].planes


def test_orientation_label_threshold():
    assert orientation_label((0, 0, 1)) == ("axial", 0.0)
    assert orientation_label((0, 1, 0.05))[0] == "coronal"
    assert orientation_label((1, 0, 0.2))[0] == "oblique"


def test_series_info_is_frozen(tmp_path):
    s = _one(write_series(tmp_path, SeriesSpec(rows=4, cols=4, n_slices=2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.uid = "x"  # type: ignore[misc]


def test_time_points_numbered_volume_after_volume_are_no_warning(tmp_path):
    """GE writes slice-based fMRI/DWI with no temporal ids, numbered one volume after the other: its
    normal layout, so `info`; numbers that follow no pattern stay a warning."""
    no_ids = {"TemporalPositionIdentifier": None, "NumberOfTemporalPositions": None, "AcquisitionNumber": None,
              "AcquisitionTime": None, "ContentTime": None}
    regular = write_series(tmp_path / "ge", SeriesSpec(modality="MR", rows=4, cols=4, n_slices=3, n_timepoints=2,
                                                       intercept=0.0, extra=no_ids))
    s = _one(regular)
    assert s.status == "ok" and s.n_timepoints == 2 and "numbered volume after volume" in s.problems[0]
    shuffled = {**no_ids, "InstanceNumber": lambda t, z: [[1, 2, 5], [3, 4, 6]][t][z]}
    s = _one(write_series(tmp_path / "odd", SeriesSpec(modality="MR", rows=4, cols=4, n_slices=3, n_timepoints=2,
                                                       intercept=0.0, seed=4, extra=shuffled)))
    assert s.status == "warning" and "no regular pattern" in s.problems[0]


def test_damaged_copy_sharing_an_instance_uid_never_replaces_the_original(tmp_path, monkeypatch):
    import transforms.dicom.series as series_module

    paths = write_series(tmp_path / "a", SeriesSpec(rows=4, cols=4, n_slices=3))
    copy = tmp_path / "a" / "0000-damaged-copy.dcm"  # sorts first by name
    copy.write_bytes(paths[1].read_bytes())
    real_digest = series_module.pixel_digest
    monkeypatch.setattr(series_module, "pixel_digest", lambda h: None if h.path == str(copy) else real_digest(h))
    s = _one(paths + [copy])
    assert str(copy) not in s.files and str(paths[1]) in s.files and s.status == "warning"
    assert "pixel data cannot be read; kept the readable one" in s.problems[0]


def test_degenerate_geometry_is_an_error_that_names_it(tmp_path):
    s = _one(write_series(tmp_path / "z", SeriesSpec(rows=4, cols=4, n_slices=2, extra={"PixelSpacing": [0.0, 0.7]})))
    assert s.status == "error" and any("PixelSpacing (rows) is 0" in p for p in s.problems)


def test_a_multiframe_radiograph_or_cine_is_refused_with_a_reason(tmp_path):
    """Frames of a DX/XA/US file without patient geometry are views or a cine, never slices of a volume."""
    import pydicom

    path = write_single_image(tmp_path / "dx.dcm", rows=6, cols=5)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData * 3
    ds.NumberOfFrames = 3
    ds.save_as(path)
    s = _one([path])
    assert s.status == "error"
    assert "multi-frame DX image (3 frames" in s.problems[0] and "export the frame you need" in s.problems[0]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 11])
def test_median_equals_numpys(n):
    from transforms.dicom.geometry import median

    values = np.random.default_rng(n).normal(size=n) * 3.7
    assert median(values) == float(np.median(values))
    assert isinstance(median(values), float)
