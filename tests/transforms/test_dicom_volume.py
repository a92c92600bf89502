"""Tests of transforms.dicom.volume: voxels and world coordinates against dcm2niix and the synthetic truth."""
from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from dicom_reference import world_mismatch
from nibabel.testing import data_path
from pydicom.data import get_testdata_files
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from pipeline.demo.synthetic_dicom import SeriesSpec, default_pattern, series_geometry, write_series, write_single_image
from pipeline.errors import DicomReadError, ImageReadError
from transforms.dicom.headers import read_header
from transforms.dicom.series import assemble_series
from transforms.dicom.volume import load_series
from transforms.readers import load_volume

OBLIQUE = (0.866, 0.5, 0.0, -0.3, 0.52, 0.8)
NIBABEL_DICOM = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"

# name -> write_series arguments; every case is compared voxel by voxel with dcm2niix
DCM2NIIX_CASES = {
    "ct_axial_ascending": dict(),
    "ct_coronal_descending": dict(orientation="coronal", order="descending"),
    "ct_sagittal_interleaved": dict(orientation="sagittal", order="interleaved", origin=(-30.0, 12.0, 40.0)),
    "mr_oblique": dict(modality="MR", orientation=OBLIQUE, dtype="uint16", intercept=0.0, origin=(10.0, -20.0, 5.0)),
    "ct_float_rescale": dict(slope=0.5, intercept=-10.25),
    "mr_4d_temporal": dict(modality="MR", n_timepoints=3, intercept=0.0, repetition_time=2000.0),
    "mr_4d_acquisitions": dict(modality="MR", n_timepoints=3, intercept=0.0,
                               extra={"TemporalPositionIdentifier": None, "NumberOfTemporalPositions": None,
                                      "AcquisitionNumber": lambda t, z: t + 1}),
    "ct_multiframe": dict(multiframe=True, order="descending"),
    "mr_multiframe_4d_oblique": dict(multiframe=True, modality="MR", orientation=OBLIQUE, n_timepoints=2,
                                     intercept=0.0),
    "ct_big_endian": dict(transfer_syntax=ExplicitVRBigEndian),
    "ct_implicit_vr": dict(transfer_syntax=ImplicitVRLittleEndian),
    "ct_rle": dict(transfer_syntax=RLELossless),
    "ct_jpeg2000": dict(transfer_syntax=JPEG2000Lossless, rows=32, cols=32, multiframe=True),
}


@pytest.mark.parametrize("name", sorted(DCM2NIIX_CASES))
def test_matches_dcm2niix_voxel_for_voxel(dicom_series, dcm2niix, name):
    paths = dicom_series(name, **DCM2NIIX_CASES[name])
    array, affine, meta = load_series(paths)
    (nifti,) = dcm2niix(paths[0].parent)
    distance, value_diff = world_mismatch(array, affine, nifti)
    assert distance < 1e-3 and value_diff == 0.0
    assert meta["status"] == "ok" and meta["problems"] == ""


def test_ge_style_fmri_without_temporal_ids_is_4d_like_dcm2niix(dicom_series, dcm2niix):
    # 15 slices x 10 volumes, nothing but InstanceNumber tells the volumes apart (the export that MONAI's
    # PydicomReader turned into one 150-slice volume)
    paths = dicom_series("ge_fmri", modality="MR", rows=16, cols=16, n_slices=15, n_timepoints=10, intercept=0.0,
                         slice_spacing=5.0, pixel_spacing=(3.75, 3.75), manufacturer="GE MEDICAL SYSTEMS",
                         repetition_time=2000.0, extra={"TemporalPositionIdentifier": None,
                                                        "NumberOfTemporalPositions": None,
                                                        "AcquisitionTime": "093000", "ContentTime": "093000"})
    array, affine, meta = load_series(paths)
    assert array.shape == (16, 16, 15, 10) and meta["pixdim"][3] == pytest.approx(5.0)
    assert meta["temporal_spacing"] == pytest.approx(2.0) and "ordered by InstanceNumber" in meta["problems"]
    (nifti,) = dcm2niix(paths[0].parent)
    distance, value_diff = world_mismatch(array, affine, nifti)
    assert distance < 1e-3 and value_diff == 0.0


