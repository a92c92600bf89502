"""Tests of transforms.limits: headers that claim too much are refused before anything is decoded."""
from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from pipeline.errors import ConfigError, DicomReadError, ImageReadError
from transforms.dicom.headers import read_header
from transforms.dicom.series import assemble_series
from transforms.limits import (
    DEFAULT_MAX_VOXELS,
    ImageRefusedError,
    ImageTooLargeError,
    check_image_header,
    max_voxels,
    parse_max_voxels,
)
from transforms.readers import RadpipeReader, load_volume

ROOT = Path(__file__).resolve().parents[2]
MIB_OF_ZEROS = gzip.compress(bytes(1 << 20), 9)  # one gzip member: 1 MiB of zeros in about 1 KiB


def nifti_head(shape: tuple[int, ...], dtype: type = np.int16, vox_offset: float = 352.0,
               extensions: bytes = b"") -> bytes:
    """A NIfTI-1 header (348 bytes), the extension flag and ``extensions``."""
    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    block = bytearray(header.binaryblock)
    struct.pack_into("<f", block, 108, vox_offset)
    return bytes(block) + (b"\x01\0\0\0" + extensions if extensions else b"\0\0\0\0")


def write_bomb(path: Path, head: bytes, mib_of_zeros: int) -> Path:
    """``head`` then ``mib_of_zeros`` MiB of zeros, gzip-compressed about 1000:1 (concatenated members)."""
    path.write_bytes(gzip.compress(head, 9) + MIB_OF_ZEROS * mib_of_zeros)
    return path


def load_with_monai(path: Path):
    from monai.transforms import LoadImage

    return LoadImage(reader=RadpipeReader(), image_only=True)(str(path))


