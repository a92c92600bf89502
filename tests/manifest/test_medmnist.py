from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ImageReadError
from pipeline.manifest.reading import load_manifest
from pipeline.manifest.validation import validate_manifest
from pipeline.manifest.medmnist import class_names, dataset_name, import_medmnist
from pipeline.manifest.medmnist_recipe import recipe

SIZES = {"train": 6, "val": 3, "test": 4}


def _npz(path, image_shape, n_labels=1, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, (n, n_labels), dtype=np.uint8)
    np.savez(path, **arrays)
    return arrays


def _loaded_picture(path):
    """What the eval chain makes of an image file: (x, y), x along the picture's columns."""
    from transforms.chains import eval_chain
    from transforms.config import TransformsConfig

    t = TransformsConfig(spatial_dims=2, size=(28, 28), orientation="", intensity="none", channels="grey",
                         resize="crop-pad")
    return np.asarray(eval_chain(t)({"image": str(path), "label": 0})["image"][0]).astype(np.uint8)


def _check_round_trip(out, arrays, classes, rgb=False):
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert len(manifest) == sum(SIZES.values())
    for _, row in manifest.iterrows():
        split, index = row["patient_id"].split("_")
        assert row["split"] == split
        img = nib.load(str(out / row["image"]))
        data = np.asarray(img.dataobj)
        assert data.dtype == np.uint8 and np.allclose(img.affine, np.eye(4))
        expected = arrays[f"{split}_images"][int(index)]
        if expected.ndim == 3 and not rgb:
            assert np.array_equal(data, expected)  # a 3D volume as it is
        else:  # 2D: x along the columns (a picture's layout), so viewers show the image upright
            assert np.array_equal(data[:, :, 0, :].swapaxes(0, 1) if rgb else data.T, expected)
        label = int(arrays[f"{split}_labels"][int(index), 0])
        assert row["label"] == classes[label]


def test_2d_grey_round_trip_with_known_classes(tmp_path):
    arrays = _npz(tmp_path / "pneumoniamnist.npz", (28, 28))
    result = import_medmnist(tmp_path / "pneumoniamnist.npz", tmp_path / "out")
    assert (result.task, result.classes, result.spatial_dims, result.channels) == (
        "binary", ("normal", "pneumonia"), 2, 1)
    assert result.counts == SIZES
    _check_round_trip(tmp_path / "out", arrays, result.classes)
    upright = _loaded_picture(tmp_path / "out" / "images" / "train_00000.nii.gz")
    assert np.array_equal(upright, arrays["train_images"][0].T)  # (x, y) as a PNG of the same image loads
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels == {"task": "binary", "classes": ["normal", "pneumonia"], "label_columns": ["label"]}
    cfg = load_config(tmp_path / "out" / "config.yaml")
    assert cfg.data.classes == ("normal", "pneumonia") and cfg.transforms.spatial_dims == 2
    assert result.size == (28, 28)  # the files; the model input is the recipe's (test_medmnist_recipe.py)
    assert cfg.transforms.size == tuple(recipe(2, SIZES["train"], (28, 28))["transforms"]["size"])
    df = load_manifest(tmp_path / "out" / "manifest.csv", cfg.data)
    assert validate_manifest(df, cfg) == []


def test_2d_rgb_round_trip_and_loads_as_three_channels(tmp_path):
    from monai.transforms import LoadImaged

    arrays = _npz(tmp_path / "bloodmnist_64.npz", (10, 12, 3), n_classes=8)
    result = import_medmnist(tmp_path / "bloodmnist_64.npz", tmp_path / "out")
    assert result.name == "bloodmnist" and result.channels == 3 and result.size == (12, 10)  # (x, y): W, H
    assert result.classes[0] == "basophil" and len(result.classes) == 8
    _check_round_trip(tmp_path / "out", arrays, result.classes, rgb=True)
    loaded = LoadImaged("image", ensure_channel_first=True, image_only=True)(
        {"image": str(tmp_path / "out" / "images" / "val_00001.nii.gz")})["image"]
    assert tuple(loaded.shape) == (3, 12, 10, 1)
    assert np.array_equal(loaded[..., 0].permute(2, 1, 0).numpy(), arrays["val_images"][1])


