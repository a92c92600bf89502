"""Tests of transforms.readers: RadpipeReader in LoadImage/LoadImaged, series references, NIfTI/NRRD/MHA."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.errors import DicomReadError, ImageReadError
from pipeline.demo.synthetic_dicom import write_sr
from transforms.dicom.headers import read_header
from transforms.dicom.series import assemble_series
from transforms.dicom.volume import load_series
from pipeline.ingest.rows import write_series_ref
from transforms.dicom.reference import read_series_ref
from transforms.readers import RadpipeReader, load_volume


def test_load_image_reads_a_dicom_folder_with_stray_files(ct_series):
    from monai.transforms import LoadImage

    folder = ct_series[0].parent
    (folder / "README.txt").write_text("export notes")
    write_sr(folder / "report.dcm")
    image = LoadImage(reader=RadpipeReader(), image_only=True, ensure_channel_first=True)(str(folder))
    expected, affine, _ = load_series(ct_series)
    assert tuple(image.shape) == (1, 20, 24, 6)
    np.testing.assert_array_equal(image[0].numpy(), expected)
    np.testing.assert_allclose(image.affine.numpy(), affine)
    assert image.meta["filename_or_obj"] == str(folder) and image.meta["space"] == "RAS"


def test_load_imaged_4d_series_puts_time_on_the_channel(dicom_series):
    from monai.transforms import LoadImaged

    paths = dicom_series("fmri", modality="MR", n_timepoints=3, intercept=0.0, repetition_time=2000.0)
    out = LoadImaged("image", reader=RadpipeReader(), ensure_channel_first=True)({"image": str(paths[0].parent)})
    image = out["image"]
    assert tuple(image.shape) == (3, 20, 24, 6)
    assert image.meta["time_axis"] == 3 and image.meta["temporal_spacing"] == pytest.approx(2.0)


def test_series_reference_round_trip_and_part_selection(dicom_series, tmp_path):
    uid = "1.2.3.77"
    e1 = dicom_series("e1", modality="MR", intercept=0.0, series_uid=uid, study_uid="1.2.3", extra={"EchoNumbers": 1})
    e2 = dicom_series("e2", modality="MR", intercept=0.0, series_uid=uid, study_uid="1.2.3", extra={"EchoNumbers": 2},
                      seed=1)
    found = {s.uid: s for s in assemble_series(read_header(p) for p in e1 + e2)}
    ref = write_series_ref(tmp_path / "index.series" / "one.series.json", found[f"{uid}_e2"])
    data = json.loads(ref.read_text())
    assert data["format"] == "radpipe.series-ref" and data["part"] == "e2" and len(data["files"]) == 6
    assert all(not f.startswith("/") for f in data["files"])  # relative: export and index move together
    assert sorted(read_series_ref(ref)) == sorted(p.resolve() for p in e2)
    array, affine, meta = load_volume(ref)
    expected, expected_affine, _ = load_series(e2)
    np.testing.assert_array_equal(array, expected)
    assert meta["filename_or_obj"] == str(ref)
    # one reference listing both echoes' files still picks echo 2 by its part
    both = write_series_ref(tmp_path / "both.series.json", e1 + e2, meta={"note": "test"})
    data = json.loads(both.read_text())
    data["part"] = "e2"
    both.write_text(json.dumps(data))
    np.testing.assert_array_equal(load_volume(both)[0], expected)


def test_series_reference_errors(dicom_series, tmp_path):
    paths = dicom_series("s")
    ref = write_series_ref(tmp_path / "s.series.json", paths)
    paths[2].unlink()
    with pytest.raises(DicomReadError, match="1 of 6 listed files are missing"):
        read_series_ref(ref)
    bad = tmp_path / "bad.series.json"
    bad.write_text('{"files": []}')
    with pytest.raises(DicomReadError, match="non-empty 'files'"):
        read_series_ref(bad)
    bad.write_text("{not json")
    with pytest.raises(DicomReadError, match="cannot read series reference"):
        load_volume(bad)


def test_folder_with_two_series_lists_them_and_how_to_pick(dicom_series, tmp_path):
    dicom_series("export/a", series_description="T1 SAG", modality="MR", intercept=0.0)
    dicom_series("export/b", series_description="FLAIR AX", modality="MR", intercept=0.0, seed=2)
    with pytest.raises(DicomReadError) as info:
        load_volume(tmp_path / "export")
    message = str(info.value)
    assert "holds 2 series" in message and "T1 SAG" in message and "FLAIR AX" in message
    assert ".series.json" in message and "Doe" not in message


def test_nifti_matches_nibabel_and_monai(nifti_file):
    from monai.transforms import LoadImage

    array, affine, meta = load_volume(nifti_file)
    img = nib.load(str(nifti_file))
    np.testing.assert_array_equal(array, np.asanyarray(img.dataobj))
    np.testing.assert_allclose(affine, img.affine)
    assert array.dtype == np.int16 and meta["pixdim"][1:4].tolist() == [1.0, 1.5, 3.0]
    ours = LoadImage(reader=RadpipeReader(), image_only=True)(str(nifti_file))
    monai = LoadImage(reader="NibabelReader", image_only=True)(str(nifti_file))
    np.testing.assert_array_equal(ours.numpy(), monai.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), monai.affine.numpy())
    assert ours.meta["spatial_shape"].tolist() == monai.meta["spatial_shape"].tolist()


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_itk_formats_give_the_nifti_geometry(nifti_file, tmp_path, suffix):
    import SimpleITK as sitk

    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(nifti_file)), str(path))
    array, affine, meta = load_volume(path)
    ref_array, ref_affine, _ = load_volume(nifti_file)
    np.testing.assert_array_equal(array, ref_array)
    np.testing.assert_allclose(affine, ref_affine, atol=1e-5)
    assert meta["spatial_shape"].tolist() == [8, 7, 5] and meta["space"] == "RAS"


def test_dicom_and_nifti_of_one_series_agree(dicom_series, tmp_path):
    paths = dicom_series("s", orientation="sagittal")
    array, affine, meta = load_volume(paths[0].parent)
    nifti = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), str(nifti))
    array2, affine2, meta2 = load_volume(nifti)
    np.testing.assert_array_equal(array, array2)
    np.testing.assert_allclose(affine, affine2, atol=1e-5)
    assert set(meta) == set(meta2)  # the same metadata shape for every format


def test_list_of_images_is_stacked_as_channels(nifti_file, tmp_path):
    other = tmp_path / "other.nii.gz"
    img = nib.load(str(nifti_file))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) * 2, img.affine), str(other))
    reader = RadpipeReader()
    array, meta = reader.get_data(reader.read([str(nifti_file), str(other)]))
    assert array.shape == (2, 8, 7, 5) and meta["original_channel_dim"] == 0
    np.testing.assert_array_equal(array[1], array[0] * 2)


def test_verify_suffix_and_missing_paths(tmp_path, ct_series):
    reader = RadpipeReader()
    assert reader.verify_suffix([str(ct_series[0].parent), "a.nii.gz", "b.series.json", "c.nrrd", "IM0001"])
    assert reader.verify_suffix("photo.png") and not reader.verify_suffix("clip.gif")
    with pytest.raises(ImageReadError, match="no such file"):
        load_volume(tmp_path / "absent.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DicomReadError, match="holds no files"):
        load_volume(empty)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="cannot read NIfTI"):
        load_volume(broken)


def test_metadata_collates_with_tracking_on(ct_series, nifti_file):
    """A batch of a DICOM series and a NIfTI file collates with MetaTensor metadata (no None values)."""
    from monai.data import list_data_collate
    from monai.transforms import Compose, LoadImaged, Resized

    chain = Compose([
        LoadImaged("image", reader=RadpipeReader(), image_only=True, ensure_channel_first=True),
        Resized("image", spatial_size=(8, 8, 4)),
    ])
    items = [chain({"image": str(ct_series[0].parent)}), chain({"image": str(nifti_file)})]
    batch = list_data_collate(items)
    assert tuple(batch["image"].shape) == (2, 1, 8, 8, 4)
    assert batch["image"].meta["time_axis"].tolist() == [-1, -1]
