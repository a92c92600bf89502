"""Tests of transforms.dicom.scan_fields: the fast header read gives the loader's header or its error."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless

import transforms.dicom.scan_fields as scan_fields
from pipeline.demo.synthetic_dicom import (
    SeriesSpec,
    series_args,
    write_dicomdir,
    write_non_image,
    write_series,
    write_single_image,
)
from transforms.dicom.headers import read_header
from transforms.dicom.scan_fields import read_fields_fast, read_header_fast
from transforms.dicom.slice_header import header_from_fields

# (folder, write_series arguments, whether the fast path reads it without pydicom)
SERIES = [
    ("ct", {}, True),
    ("implicit", {"transfer_syntax": ImplicitVRLittleEndian}, True),
    ("rle", {"transfer_syntax": RLELossless}, True),
    ("mr4d", {"modality": "MR", "n_timepoints": 2, "echo_time": 30.0, "repetition_time": 2000.0, "intercept": 0.0,
              "dtype": "uint16"}, True),
    ("tilt", {"gantry_tilt_deg": 12.0, "order": "interleaved"}, True),
    ("utf8", {"patient": {"PatientName": "Müller^Jörg"}, "extra": {"SpecificCharacterSet": "ISO_IR 192"}}, True),
    ("odd", {"extra": {"SeriesDescription": "  padded ", "ImageType": ["DERIVED", "SECONDARY"],
                       "ProtocolName": "a\\b", "SliceThickness": ""}}, True),
    ("bigendian", {"transfer_syntax": ExplicitVRBigEndian}, False),
    ("multiframe", {"multiframe": True}, False),
]


def _outcome(reader, path: Path):
    try:
        return reader(path)
    except Exception as e:  # noqa: BLE001 - the error itself is compared
        return type(e).__name__, str(e)


@pytest.fixture
def fallbacks(monkeypatch):
    calls: list[str] = []
    real = scan_fields.read_header
    monkeypatch.setattr(scan_fields, "read_header", lambda p: (calls.append(str(p)), real(p))[1])
    return calls


@pytest.mark.parametrize("name,kwargs,fast", SERIES, ids=[s[0] for s in SERIES])
def test_same_header_as_the_loader(tmp_path, fallbacks, name, kwargs, fast):
    files = write_series(tmp_path / name, *series_args(rows=12, cols=10, n_slices=3, seed=len(name), **kwargs))
    for path in files:
        assert read_header_fast(path) == read_header(path)
    assert (fallbacks == []) == fast


def test_other_objects_and_damaged_files_give_the_loaders_result(tmp_path, fallbacks):
    slice_file = write_series(tmp_path / "ct", SeriesSpec(rows=12, cols=10, n_slices=2))[0]
    data = slice_file.read_bytes()
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    paths = {
        "dx": write_single_image(tmp_path / "dx.dcm"),
        "sr": write_non_image(tmp_path / "sr.dcm", "SR"),
        "rtstruct": write_non_image(tmp_path / "rt.dcm", "RTSTRUCT"),
        "pr": write_non_image(tmp_path / "pr.dcm", "PR"),
        "dicomdir": write_dicomdir(tmp_path / "DICOMDIR"),
    }
    for name, content in {"cut_in_header": data[: pixel_tag // 2], "cut_in_pixels": data[:-40],
                          "no_preamble": data[128:], "text": b"not a dicom file\n", "empty": b""}.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    for name, path in paths.items():
        ours, theirs = _outcome(read_header_fast, path), _outcome(read_header, path)
        assert ours == theirs, name
    assert _outcome(read_header_fast, paths["sr"])[0] == "NotAnImageError"
    assert "truncated" in _outcome(read_header_fast, paths["cut_in_pixels"])[1]
    assert str(paths["dx"]) not in fallbacks and str(paths["sr"]) not in fallbacks


def test_files_of_a_series_share_the_first_files_fields_and_keep_their_own(tmp_path, monkeypatch):
    """With a memo, a series' later files reuse the fields of its first one, computed once, and still equal
    the loader's header: per-slice values (position, instance, rescale, times) are each file's own."""
    built: list[str] = []
    real = scan_fields.header_fields
    monkeypatch.setattr(scan_fields, "header_fields", lambda v, p, **kw: (built.append(str(p)), real(v, p, **kw))[1])
    per_slice = {"RescaleSlope": lambda t, z: 0.5 + z, "RescaleIntercept": lambda t, z: -z,
                 "AcquisitionTime": lambda t, z: f"1200{z:02d}", "AcquisitionNumber": lambda t, z: 1 + z % 2}
    pet = write_series(tmp_path / "pet", SeriesSpec(rows=8, cols=8, n_slices=4, seed=1, extra=per_slice))
    mr4d = write_series(tmp_path / "mr", SeriesSpec(rows=8, cols=8, n_slices=3, n_timepoints=2, modality="MR",
                                                    intercept=0.0, echo_time=30.0, seed=2))
    other = write_series(tmp_path / "other", SeriesSpec(rows=8, cols=8, n_slices=2, seed=3, series_description="other"))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(pet[0].read_bytes()[:-40])  # the same elements as the series, cut inside its pixels
    memo: dict = {}
    for path in [*pet, *mr4d, *other]:
        assert header_from_fields(read_fields_fast(path, memo)) == read_header(path)
    assert len(built) == 3  # once per series
    assert {read_header(p).slope for p in pet} == {0.5, 1.5, 2.5, 3.5}
    assert "truncated" in _outcome(lambda p: read_fields_fast(p, memo), cut)[1]


def test_the_header_tables_agree_with_pydicoms_dictionary():
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.uid import UID

    from transforms.dicom.header_values import HEADER_KEYWORDS
    from transforms.dicom.sop import _COMMON_NAMES

    for keyword, (tag, vr) in HEADER_KEYWORDS.items():
        assert (tag, vr) == (tag_for_keyword(keyword), dictionary_VR(tag)), keyword
    for uid, name in _COMMON_NAMES.items():
        assert UID(uid).name == name


def test_scanning_an_export_of_plain_files_imports_neither_pydicom_nor_numpy(tmp_path):
    """pydicom and numpy cost a scan 0.2 s of start-up: the byte reader needs neither, not even to
    tell a text file from DICOM (damaged files still go to pydicom, which says what is wrong)."""
    import subprocess
    import sys

    from pipeline.demo.synthetic_dicom import SeriesFiles, SeriesSpec, write_series

    write_series(tmp_path / "ct", SeriesSpec(modality="CT", rows=8, cols=8, n_slices=3), SeriesFiles())
    (tmp_path / "ct" / "notes.txt").write_text("not an image\n")
    code = f"""
import pathlib, sys
from pipeline.errors import PipelineError
from transforms.dicom.scan_fields import read_fields_fast
for p in sorted(pathlib.Path({str(tmp_path)!r}).rglob("*")):
    if not p.is_file():
        continue
    print(p.name)
    try:
        read_fields_fast(p, {{}})
    except PipelineError as e:
        print(type(e).__name__)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydicom", "numpy"))[:3])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
    dicom_files = sorted(p.name for p in (tmp_path / "ct").iterdir() if p.name != "notes.txt")
    assert len(dicom_files) == 3
    assert out.splitlines()[:-1] == [*dicom_files, "notes.txt", "DicomReadError"]
