"""Series assembly cases where files disagree about which volume they belong to, each checked against dcm2niix.

Each case is built with pydicom, converted by ``radpipe convert`` and by the ``dcm2niix`` wheel: the same
number of volumes, the same shapes, the same values at the same world coordinates (to 1e-3 mm).
"""
from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_reference import dcm2niix_binary, world_mismatch

from pipeline.demo.synthetic_dicom import SeriesFiles, SeriesSpec, write_series
from pipeline.ingest.convert import convert_export
from pipeline.pseudonym import Pseudonymiser

SECRET = b"convert-cases-secret-convert-cases-secret"
STUDY = "1.2.826.0.1.3680043.8.498.1600"
SERIES = "1.2.826.0.1.3680043.8.498.1601"


def _convert(export: Path, out: Path) -> list[dict[str, str]]:
    summary = convert_export(export, out, workers=1, pseudonymiser=Pseudonymiser(SECRET))
    with summary.index_csv.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _dcm2niix(export: Path, out: Path, *args: str) -> list[Path]:
    binary = dcm2niix_binary()
    if binary is None:
        pytest.skip("dcm2niix binary not found (pip install dcm2niix); reference comparison skipped")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(binary), "-z", "y", "-b", "n", *args, "-o", str(out), str(export)], check=True,
                   capture_output=True, timeout=120)
    return sorted(out.glob("*.nii.gz"))


def _assert_same_volumes(rows: list[dict[str, str]], out: Path, references: list[Path]) -> None:
    """Every reference volume is one of ours (shape, world coordinates, values) and we wrote no other."""
    ours = [out / r["nifti"] for r in rows if r["nifti"]]
    assert len(ours) == len(references), [r["problems"] for r in rows]
    unmatched = list(ours)
    for reference in references:
        theirs = nib.load(reference)
        for path in unmatched:
            mine = nib.load(path)
            if sorted(mine.shape[:3]) != sorted(theirs.shape[:3]) or mine.shape[3:] != theirs.shape[3:]:
                continue
            distance, difference = world_mismatch(np.asarray(mine.get_fdata()), mine.affine, reference)
            if distance < 1e-3 and difference < 1e-3 * max(1.0, float(np.abs(theirs.get_fdata()).max())):
                unmatched.remove(path)
                break
        else:
            raise AssertionError(f"no volume of ours matches dcm2niix's {reference.name} {theirs.shape}")


def test_files_of_one_series_uid_with_different_series_numbers_are_not_stacked(tmp_path):
    """dcm2niix never stacks files whose SeriesNumber differs (nine volumes rewritten by a tool)."""
    export = tmp_path / "export"
    for number in (1, 2, 3):
        write_series(export / f"s{number}", SeriesSpec(
            modality="MR", rows=8, cols=8, n_slices=4, intercept=0.0, series_uid=SERIES, study_uid=STUDY,
            series_number=number, seed=number))
    rows = _convert(export, tmp_path / "ours")
    assert len(rows) == 3 and all(r["status"] == "warning" for r in rows)
    assert all("series split into 3 volumes by series (mixed series numbers)" in r["problems"] for r in rows)
    _assert_same_volumes(rows, tmp_path / "ours", _dcm2niix(export, tmp_path / "ref"))


def _rewrite(paths: list[Path], folder: Path, pixel_add: int = 0, **tags) -> list[Path]:
    """Copies of ``paths`` in ``folder`` with ``tags`` changed and ``pixel_add`` added to every stored value."""
    folder.mkdir(parents=True)
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        if pixel_add:
            ds.PixelData = (ds.pixel_array + pixel_add).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / path.name)
        out.append(folder / path.name)
    return out