def test_values_dtype_and_geometry_equal_the_synthetic_truth(dicom_series):
    data = default_pattern(1, 6, 24, 20, seed=4)
    array, affine, meta = load_series(dicom_series("t", data=data, slope=1.0, intercept=-1024.0,
                                                   orientation="coronal", order="interleaved"))
    assert array.dtype == np.int16 and array.shape == (20, 24, 6)
    np.testing.assert_array_equal(array, data[0].transpose(2, 1, 0).astype(np.int32) - 1024)
    cos, positions = series_geometry(n_slices=6, orientation="coronal")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    np.testing.assert_allclose(lps[:3, 3], positions[0], atol=1e-6)
    np.testing.assert_allclose((lps @ [3, 5, 4, 1])[:3], positions[4] + 3 * 0.7 * cos[:3] + 5 * 0.7 * cos[3:],
                               atol=1e-6)
    np.testing.assert_allclose(meta["pixdim"][1:4], (0.7, 0.7, 2.5))
    assert meta["spatial_shape"].tolist() == [20, 24, 6] and np.isnan(meta["original_channel_dim"])
    assert meta["modality"] == "CT" and meta["time_axis"] == -1 and np.isnan(meta["temporal_spacing"]) and np.array_equal(meta["affine"], affine)


def test_float_rescale_gives_float32_and_integer_rescale_keeps_integers(dicom_series):
    array, _, _ = load_series(dicom_series("f", slope=0.25, intercept=1.5))
    assert array.dtype == np.float32
    array, _, _ = load_series(dicom_series("i", dtype="uint16", slope=1.0, intercept=0.0, modality="MR"))
    assert array.dtype == np.uint16
    big = default_pattern(1, 2, 4, 4, dtype="int16") + 32000
    array, _, _ = load_series(dicom_series("w", data=big, slope=2.0, intercept=-1024.0))
    assert array.dtype == np.int32 and array.max() == 2 * int(big.max()) - 1024  # no int16 overflow


def test_4d_meta_follows_monai_nibabel_reader(dicom_series):
    array, _, meta = load_series(dicom_series("m", modality="MR", n_timepoints=4, intercept=0.0,
                                              repetition_time=1500.0))
    assert array.shape == (20, 24, 6, 4)
    assert meta["original_channel_dim"] == -1 and meta["time_axis"] == 3 and meta["n_timepoints"] == 4
    assert meta["spatial_shape"].tolist() == [20, 24, 6] and meta["temporal_spacing"] == pytest.approx(1.5)
    assert meta["pixdim"][4] == pytest.approx(1.5)


def test_missing_slice_matches_dcm2niix_equalised_except_the_filled_slice(dicom_series, dcm2niix):
    paths = dicom_series("gap", n_slices=8, missing_slices=(3,))
    array, affine, meta = load_series(paths)
    assert meta["status"] == "warning" and "1 missing slice" in meta["problems"]
    assert array.shape[2] == 8 and (array[:, :, 3] == array[:, :, [0, 1, 2, 4, 5, 6, 7]].min()).all()
    equalised = next(p for p in dcm2niix(paths[0].parent) if "_Eq" in p.name)
    keep = [0, 1, 2, 4, 5, 6, 7]
    shifted = affine.copy()
    distance, value_diff = world_mismatch(array[:, :, keep[:3]], shifted, equalised)
    assert distance < 1e-3 and value_diff == 0.0
    shifted[:3, 3] = affine[:3, 3] + 4 * affine[:3, 2]
    distance, value_diff = world_mismatch(array[:, :, 4:], shifted, equalised)
    assert distance < 1e-3 and value_diff == 0.0


def test_gantry_tilt_keeps_true_positions_and_dcm2niix_voxels(dicom_series, dcm2niix):
    paths = dicom_series("tilt", gantry_tilt_deg=12.0, slice_spacing=2.0)
    array, affine, meta = load_series(paths)
    assert "gantry tilt 12.00 degrees" in meta["problems"]
    cos, positions = series_geometry(n_slices=6, orientation="axial", gantry_tilt_deg=12.0, slice_spacing=2.0)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    for z in range(6):  # every voxel where the scanner put it: row/column steps and the sheared slice step
        np.testing.assert_allclose((lps @ [2, 7, z, 1])[:3], positions[z] + 2 * 0.7 * cos[:3] + 7 * 0.7 * cos[3:],
                                   atol=1e-6)
    plain = next(p for p in dcm2niix(paths[0].parent) if "_Tilt" not in p.name)
    ref = np.asarray(nibabel.load(str(plain)).get_fdata())
    assert any(np.array_equal(array, flipped) for flipped in (ref, ref[:, ::-1], ref[::-1], ref[::-1, ::-1]))


def test_monochrome1_is_inverted(dicom_series, dcm2niix):
    paths = dicom_series("m1", modality="MR", dtype="uint16", intercept=0.0, photometric="MONOCHROME1")
    array, affine, meta = load_series(paths)
    ref_array, ref_affine, _ = load_series(dicom_series("m2", modality="MR", dtype="uint16", intercept=0.0))
    np.testing.assert_array_equal(array, 65535 - ref_array)
    assert meta["photometric_original"] == "MONOCHROME1"
    (nifti,) = dcm2niix(paths[0].parent)  # dcm2niix keeps stored values: compare after undoing our inversion
    distance, value_diff = world_mismatch(65535 - array.astype(np.int64), affine, nifti)
    assert distance < 1e-3 and value_diff == 0.0


