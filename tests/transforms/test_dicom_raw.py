"""Tests of transforms.dicom.raw and the fast read path of transforms.dicom.volume: same values as pydicom."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless

import transforms.dicom.volume as dicom_volume
from pipeline.demo.synthetic_dicom import SeriesFiles, SeriesSpec, series_args, write_series, write_single_image
from transforms.dicom.fields import header_from_values
from transforms.dicom.headers import read_header
from transforms.dicom.native import native_pixels
from transforms.dicom.raw import NotFast, parse_file
from transforms.dicom.volume import load_series, read_slice_file

PIXEL_CASES = {
    "int16": dict(dtype="int16"),
    "uint16": dict(dtype="uint16", intercept=0.0),
    "uint8_odd_matrix": dict(dtype="uint8", rows=5, cols=7, intercept=0.0),
    "int16_implicit_vr": dict(dtype="int16", transfer_syntax=ImplicitVRLittleEndian),
    "int16_slope_intercept": dict(dtype="int16", slope=0.5, intercept=-10.25),
    "uint16_monochrome1": dict(dtype="uint16", intercept=0.0, photometric="MONOCHROME1"),
}


def _fast_and_pydicom(path: Path) -> tuple[np.ndarray, np.ndarray]:
    parsed, buf, _ = parse_file(str(path), whole=True)
    v = parsed.values
    fast = native_pixels(parsed, buf, v["Rows"], v["Columns"], int(v.get("NumberOfFrames") or 1))
    reference = pydicom.dcmread(path).pixel_array
    return fast, reference.reshape(fast.shape)


@pytest.mark.parametrize("name", sorted(PIXEL_CASES))
def test_native_pixels_equal_pydicom_pixel_array(tmp_path, name):
    kwargs = dict(rows=12, cols=10, n_slices=3, seed=3) | PIXEL_CASES[name]
    for path in write_series(tmp_path / name, *series_args(**kwargs)):
        fast, reference = _fast_and_pydicom(path)
        assert fast.dtype == reference.dtype and fast.flags.writeable
        np.testing.assert_array_equal(fast, reference)
        header, values, stored = read_slice_file(path)
        assert stored is not None and header == read_header(path)
        assert values["PhotometricInterpretation"] == PIXEL_CASES[name].get("photometric", "MONOCHROME2")


@pytest.mark.parametrize("signed", [0, 1])
def test_unused_high_bits_are_cleared_or_sign_extended_like_pydicom(tmp_path, signed):
    path = write_series(tmp_path / "s", SeriesSpec(rows=6, cols=5, n_slices=1,
                                                   dtype="int16" if signed else "uint16"))[0]
    ds = pydicom.dcmread(path)
    raw = np.random.default_rng(1).integers(0, 1 << 16, size=(6, 5), dtype=np.uint16)  # garbage above bit 12
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, signed
    ds.PixelData = raw.tobytes()
    ds.save_as(path)
    fast, reference = _fast_and_pydicom(path)
    np.testing.assert_array_equal(fast, reference)
    assert fast.min() < 0 if signed else fast.max() < 4096


def test_other_encodings_and_damaged_pixels_are_not_read_fast(tmp_path):
    cases = {
        "big_endian": write_series(tmp_path / "be", SeriesSpec(rows=8, cols=8, n_slices=1),
                                   SeriesFiles(transfer_syntax=ExplicitVRBigEndian)),
        "rle": write_series(tmp_path / "rle", SeriesSpec(rows=8, cols=8, n_slices=1),
                            SeriesFiles(transfer_syntax=RLELossless)),
        "enhanced_multiframe": write_series(tmp_path / "mf", SeriesSpec(rows=8, cols=8, n_slices=3),
                                            SeriesFiles(multiframe=True)),
    }
    for name, (path, *_) in cases.items():
        header, values, stored = read_slice_file(path)
        assert stored is None and isinstance(values, pydicom.Dataset), name
        assert header == read_header(path)
    path = write_series(tmp_path / "cut", SeriesSpec(rows=8, cols=8, n_slices=1))[0]
    path.write_bytes(path.read_bytes()[:-20])
    parsed, buf, _ = parse_file(str(path), whole=True)
    with pytest.raises(NotFast):
        native_pixels(parsed, buf, 8, 8, 1)
    lut = write_single_image(tmp_path / "lut.dcm", photometric="MONOCHROME2")
    ds = pydicom.dcmread(lut)
    item = pydicom.Dataset()
    item.LUTDescriptor, item.ModalityLUTType = [4, 0, 16], "HU"
    item.LUTData = np.array([0, 10, 20, 30], dtype="<u2").tobytes()
    ds.ModalityLUTSequence = [item]
    ds.save_as(lut)
    with pytest.raises(NotFast):
        parse_file(str(lut), whole=True)


def test_header_from_values_equals_read_header(tmp_path):
    for path in [*write_series(tmp_path / "ct", SeriesSpec(rows=8, cols=8, n_slices=2,
                                                           series_description="Abd ünicode")),
                 write_single_image(tmp_path / "dx.dcm")]:
        parsed, _, _ = parse_file(str(path))
        assert header_from_values(parsed.values, path, transfer_syntax=parsed.transfer_syntax) == read_header(path)


@pytest.mark.parametrize("kwargs", [dict(), dict(dtype="uint16", intercept=0.0, photometric="MONOCHROME1"),
                                    dict(slope=0.5, intercept=-10.25, order="interleaved", n_timepoints=2)],
                         ids=["ct", "monochrome1", "4d_float_rescale"])
def test_load_series_fast_path_equals_the_pydicom_path(tmp_path, monkeypatch, kwargs):
    paths = write_series(tmp_path / "s", *series_args(rows=10, cols=9, n_slices=5, seed=5, **kwargs))
    fast = load_series(paths)

    def refuse(*_args, **_kwargs):
        raise NotFast

    monkeypatch.setattr(dicom_volume, "parse_file", refuse)
    slow = load_series(paths)
    assert fast[0].dtype == slow[0].dtype
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    assert fast[2].keys() == slow[2].keys()


def test_shared_decode_memo_gives_the_same_values(tmp_path):
    """Files decoded with one memo (as a scan worker does) give each file's own values, not a neighbour's."""
    paths = write_series(tmp_path / "ct", SeriesSpec(rows=8, cols=8, n_slices=6, seed=5))
    paths += write_series(tmp_path / "mr", SeriesSpec(rows=8, cols=8, n_slices=4, seed=6, modality="MR"),
                          SeriesFiles(transfer_syntax=ImplicitVRLittleEndian))
    memo: dict = {}
    for path in paths:
        alone = parse_file(str(path))[0].values
        shared = parse_file(str(path), memo=memo)[0].values
        assert shared == alone
        assert shared["ImagePositionPatient"] == [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
    assert len({parse_file(str(p), memo=memo)[0].values["SOPInstanceUID"] for p in paths}) == len(paths)
    # values repeated across files were decoded once: the memo holds fewer entries than elements read
    assert len(memo) < sum(len(parse_file(str(p))[0].values) for p in paths) / 2


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")  # pydicom's own test file, read as it can
def test_instance_uids_equal_pydicom_on_the_pydicom_test_files():
    """Every little-endian Part 10 file shipped with pydicom: the byte reader's two UIDs are pydicom's, or it
    declines (NotFast / NeedMore) and the caller asks pydicom."""
    from transforms.dicom.raw import NeedMore, instance_uids

    read = declined = 0
    for name in sorted((Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm")):
        data = Path(name).read_bytes()
        try:
            reference = pydicom.dcmread(name, force=True)
        except Exception:  # noqa: BLE001 - files pydicom itself cannot read are not a reference
            continue
        try:
            sop, series = instance_uids(data)
        except (NotFast, NeedMore):
            declined += 1
            continue
        read += 1
        expected = (str(reference.get("SOPInstanceUID", "")), str(reference.get("SeriesInstanceUID", "")))
        assert (sop, series) == expected, name
    assert read >= 50 and declined < read


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_instance_uids_of_written_files_and_cut_bytes(tmp_path, syntax):
    from transforms.dicom.raw import NeedMore, instance_uids

    kwargs = {} if syntax is None else {"transfer_syntax": syntax}
    path = write_series(tmp_path / "s", *series_args(rows=4, cols=4, n_slices=1, **kwargs))[0]
    data, ds = path.read_bytes(), pydicom.dcmread(path)
    if syntax == ExplicitVRBigEndian:
        with pytest.raises(NotFast):
            instance_uids(data)
        return
    assert instance_uids(data) == (ds.SOPInstanceUID, ds.SeriesInstanceUID)
    with pytest.raises(NeedMore):
        instance_uids(data[:200])
    with pytest.raises(NotFast):
        instance_uids(data[128:])  # no preamble: pydicom decides