def test_files_sharing_sop_instance_uids_but_not_pixels_are_different_images(tmp_path):
    """Same SeriesInstanceUID and SOPInstanceUIDs, other SeriesNumber and pixels: two volumes, not one."""
    export = tmp_path / "export"
    original = write_series(export / "a", SeriesSpec(modality="MR", rows=8, cols=8, n_slices=3, intercept=0.0,
                                                     series_uid=SERIES, study_uid=STUDY, series_number=1))
    _rewrite(original, export / "b", pixel_add=100, SeriesNumber=2)
    _rewrite(original, export / "copies", InstitutionName="ELSEWHERE")  # the same images: copies, dropped
    rows = _convert(export, tmp_path / "ours")
    assert len(rows) == 2
    assert sorted("3 file(s) are copies of an image already seen" in r["problems"] for r in rows) == [False, True]
    _assert_same_volumes(rows, tmp_path / "ours", _dcm2niix(export / "a", tmp_path / "ra")
                         + _dcm2niix(export / "b", tmp_path / "rb"))


def _enhanced_run(export: Path, per_frame_positions: bool) -> None:
    """Three Enhanced MR files of one series, one volume (4 frames) each, AcquisitionNumber 1..3."""
    for acquisition in (1, 2, 3):
        (path,) = write_series(export / f"vol{acquisition}", SeriesSpec(
            modality="MR", rows=8, cols=8, n_slices=4, intercept=0.0, series_uid=SERIES, study_uid=STUDY,
            manufacturer="SIEMENS", repetition_time=2000.0, seed=acquisition,
            extra={"AcquisitionNumber": acquisition, "InstanceNumber": acquisition,
                   "SoftwareVersions": "syngo MR XA30"}), SeriesFiles(multiframe=True))
        if not per_frame_positions:  # the first frame's position and the spacing only, as some exports write
            ds = pydicom.dcmread(path)
            first = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
            for frame in ds.PerFrameFunctionalGroupsSequence:
                del frame.PlanePositionSequence
            ds.ImagePositionPatient = first
            ds.ImageOrientationPatient = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0] \
                .ImageOrientationPatient
            ds.SpacingBetweenSlices = 2.5
            ds.save_as(path)


def test_enhanced_files_one_per_time_point_are_stacked_into_4d(tmp_path):
    """Newer Siemens (XA) scanners write an fMRI run as one enhanced file per volume: one 4D volume."""
    export = tmp_path / "export"
    _enhanced_run(export, per_frame_positions=False)
    rows = _convert(export, tmp_path / "ours")
    assert len(rows) == 1 and rows[0]["shape"] == "8x8x4x3", rows
    assert "3 multi-frame files of one geometry stacked as 3 time points" in rows[0]["problems"]
    _assert_same_volumes(rows, tmp_path / "ours", _dcm2niix(export, tmp_path / "ref"))


def test_enhanced_files_with_per_frame_positions_are_stacked_too(tmp_path):
    """With per-frame positions this dcm2niix writes one 3D file per enhanced file; radpipe stacks them
    (the issue's rule) and each time point equals dcm2niix's volume of that file."""
    export = tmp_path / "export"
    _enhanced_run(export, per_frame_positions=True)
    (row,) = _convert(export, tmp_path / "ours")
    ours = nib.load(tmp_path / "ours" / row["nifti"])
    assert ours.shape == (8, 8, 4, 3)
    for t in range(3):
        (reference,) = _dcm2niix(export / f"vol{t + 1}", tmp_path / f"ref{t}")
        distance, difference = world_mismatch(np.asarray(ours.dataobj)[..., t], ours.affine, reference)
        assert distance < 1e-3 and difference == 0


def test_a_file_without_patient_id_gets_a_placeholder_key(tmp_path):
    export = tmp_path / "export"
    write_series(export, SeriesSpec(rows=4, cols=4, n_slices=2, patient={"PatientID": ""}))
    (row,) = _convert(export, tmp_path / "ours")
    assert row["patient_key"].startswith("P-") and Path(row["nifti"]).name.startswith("P-")
    again = tmp_path / "again"
    assert _convert(export, again)[0]["patient_key"] == row["patient_key"]  # stable


def _philips_series(folder: Path) -> list[Path]:
    """A Philips MR series with a DICOM rescale and the private floating-point scale slope (2005,100E)."""
    paths = write_series(folder, SeriesSpec(modality="MR", rows=8, cols=8, n_slices=3, slope=2.0, intercept=-10.0,
                                            manufacturer="Philips Medical Systems", series_uid=SERIES,
                                            study_uid=STUDY))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x0E, "FL", 0.25)
        ds.save_as(path)
    return paths


