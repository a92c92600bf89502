"""``radpipe import-images``: ImageFolder trees, flat folders with a label sheet, patients from a pattern or column."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ManifestError
from pipeline.manifest.import_images import import_images
from pipeline.manifest.reading import load_manifest
from pipeline.manifest.validation import validate_manifest
from pipeline.pseudonym import Pseudonymiser

HASHER = Pseudonymiser(secret=b"k" * 32)


def _picture(path, value=100, rgb=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((12, 10), value, np.uint8)
    Image.fromarray(pixels).convert("RGB" if rgb else "L").save(path)


def test_imagefolder_with_splits_keeps_them_and_writes_a_config(tmp_path, capsys):
    src = tmp_path / "chest_xray"
    for split in ("train", "val", "test"):
        for klass in ("NORMAL", "PNEUMONIA"):
            for i in range(3):
                _picture(src / split / klass / f"{split}-{klass[0]}{i}.jpeg", rgb=i == 0)
    (src / "train" / "NORMAL" / "notes.txt").write_text("x")
    (src / ".DS_Store").write_text("x")
    assert main(["import-images", str(src), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "splits are per image" in printed and "notes.txt: not a picture" in printed
    df = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert len(df) == 18 and list(df.columns) == ["image", "label", "patient_id", "split"]
    assert df["image"].iloc[0] == "../chest_xray/test/NORMAL/test-N0.jpeg"
    assert (df.groupby(["split", "label"]).size() == 3).all()
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["classes"] == ["NORMAL", "PNEUMONIA"]
    cfg = load_config(tmp_path / "out" / "config.yaml")
    assert cfg.data.task == "binary" and cfg.data.patient_column == "patient_id"
    assert cfg.transforms.spatial_dims == 2 and cfg.transforms.size == (224, 224)
    loaded = load_manifest(tmp_path / "out" / "manifest.csv", cfg.data)
    assert not [p for p in validate_manifest(loaded, cfg) if p.severity == "error"]
    unmatched = pd.read_csv(tmp_path / "out" / "unmatched.csv")
    assert unmatched["file_or_row"].tolist() == ["train/NORMAL/notes.txt"]


def test_tree_without_val_gets_val_carved_by_patient(tmp_path):
    src = tmp_path / "src"
    for klass in ("cat", "dog", "fox"):
        for p in range(6):
            for view in "ab":
                _picture(src / "train" / klass / f"{klass}{p:02d}{view}.png")
        _picture(src / "test" / klass / f"{klass}99a.png")
    result = import_images(src, tmp_path / "out", patient_pattern=r"^([a-z]+\d+)", pseudonymiser=HASHER)
    df = pd.read_csv(result.manifest, dtype=str)
    assert result.label_map.task == "multiclass" and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("patient_key")["split"].nunique().max() == 1  # both views of a patient on one side
    assert df["patient_key"].str.startswith("P-").all() and not df["patient_key"].str.contains("cat").any()
    assert result.n_patients == 21 and "patient(s) from --patient-pattern" in "\n".join(result.lines())
    assert result.leaking == 0
    tree = tmp_path / "tree"
    for klass in "ab":
        for split, name in (("train", "1x"), ("train", "2x"), ("val", "1y"), ("test", "3z")):
            _picture(tree / split / klass / f"{klass}{name}.png")
    leaky = import_images(tree, tmp_path / "leaky", patient_pattern=r"^([a-z]\d)", pseudonymiser=HASHER)
    assert leaky.leaking == 2 and "2 patient(s) have images in several splits" in "\n".join(leaky.lines())


def test_flat_folder_with_sheet_matches_stems_and_paths(tmp_path, capsys):
    src = tmp_path / "photos"
    for i in range(12):
        _picture(src / f"img{i:02d}.png", value=i)
    _picture(src / "sub" / "img00.png")  # same stem as img00.png: the sheet must give the path
    _picture(src / "orphan.png")
    sheet = pd.DataFrame({
        "file": [f"img{i:02d}" for i in range(1, 12)] + ["sub/img00.png", "img00", "missing01", "img03"],
        "finding": ["yes", "no"] * 5 + ["yes", "no", "yes", "no", "yes"],
        "Patient Name": ["Doe^Jane"] * 15,
        "mrn": [f"M{i % 5}" for i in range(15)],
        "site": ["A", "B"] * 7 + ["A"],
    })
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    code = main(["import-images", str(src), "--out", str(tmp_path / "out"), "--labels", str(tmp_path / "sheet.csv"),
                 "--key", "file", "--label-column", "finding", "--patient-column", "mrn", "--test", "0", "--val",
                 "0.4"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "row 14: 'file' names 2 files" in printed and "row 15: 'file' names no picture" in printed
    assert "row 16: names img03.png, already labelled by row 4" in printed
    assert "orphan.png: no row of the label sheet names it" in printed
    assert "identifier columns left out: Patient Name" in printed
    df = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert list(df.columns) == ["image", "finding", "patient_key", "split", "site"]
    assert len(df) == 12 and "Doe" not in df.to_csv() and not df["patient_key"].str.startswith("M").any()
    assert df.loc[df["image"].str.endswith("sub/img00.png"), "finding"].item() == "no"  # sheet row 13
    assert df.groupby("patient_key")["split"].nunique().max() == 1 and set(df["split"]) == {"train", "val"}


def test_sheet_multilabel_and_errors(tmp_path):
    src = tmp_path / "src"
    for i in range(10):
        _picture(src / f"a{i}.png")
    pd.DataFrame({"name": [f"a{i}.png" for i in range(10)], "effusion": [i % 2 for i in range(10)],
                  "mass": [(i // 2) % 2 for i in range(10)]}).to_csv(tmp_path / "s.csv", index=False)
    result = import_images(src, tmp_path / "out", labels=tmp_path / "s.csv", key="name",
                           label_column="effusion,mass", val=0.2, test=0.2)
    assert result.label_map.task == "multilabel" and result.label_map.classes == ("effusion", "mass")
    with pytest.raises(ManifestError, match=r"no column\(s\) \['diagnosis'\]"):
        import_images(src, tmp_path / "o2", labels=tmp_path / "s.csv", key="name", label_column="diagnosis")
    with pytest.raises(ManifestError, match="not a valid regular expression"):
        import_images(src, tmp_path / "o3", labels=tmp_path / "s.csv", key="name", patient_pattern="(")
    flat = tmp_path / "flat"
    _picture(flat / "x.png")
    with pytest.raises(ManifestError, match="no picture of .* got a label"):
        import_images(flat, tmp_path / "o4")
    assert main(["import-images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o5")]) == 2


def test_preset_sections_are_kept(tmp_path):
    src = tmp_path / "src"
    for klass in ("a", "b"):
        for i in range(5):
            _picture(src / klass / f"{klass}{i}.png")
    preset = Path(__file__).resolve().parents[2] / "data_manifests" / "imagenet_transfer_2d.yaml"
    result = import_images(src, tmp_path / "out", preset=preset, val=0.2, test=0.2)
    cfg = load_config(tmp_path / "out" / "config.yaml")
    assert cfg.model.name == "resnet50" and cfg.transforms.intensity == "imagenet"
    assert cfg.data.manifest == str(result.manifest) and cfg.data.classes == ("a", "b")


def test_validate_manifest_decodes_pictures_and_names_the_broken_one(tmp_path):
    src = tmp_path / "src"
    for klass in ("a", "b"):
        for i in range(5):
            _picture(src / klass / f"{klass}{i}.png")
    data = (src / "a" / "a0.png").read_bytes()
    (src / "a" / "a0.png").write_bytes(data[:40])  # truncated
    (src / "b" / "b0.png").write_text("a note saved as .png")
    result = import_images(src, tmp_path / "out", val=0.2, test=0.2)
    cfg = load_config(tmp_path / "out" / "config.yaml")
    problems = [str(p) for p in validate_manifest(load_manifest(result.manifest, cfg.data), cfg)
                if p.severity == "error"]
    assert len(problems) == 2
    assert any("a0.png" in p and "cannot be read" in p for p in problems)
    assert any("b0.png" in p and "not an image file" in p and "holds text" in p for p in problems)
