"""Pictures end to end: an ImageFolder of mixed grey / RGB files -> import-images -> train -> evaluate -> report ->
predict over the folder; and an RGB MedMNIST-style file -> import-medmnist -> train -> evaluate."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from train_helpers import narrow_resnets

from pipeline.cli import main
from pipeline.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # both tests run in about 5 s

FAST = ["--set", "model.name=resnet10", "--set", "model.small_input=true", "--set", "transforms.size=[16, 16]",
        "--set", "transforms.augment=none", "--set", "train.epochs=2", "--set", "train.batch_size=8",
        "--set", "train.device=cpu", "--set", "train.tensorboard=false", "--set", "train.lr=0.003"]


def _xray(path, positive, rng, rgb):
    pixels = rng.normal(60, 15, (20, 24)).clip(0, 255)
    if positive:
        pixels[6:14, 8:16] = 230
    img = Image.fromarray(pixels.astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert("RGB") if rgb else img).save(path, quality=95)


def test_image_folder_import_train_evaluate_report_predict(tmp_path, monkeypatch, capsys):
    narrow_resnets(monkeypatch)
    rng = np.random.default_rng(0)
    src = tmp_path / "chest_xray"
    n = {"train": 12, "val": 6, "test": 6}
    for split, count in n.items():
        for klass in ("NORMAL", "PNEUMONIA"):
            for i in range(count):
                suffix = ".jpeg" if i % 2 else ".png"
                _xray(src / split / klass / f"{split}{klass[0]}{i:02d}{suffix}", klass == "PNEUMONIA", rng, i % 3 == 0)
    out = tmp_path / "xray"
    assert main(["import-images", str(src), "--out", str(out)]) == 0
    config = out / "config.yaml"
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), *FAST]) == 0
    saved = load_config(run / "config.yaml")
    assert saved.transforms.channels == "rgb"  # auto, resolved from the mixed grey / RGB training files
    assert json.loads((run / "weights_report.json").read_text()) is not None
    predictions = tmp_path / "test.csv"
    assert main(["evaluate", "--run", str(run), "--manifest", str(out / "manifest.csv"), "--out", str(predictions),
                 "--workers", "0"]) == 0
    df = pd.read_csv(predictions)
    assert len(df) == 2 * n["test"] and set(df["pred"]) <= {"NORMAL", "PNEUMONIA"}
    assert ((df["pred"] == df["label"]).mean()) >= 0.75  # the bright square is easy to learn
    assert main(["report", str(predictions), "--run", str(run), "--out", str(tmp_path / "report"),
                 "--bootstrap", "50"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["overall"]["n"] == 2 * n["test"] and report["overall"]["auc"] >= 0.75
    (src / "README.txt").write_text("not a picture")
    batch = tmp_path / "batch.csv"
    assert main(["predict", "--run", str(run), str(src / "test"), "--out", str(batch), "--workers", "0"]) == 0
    rows = pd.read_csv(batch)
    assert len(rows) == 2 * n["test"] and (rows["status"] == "ok").all()
    assert set(rows["series_id"]) == {p.relative_to(src / "test").as_posix() for p in (src / "test").rglob("*.*")}
    capsys.readouterr()


def test_rgb_medmnist_imports_trains_and_evaluates(tmp_path, monkeypatch):
    narrow_resnets(monkeypatch)
    rng = np.random.default_rng(1)
    arrays = {}
    for split, count in (("train", 24), ("val", 10), ("test", 8)):
        labels = np.arange(count) % 2
        images = rng.integers(0, 60, (count, 16, 16, 3), dtype=np.uint8)
        images[labels == 1, 4:12, 4:12, 0] = 250  # a red square: only the red channel tells the class
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None].astype(np.uint8)
    np.savez(tmp_path / "tinyrgbmnist.npz", **arrays)
    out = tmp_path / "derma"
    assert main(["import-medmnist", str(tmp_path / "tinyrgbmnist.npz"), "--out", str(out)]) == 0
    assert load_config(out / "config.yaml").transforms.channels == "rgb"
    run = tmp_path / "run"
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(run), *FAST]) == 0
    predictions = tmp_path / "p.csv"
    assert main(["evaluate", "--run", str(run), "--manifest", str(out / "manifest.csv"), "--out", str(predictions),
                 "--workers", "0"]) == 0
    df = pd.read_csv(predictions)
    assert len(df) == 8 and list(df.filter(like="prob_").columns) == ["prob_class_0", "prob_class_1"]
    assert (df["pred"] == df["label"]).mean() >= 0.75  # the red square is learnt: the colour reached the model