def test_projection_radiograph_is_2d_and_inverted(tmp_path):
    data = (np.arange(12 * 10).reshape(12, 10) * 7 % 4096).astype(np.uint16)
    array, affine, meta = load_series([write_single_image(tmp_path / "dx.dcm", rows=12, cols=10, data=data,
                                                          pixel_spacing=(0.2, 0.3))])
    assert array.shape == (10, 12) and meta["spatial_shape"].tolist() == [10, 12]
    np.testing.assert_array_equal(array, (4095 - data).T)  # MONOCHROME1, 12 bits stored
    np.testing.assert_allclose(np.abs(np.diag(affine))[:2], (0.3, 0.2))


def _synthetic_mosaic(tmp_path: Path, n_slices: int = 9, tile: int = 20) -> tuple[Path, np.ndarray]:
    """A Siemens mosaic built from nibabel's sample (real CSA header) with known tiles."""
    ds = pydicom.dcmread(NIBABEL_DICOM / "0.dcm")
    tiles = int(np.ceil(np.sqrt(n_slices)))
    slices = default_pattern(1, n_slices, tile, tile, dtype="uint16", seed=2)[0]
    mosaic = np.zeros((tiles * tile, tiles * tile), dtype=np.uint16)
    for k in range(n_slices):
        r, c = divmod(k, tiles)
        mosaic[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = slices[k]
    ds.Rows, ds.Columns = mosaic.shape
    ds.PixelData = mosaic.tobytes()
    ds[0x0019, 0x100A].value = n_slices
    out = tmp_path / "mosaic"
    out.mkdir()
    ds.save_as(out / "mosaic.dcm")
    return out / "mosaic.dcm", slices


def test_siemens_mosaic_tiles_become_slices(tmp_path):
    path, slices = _synthetic_mosaic(tmp_path)
    array, affine, meta = load_series([path])
    assert array.shape == (20, 20, 9) and meta["series_kind"] == "mosaic"
    np.testing.assert_array_equal(array, slices.transpose(2, 1, 0))
    header = read_header(path)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, 2]), header.spacing_between_slices or header.slice_thickness)
    # (geometry against dcm2niix is checked on the untouched samples below: dcm2niix reads slice count and
    # positions from the CSA header, which still describes the original 256 x 256 sample here)


def test_nibabel_mosaic_pair_is_4d_with_dcm2niix_geometry(tmp_path, dcm2niix):
    folder = tmp_path / "mos"
    folder.mkdir()
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(NIBABEL_DICOM / name, folder / name)
    array, affine, meta = load_series(sorted(folder.iterdir()))
    assert array.shape == (36, 36, 48, 2)
    (nifti,) = dcm2niix(folder)
    distance, _ = world_mismatch(array, affine, nifti)
    assert distance < 1e-3  # (values differ: the sample's 256 columns do not hold 7 tiles of 36 evenly)


def test_unsupported_transfer_syntax_names_the_file_and_decoder(tmp_path):
    (path,) = write_series(tmp_path / "s", SeriesSpec(rows=8, cols=8, n_slices=1))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder
    ds.PixelData = encapsulate([b"\x00" * 64])
    bad = tmp_path / "mpeg.dcm"
    ds.save_as(bad)
    with pytest.raises(DicomReadError, match="MPEG2") as info:
        load_series([bad])
    assert str(bad) in str(info.value) and "gdcm" in str(info.value)


def test_error_status_series_and_several_series_are_refused(tmp_path):
    a = write_series(tmp_path / "a", SeriesSpec(rows=4, cols=4, n_slices=4, series_uid="1.2.9", study_uid="1.2.3"))
    b = write_series(tmp_path / "b", SeriesSpec(rows=4, cols=4, n_slices=2, series_uid="1.2.9", study_uid="1.2.3", seed=3))
    (series,) = assemble_series(read_header(p) for p in a + b)
    with pytest.raises(DicomReadError, match="duplicate slice positions"):
        load_series(series)
    c = write_series(tmp_path / "c", SeriesSpec(rows=4, cols=4, n_slices=2, series_description="T2 AX", seed=4))
    with pytest.raises(DicomReadError, match="holds 2 series.*T2 AX.*series.json"):
        load_series(a + c)


def test_truncated_pixel_data_is_a_named_error(tmp_path):
    (path,) = write_series(tmp_path / "s", SeriesSpec(rows=16, cols=16, n_slices=1))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(DicomReadError, match="truncated|cannot decode") as info:
        load_series([path])
    assert str(path) in str(info.value)