@pytest.fixture
def low_limit(monkeypatch):
    monkeypatch.setenv("RADPIPE_MAX_VOXELS", "1e6")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if nibabel opens the image or reads its data."""
    def boom(*args, **kwargs):
        raise AssertionError("nibabel was asked to read the image")

    monkeypatch.setattr(nibabel, "load", boom)
    monkeypatch.setattr(nibabel.arrayproxy, "array_from_file", boom)


@pytest.mark.parametrize("text, value", [("1000000", 10**6), ("1e6", 10**6), ("2.5e8", 250_000_000),
                                         ("1_000_000", 10**6), (" 42 ", 42), ("536870912", DEFAULT_MAX_VOXELS)])
def test_limit_values_parse(text, value):
    assert parse_max_voxels(text) == value


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5", "lots", "1e", "inf", "nan", "0x10", "1e100", "5 GB"])
def test_bad_limit_values_are_a_clear_error(text):
    with pytest.raises(ConfigError, match=r"RADPIPE_MAX_VOXELS=.*positive whole number"):
        parse_max_voxels(text)


def test_limit_comes_from_the_environment(monkeypatch, nifti_file):
    monkeypatch.delenv("RADPIPE_MAX_VOXELS", raising=False)
    assert max_voxels() == DEFAULT_MAX_VOXELS == 512 * 512 * 2048
    monkeypatch.setenv("RADPIPE_MAX_VOXELS", "lots")
    with pytest.raises(ConfigError, match="RADPIPE_MAX_VOXELS='lots'"):
        load_volume(nifti_file)


def test_header_claiming_too_much_is_refused_naming_file_shape_and_limit(tmp_path, low_limit, no_decoding):
    path = tmp_path / "claim.nii.gz"
    path.write_bytes(gzip.compress(nifti_head((200, 200, 100)), 9))
    assert path.stat().st_size < 100
    with pytest.raises(ImageTooLargeError) as caught:
        load_volume(path)
    text = str(caught.value)
    assert str(path) in text and "200x200x100 int16" in text and "1,000,000 voxels" in text
    assert "4,000,000 voxels" in text and "7.6 MiB" in text and "raise RADPIPE_MAX_VOXELS" in text
    assert "\n" not in text and isinstance(caught.value, ImageReadError)
    with pytest.raises(ImageTooLargeError):  # MONAI's LoadImage must not fall back to nibabel / ITK
        load_with_monai(path)
    with pytest.raises(ImageTooLargeError):
        check_image_header(path)


def test_gzip_bomb_is_refused_before_decoding(tmp_path, low_limit, no_decoding):
    path = write_bomb(tmp_path / "bomb.nii.gz", nifti_head((200, 200, 100)), 8)  # 4e6 voxels, 8 MiB of zeros
    assert path.stat().st_size < 20_000
    with pytest.raises(ImageTooLargeError, match="200x200x100 int16"):
        load_volume(path)
    with pytest.raises(ImageTooLargeError):
        load_with_monai(path)


@pytest.mark.parametrize("name, extensions, vox_offset, reason", [
    ("size_below_8", struct.pack("<ii", 7, 0), 352 + 1600, "claims 7 bytes"),  # nibabel would read(-1): everything
    ("size_beyond_data", struct.pack("<ii", 1 << 30, 0), 352 + 1600, "claims 1073741824 bytes"),
    ("no_room", struct.pack("<ii", 32, 0), 0, "leaves no room"),
    ("huge_offset", struct.pack("<ii", 32, 0), 2.0e9, "over 64.0 MiB"),
])
def test_extension_sizes_that_would_read_the_whole_stream_are_refused(tmp_path, no_decoding, name, extensions,
                                                                      vox_offset, reason):
    path = write_bomb(tmp_path / f"{name}.nii.gz", nifti_head((4, 4, 4), vox_offset=vox_offset,
                                                              extensions=extensions), 16)
    with pytest.raises(ImageRefusedError, match=reason):
        load_volume(path)


def test_negative_sizes_are_refused(tmp_path, no_decoding):
    block = bytearray(nifti_head((4, 4, 4)))
    struct.pack_into("<hhhh", block, 40, 3, -1800, -1800, 1000)  # dim: a product of 3.24e9 voxels
    path = tmp_path / "negative.nii.gz"
    path.write_bytes(gzip.compress(bytes(block), 9))
    with pytest.raises(ImageRefusedError, match="negative size -1800x-1800x1000"):
        load_volume(path)


def test_uncompressed_nifti_shorter_than_its_header_is_refused_naming_both_sizes(tmp_path):
    path = tmp_path / "short.nii"
    path.write_bytes(nifti_head((100, 100, 10)) + bytes(1000))
    with pytest.raises(ImageRefusedError) as caught:
        load_volume(path)
    text = str(caught.value)
    assert str(path) in text and "100x100x10 int16" in text and "200,352 bytes" in text and "1,352 bytes" in text
    with pytest.raises(ImageRefusedError, match="truncated"):
        load_with_monai(path)


def test_stream_longer_than_claimed_reads_only_the_claim(tmp_path):
    # a guarantee of nibabel's (it reads exactly the claimed bytes), kept here: passes on the old code too
    data = np.arange(32 * 32 * 16, dtype=np.int16).reshape(16, 32, 32).T
    path = write_bomb(tmp_path / "long.nii.gz", nifti_head(data.shape) + data.tobytes(order="F"), 64)
    tracemalloc.start()
    try:
        array, _, _ = load_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(array, data)
    assert peak < 4 * data.nbytes + (2 << 20)  # 32 KiB claimed; the 64 MiB that follow are never decoded


ITK_HEADERS = {
    "mha": "ObjectType = Image\nNDims = 3\nDimSize = 200 200 100\nElementType = MET_SHORT\nElementDataFile = LOCAL\n",
    "nrrd": "NRRD0004\ntype: short\ndimension: 3\nsizes: 200 200 100\nendian: little\nencoding: raw\n\n",
}


@pytest.mark.parametrize("suffix", sorted(ITK_HEADERS))
def test_itk_header_claiming_too_much_is_refused(tmp_path, low_limit, suffix):
    path = tmp_path / f"big.{suffix}"
    path.write_bytes(ITK_HEADERS[suffix].encode() + bytes(16))
    with pytest.raises(ImageTooLargeError) as caught:
        load_volume(path)
    assert str(path) in str(caught.value) and "200x200x100 16-bit signed integer" in str(caught.value)
    with pytest.raises(ImageTooLargeError):
        load_with_monai(path)


def test_dicom_series_over_the_limit_is_refused_before_reading_pixels(ct_series, monkeypatch):
    from transforms.dicom import volume

    folder = ct_series[0].parent  # 20 columns x 24 rows x 6 files
    monkeypatch.setenv("RADPIPE_MAX_VOXELS", str(20 * 24 * 6 - 1))
    with pytest.raises(ImageTooLargeError) as caught:
        load_volume(folder)
    text = str(caught.value)
    assert str(folder) in text and "20x24x6x1 (Columns x Rows x frames x samples)" in text and "2,879 voxels" in text
    assert isinstance(caught.value, DicomReadError)
    with pytest.raises(ImageTooLargeError):
        load_with_monai(folder)  # not retried with MONAI's pydicom / ITK readers
    (series,) = assemble_series([read_header(p) for p in ct_series])  # what a scan reference loads

    def boom(path):
        raise AssertionError("pixels read before the size check")

    monkeypatch.setattr(volume, "read_slice_file", boom)
    with pytest.raises(ImageTooLargeError):
        volume.load_series(series)


@pytest.mark.parametrize("syntax", ["native", "rle"])
def test_dicom_file_claiming_a_huge_matrix_is_refused_before_decoding(dicom_series, low_limit, syntax):
    (path,) = dicom_series(syntax, n_slices=1, rows=32, cols=32,
                           **({"transfer_syntax": RLELossless} if syntax == "rle" else {}))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 4000, 3000
    ds.save_as(path)
    with pytest.raises(ImageTooLargeError, match="3000x4000x1x1"):
        load_volume(path)


def test_dicom_pixel_data_shorter_than_the_header_says_is_truncated(dicom_series):
    (path,) = dicom_series("short", n_slices=1)  # 20 x 24, 16 bits
    ds = pydicom.dcmread(path)
    ds.Rows = 48
    ds.save_as(path)
    with pytest.raises(DicomReadError) as caught:
        load_volume(path)
    text = str(caught.value)
    assert str(path) in text and "truncated" in text and "960 bytes" in text and "need 1,920" in text
    assert "48x20x1x1x16" in text


def test_wild_slice_position_does_not_fill_a_gap_without_bound(dicom_series):
    # 4 slices 1 mm apart, the last at 1e6 mm: filling the gap would mean 1e6 slices
    paths = dicom_series("gap", rows=8, cols=8, n_slices=4, slice_spacing=1.0,
                         extra={"ImagePositionPatient": lambda t, z: [0.0, 0.0, float(z) if z < 3 else 1e6]})
    (series,) = assemble_series([read_header(p) for p in paths])
    status, n_filled, shape, problems = series.status, len(series.filled_slices), series.shape, "; ".join(series.problems)
    assert status == "error" and n_filled == 0 and shape == (8, 8, 4)  # before: warning, 999,997 slices filled
    assert "slice position is wrong" in problems
    with pytest.raises(DicomReadError, match="slice position is wrong"):
        load_volume(paths[0].parent)


def test_images_under_the_limit_load_as_before(tmp_path, monkeypatch, ct_series, nifti_file):
    # a regression guard (passes on the old code too): the limit set to exactly each image's voxels
    import SimpleITK as sitk

    data = np.asarray(nibabel.load(str(nifti_file)).dataobj)
    plain = tmp_path / "plain.nii"
    nibabel.save(nibabel.load(str(nifti_file)), str(plain))
    mha = tmp_path / "image.mha"
    sitk.WriteImage(sitk.ReadImage(str(nifti_file)), str(mha))
    monkeypatch.setenv("RADPIPE_MAX_VOXELS", str(data.size))
    for path in (nifti_file, plain, mha):
        array, _, _ = load_volume(path)
        np.testing.assert_array_equal(array, data)
        np.testing.assert_array_equal(np.asarray(load_with_monai(path)), data)
    assert check_image_header(nifti_file).shape == (8, 7, 5) and check_image_header(mha).shape == (8, 7, 5)
    assert check_image_header(ct_series[0]) is None
    monkeypatch.setenv("RADPIPE_MAX_VOXELS", str(20 * 24 * 6))
    array, _, meta = load_volume(ct_series[0].parent)
    assert array.shape == (20, 24, 6) and meta["status"] == "ok"


CHILD = textwrap.dedent("""
    import json, resource, sys
    from transforms.readers import RadpipeReader, load_volume
    from monai.transforms import LoadImage

    def hwm():
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024

    def vm():
        return int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024

    before = hwm()
    # a safety net should this regress: fail with MemoryError rather than take the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (vm() + (4 << 30), resource.RLIM_INFINITY))
    errors = []
    for path in sys.argv[1:]:
        for load in (load_volume, LoadImage(reader=RadpipeReader(), image_only=True)):
            try:
                load(path)
                errors.append("loaded")
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
    print(json.dumps({"before_mib": before, "after_mib": hwm(), "errors": errors}))
""")


def test_bombs_keep_a_process_small(tmp_path):
    claim = tmp_path / "claim.nii.gz"  # 1800 x 1800 x 1000 int16: 6 GiB claimed by 57 bytes
    claim.write_bytes(gzip.compress(nifti_head((1800, 1800, 1000)), 9))
    bomb = write_bomb(tmp_path / "bomb.nii.gz", nifti_head((1024, 1024, 1024), np.uint8), 1024)  # 1 GiB in 1 MB
    assert claim.stat().st_size < 100 and bomb.stat().st_size < 1_200_000
    env = {k: v for k, v in os.environ.items() if k != "RADPIPE_MAX_VOXELS"}  # the default limit
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", CHILD, str(claim), str(bomb)], capture_output=True, text=True,
                          env=env, timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for error, shape in zip(result["errors"], ["1800x1800x1000 int16"] * 2 + ["1024x1024x1024 uint8"] * 2):
        assert error.startswith("ImageTooLargeError") and shape in error and "536,870,912 voxels" in error
    # peak RSS (VmHWM): importing torch and MONAI costs about 500 MB; refusing both bombs adds next to nothing
    assert result["after_mib"] - result["before_mib"] < 100