def test_3d_round_trip_loads_channel_first(tmp_path):
    from monai.transforms import LoadImaged

    arrays = _npz(tmp_path / "adrenalmnist3d.npz", (8, 9, 10))
    result = import_medmnist(tmp_path / "adrenalmnist3d.npz", tmp_path / "out", fmt="nifti-raw")
    assert (result.spatial_dims, result.channels, result.classes) == (3, 1, ("normal", "hyperplasia"))
    _check_round_trip(tmp_path / "out", arrays, result.classes)
    loaded = LoadImaged("image", ensure_channel_first=True, image_only=True)(
        {"image": str(tmp_path / "out" / "images" / "test_00002.nii")})["image"]
    assert tuple(loaded.shape) == (1, 8, 9, 10)
    assert np.array_equal(loaded[0].numpy(), arrays["test_images"][2])
    assert load_config(tmp_path / "out" / "config.yaml").transforms.size == (8, 9, 10)


def test_multilabel_writes_one_column_per_class(tmp_path):
    arrays = _npz(tmp_path / "chestmnist.npz", (6, 6), n_labels=14)
    result = import_medmnist(tmp_path / "chestmnist.npz", tmp_path / "out")
    assert result.task == "multilabel" and result.label_columns == result.classes
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert "label" not in manifest.columns
    assert list(manifest.columns[1:3]) == ["atelectasis", "cardiomegaly"]
    train = manifest[manifest["split"] == "train"]
    assert np.array_equal(train[list(result.classes)].to_numpy(), arrays["train_labels"])
    cfg = load_config(tmp_path / "out" / "config.yaml")
    assert cfg.data.task == "multilabel" and cfg.data.label_columns == result.classes


def test_unknown_file_gets_generic_class_names(tmp_path):
    _npz(tmp_path / "mydata.npz", (5, 5), n_classes=3, seed=1)
    result = import_medmnist(tmp_path / "mydata.npz", tmp_path / "out", limit=2)
    assert result.task == "multiclass" and result.classes[0] == "class_0"
    assert result.counts == {"train": 2, "val": 2, "test": 2}
    assert len(list((tmp_path / "out" / "images").iterdir())) == 6


def test_names_and_class_table():
    assert dataset_name("/x/organamnist_224.npz") == "organamnist"
    assert dataset_name("breastmnist.npz") == "breastmnist"
    assert class_names("breastmnist", 2) == ("malignant", "normal_or_benign")
    assert class_names("octmnist", 3) == ("choroidal_neovascularization", "diabetic_macular_edema", "drusen",
                                          "normal")  # a subset missing the last class keeps the table
    assert class_names("breastmnist", 3) == ("class_0", "class_1", "class_2")
    assert class_names("chestmnist", 3, multilabel=True) == ("class_0", "class_1", "class_2")


def test_bad_files(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        import_medmnist(tmp_path / "none.npz", tmp_path / "out")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match="not a readable"):
        import_medmnist(tmp_path / "junk.npz", tmp_path / "out")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ImageReadError, match="expected MedMNIST keys"):
        import_medmnist(tmp_path / "other.npz", tmp_path / "out")


def test_cli(tmp_path, capsys):
    _npz(tmp_path / "breastmnist.npz", (7, 7))
    assert main(["import-medmnist", str(tmp_path / "breastmnist.npz"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "breastmnist: 13 2D image(s)" in out and "train 6, val 3, test 4" in out
    assert main(["import-medmnist", str(tmp_path / "nothing.npz"), "--out", str(tmp_path / "o")]) == 2