def _public_test_files() -> list[Path]:
    files = [Path(p) for p in get_testdata_files()] + sorted(NIBABEL_DICOM.iterdir())
    files += sorted(Path(data_path).iterdir())
    return [p for p in files if p.is_file()]


def test_every_pydicom_and_nibabel_sample_reads_or_raises_a_named_error():
    outcome = {"read": 0, "named": 0}
    failures = []
    for path in _public_test_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the samples are made to trigger pydicom's warnings
                array, affine, meta = load_volume(path)
        except (DicomReadError, ImageReadError) as e:
            outcome["named"] += 1
            if str(path) not in str(e) and path.name not in str(e):
                failures.append(f"{path.name}: error does not name the file: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            failures.append(f"{path.name}: {type(e).__name__}: {e}")
            continue
        outcome["read"] += 1
        if affine.shape != (4, 4) or not np.isfinite(affine).all() or array.size == 0:
            failures.append(f"{path.name}: bad result {array.shape} {affine}")
    assert not failures, failures
    assert outcome["read"] >= 30 and outcome["named"] >= 30


def test_a_mosaic_whose_tiles_hold_no_voxels_is_refused_with_a_reason(tmp_path):
    """A fuzzed mosaic (Rows 1, pixel data to match) was written as a 64x0x35 NIfTI: refuse it instead."""
    path, _ = _synthetic_mosaic(tmp_path)
    ds = pydicom.dcmread(path)
    ds.Rows = 1
    ds.PixelData = ds.PixelData[: 2 * ds.Columns]
    ds.save_as(path)
    (series,) = assemble_series([read_header(path)])
    assert series.status == "error" and re.search(r"degenerate volume \d+x0x\d+", series.problems[0])
    with pytest.raises(DicomReadError, match="degenerate volume"):
        load_series([path])


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_display_window_of_a_radiograph_matches_pydicoms_voi(tmp_path, function, photometric):
    """With display_window, a CR/DX image is shown through its WindowCenter/Width as a viewer does (pydicom's
    apply_voi_lut is the reference), on [0, 1]; MONOCHROME1 inverted afterwards so that bright means dense."""
    from pydicom.pixels import apply_voi_lut

    path = write_single_image(tmp_path / "dx.dcm", rows=12, cols=10, photometric=photometric)
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1800, 1200, function
    ds.save_as(path)
    image, _, meta = load_series([path], display_window=True)
    reference = apply_voi_lut(ds.pixel_array.astype(float), ds) / (2 ** ds.BitsStored - 1)
    if photometric == "MONOCHROME1":
        reference = 1.0 - reference
    np.testing.assert_allclose(image, reference.T, atol=2e-3)
    assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert meta["display_window"] == f"window 1800/1200 {function}"
    plain, _, plain_meta = load_series([path])
    assert plain.dtype != np.float32 and "display_window" not in plain_meta


SCANNED_CASES = {**DCM2NIIX_CASES, "m1": dict(modality="MR", dtype="uint16", intercept=0.0, photometric="MONOCHROME1"),
                 "signed_12_bit": dict(extra={"BitsStored": 12})}


@pytest.mark.parametrize("name", sorted(SCANNED_CASES))
def test_scanned_headers_load_the_same_volume_without_a_second_parse(dicom_series, monkeypatch, name):
    from transforms.dicom import volume
    from transforms.dicom.scan_fields import read_header_fast

    paths = dicom_series(name, **SCANNED_CASES[name])
    expected, expected_affine, _ = load_series(paths)
    (info,) = assemble_series(read_header_fast(p) for p in paths)
    native = [h for h in info.headers if h.pixel_offset is not None]
    parsed: list[str] = []
    real_parse = volume.parse_file
    monkeypatch.setattr(volume, "parse_file", lambda path, **kw: parsed.append(path) or real_parse(path, **kw))
    array, affine, _ = load_series(info)
    assert array.dtype == expected.dtype and np.array_equal(array, expected)
    np.testing.assert_array_equal(affine, expected_affine)
    assert len(parsed) == len(info.files) - len(native)  # the files with an offset are not parsed again
    if name in ("ct_axial_ascending", "m1", "ct_float_rescale", "signed_12_bit", "mr_oblique"):
        assert len(native) == len(paths)  # plain single-frame native files: every one read at its offset


def test_a_file_cut_after_its_scan_is_parsed_again_and_named(tmp_path):
    from transforms.dicom.scan_fields import read_header_fast

    paths = write_series(tmp_path / "s", SeriesSpec(rows=16, cols=16, n_slices=3))
    (info,) = assemble_series(read_header_fast(p) for p in paths)
    assert all(h.pixel_offset is not None for h in info.headers)
    cut = Path(info.files[1])
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(DicomReadError, match="truncated|cannot decode") as raised:
        load_series(info)
    assert str(cut) in str(raised.value)
