"""Tests of transforms.dicom.headers: header-only reading, non-images and damaged files."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.demo.synthetic_dicom import (
    SeriesFiles,
    SeriesSpec,
    write_dicomdir,
    write_non_image,
    write_series,
    write_single_image,
    write_sr,
)
from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.headers import read_header
from transforms.dicom.slice_header import SliceHeader, header_from_fields


def test_header_fields_of_an_mr_slice(tmp_path):
    paths = write_series(tmp_path, SeriesSpec(
        modality="MR", rows=12, cols=10, n_slices=3, n_timepoints=2, dtype="uint16", intercept=0.0,
        pixel_spacing=(0.9, 0.8), slice_spacing=4.0, slice_thickness=3.0, echo_time=25.0, repetition_time=1500.0,
        series_number=7, series_description="BOLD", manufacturer="GE MEDICAL SYSTEMS", institution="Clinic",
        patient={"PatientID": "PID7", "AccessionNumber": "ACC7"}, extra={"BodyPartExamined": "HEAD"},
    ), SeriesFiles(file_names="instance"))
    h = read_header(paths[4])
    assert (h.modality, h.rows, h.cols, h.series_number, h.series_description) == ("MR", 12, 10, 7, "BOLD")
    assert h.pixel_spacing == (0.9, 0.8) and h.slice_thickness == 3.0
    assert h.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0) and h.position == (0.0, 0.0, 4.0)
    assert (h.echo_time, h.repetition_time, h.temporal_position, h.instance_number) == (25.0, 1500.0, 2, 5)
    assert (h.patient_id, h.accession_number, h.body_part, h.institution) == ("PID7", "ACC7", "HEAD", "Clinic")
    assert h.manufacturer == "GE MEDICAL SYSTEMS" and h.bits_allocated == 16 and h.photometric == "MONOCHROME2"
    assert not h.is_multiframe and not h.is_mosaic and h.frames == ()


def test_enhanced_multiframe_header_has_per_frame_geometry(tmp_path):
    (path,) = write_series(tmp_path, SeriesSpec(rows=8, cols=8, n_slices=4, slope=0.5, intercept=-100.0),
                           SeriesFiles(multiframe=True))
    h = read_header(path)
    assert h.is_multiframe and h.number_of_frames == 4 and len(h.frames) == 4
    assert [f.position for f in h.frames] == [(0.0, 0.0, 2.5 * z) for z in range(4)]
    assert h.frames[0].orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0) and h.frames[0].pixel_spacing == (0.7, 0.7)
    assert (h.frames[0].slope, h.frames[0].intercept) == (0.5, -100.0)
    assert (h.slope, h.intercept) == (0.5, -100.0)


def test_projection_radiograph_has_no_patient_geometry(tmp_path):
    h = read_header(write_single_image(tmp_path / "dx.dcm", rows=20, cols=16, pixel_spacing=(0.2, 0.2)))
    assert (h.modality, h.photometric, h.view_position) == ("DX", "MONOCHROME1", "PA")
    assert h.position is None and h.orientation is None and h.pixel_spacing == (0.2, 0.2)


@pytest.mark.parametrize("writer, what", [
    (lambda p: write_sr(p), "structured report"),
    (lambda p: write_non_image(p, "RTSTRUCT"), "RT structure set"),
    (lambda p: write_non_image(p, "PR"), "presentation state"),
    (lambda p: write_dicomdir(p), "DICOMDIR"),
])
def test_non_images_raise_not_an_image(tmp_path, writer, what):
    path = writer(tmp_path / "obj.dcm")
    with pytest.raises(NotAnImageError, match=what) as info:
        read_header(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DicomReadError)


def test_damaged_and_foreign_files_raise_dicom_read_error(tmp_path):
    (path,) = write_series(tmp_path / "s", SeriesSpec(rows=32, cols=32, n_slices=1))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 700])
    with pytest.raises(DicomReadError, match="truncated") as info:
        read_header(truncated)
    assert not isinstance(info.value, NotAnImageError) and str(truncated) in str(info.value)
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n" * 20)
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        read_header(text)
    gz = tmp_path / "image.dcm.gz"
    gz.write_bytes(b"\x1f\x8b" + b"\x00" * 300)
    with pytest.raises(DicomReadError, match="gunzip"):
        read_header(gz)
    with pytest.raises(DicomReadError, match="not found"):
        read_header(tmp_path / "absent.dcm")
    header_cut = tmp_path / "header_cut.dcm"
    header_cut.write_bytes(data[:200])
    with pytest.raises(DicomReadError):
        read_header(header_cut)


def test_header_from_fields_equals_the_dataclass_built_header(tmp_path):
    path = write_series(tmp_path / "ct", SeriesSpec(rows=8, cols=8, n_slices=1, seed=2))[0]
    header = read_header(path)
    fields = dataclasses.asdict(header) | {"frames": header.frames}
    fast = header_from_fields(fields)
    assert fast == header and hash(fast) == hash(header) and type(fast) is SliceHeader
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.rows = 3
    fields["rows"] = 99
    assert header.rows == 8 and fast.rows == 8  # the header holds its own copy of the fields
    with pytest.raises(TypeError, match="unexpected keyword"):
        header_from_fields({**fields, "not_a_field": 1})


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the values cut short, as it should
def test_every_cut_of_an_image_file_is_reported_as_damaged_never_as_a_non_image(tmp_path):
    """A fuzz run listed files cut inside their header as 'non-image object': a cut file is damaged."""
    from transforms.dicom.scan_fields import read_fields_fast

    (path,) = write_series(tmp_path / "s", SeriesSpec(rows=16, cols=16, n_slices=1))
    data = path.read_bytes()
    pixel_start = data.index(b"\xe0\x7f\x10\x00")
    for cut in range(140, pixel_start + 8, 37):
        damaged = tmp_path / f"cut{cut}.dcm"
        damaged.write_bytes(data[:cut])
        for read in (read_header, read_fields_fast):
            with pytest.raises(DicomReadError) as info:
                read(damaged)
            assert not isinstance(info.value, NotAnImageError), (cut, str(info.value))
            assert "damaged" in str(info.value) or "truncated" in str(info.value), (cut, str(info.value))


def test_pixel_data_longer_than_the_header_says_is_refused(tmp_path):
    """Rows changed to 1 by a damaged header: 64 times more pixel data than Rows x Columns says."""
    import pydicom

    from transforms.dicom.scan_fields import read_fields_fast

    (path,) = write_series(tmp_path / "s", SeriesSpec(rows=16, cols=16, n_slices=1))
    ds = pydicom.dcmread(path)
    ds.Rows = 1
    ds.save_as(tmp_path / "rows1.dcm")
    for read in (read_header, read_fields_fast):
        with pytest.raises(DicomReadError, match=r"pixel data holds 512 bytes but 1x16x1 frames .* need 32"):
            read(tmp_path / "rows1.dcm")