@pytest.mark.parametrize("scaling, dcm2niix_flag", [("display", "n"), ("fp", "y")])
def test_philips_scaling_matches_dcm2niix_either_way(tmp_path, scaling, dcm2niix_flag):
    """DICOM values by default; with --philips-scaling fp, dcm2niix's default: (stored x RS + RI) / (RS x SS)."""
    import json

    export = tmp_path / "export"
    paths = _philips_series(export)
    summary = convert_export(export, tmp_path / "ours", workers=1, pseudonymiser=Pseudonymiser(SECRET),
                             philips_scaling=scaling)
    (row,) = summary.rows
    _assert_same_volumes(summary.rows, tmp_path / "ours", _dcm2niix(export, tmp_path / "ref", "-p", dcm2niix_flag))
    side = json.loads((tmp_path / "ours" / row["sidecar"]).read_text())
    assert side["UsePhilipsFloatNotDisplayScaling"] == int(scaling == "fp")
    divisor = 2.0 * 0.25 if scaling == "fp" else 1.0
    expected = np.concatenate([(pydicom.dcmread(p).pixel_array.astype(float) * 2.0 - 10.0) / divisor for p in paths])
    ours = nib.load(tmp_path / "ours" / row["nifti"]).get_fdata()
    np.testing.assert_allclose(np.sort(ours.ravel()), np.sort(expected.ravel()), rtol=1e-6)


_DIRECTIONS = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)]
_B_VALUES = [0.0, 1000.0, 1000.0, 1000.0, 1000.0]  # the last: the derived trace, b > 0 and no direction


@pytest.mark.parametrize("tags", ["public", "philips-private"])
def test_the_trace_volume_of_a_philips_dwi_series_is_dropped_like_dcm2niix(tmp_path, tags):
    export = tmp_path / "export"
    extra = {"DiffusionBValue": lambda t, z: _B_VALUES[t],
             "DiffusionGradientOrientation": lambda t, z: list(_DIRECTIONS[t])} if tags == "public" else {}
    paths = write_series(export, SeriesSpec(modality="MR", rows=8, cols=8, n_slices=2, n_timepoints=5,
                                            intercept=0.0, manufacturer="Philips Medical Systems",
                                            series_uid=SERIES, study_uid=STUDY, extra=extra))
    if tags == "philips-private":
        for path in paths:
            ds = pydicom.dcmread(path)
            t = int(ds.TemporalPositionIdentifier) - 1
            ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", _B_VALUES[t])
            block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
            for element, value in zip((0xB0, 0xB1, 0xB2), _DIRECTIONS[t]):
                block.add_new(element, "FL", value)
            ds.save_as(path)
    rows = _convert(export, tmp_path / "ours")
    assert len(rows) == 1 and rows[0]["shape"] == "8x8x2x4", rows
    assert "1 volume(s) are derived trace/ADC images" in rows[0]["problems"]
    references = [p for p in _dcm2niix(export, tmp_path / "ref") if not p.name.endswith("_ADC.nii.gz")]
    _assert_same_volumes(rows, tmp_path / "ours", references)


def test_a_dwi_series_of_b0_and_one_trace_volume_keeps_both(tmp_path):
    """dcm2niix's exception: a series left with fewer than two volumes keeps them all."""
    export = tmp_path / "export"
    write_series(export, SeriesSpec(modality="MR", rows=8, cols=8, n_slices=2, n_timepoints=3, intercept=0.0,
                                    manufacturer="Philips Medical Systems", extra={
                                        "DiffusionBValue": lambda t, z: [0.0, 1000.0, 1000.0][t],
                                        "DiffusionGradientOrientation": lambda t, z: [0.0, 0.0, 0.0]}))
    (row,) = _convert(export, tmp_path / "ours")
    assert row["shape"] == "8x8x2x3" and "trace" not in row["problems"]
