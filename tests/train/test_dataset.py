from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, LoadImaged, Resized

from pipeline.config import config_from_dict, with_changes
from pipeline.train.dataset import (
    build_dataset,
    class_weights,
    dataset_items,
    make_loader,
    make_sampler,
    metadata_free_after_cache,
    sample_weights,
    select_split,
)
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest.labels import LabelMap
from pipeline.manifest.reading import load_manifest
from transforms.chains import cache_key

LABELS = ["pos", "neg", "neg", "neg", "pos", "neg", "neg", "neg"]
SPLITS = ["train", "train", "train", "train", "train", "train", "val", "val"]


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i, (label, split) in enumerate(zip(LABELS, SPLITS)):
        nib.save(nib.Nifti1Image(rng.integers(0, 255, (6, 7, 5)).astype(np.uint8), np.eye(4)),
                 str(tmp_path / "img" / f"c{i}.nii.gz"))
        rows.append({"image": f"img/c{i}.nii.gz", "label": label, "patient_id": f"p{i}", "split": split,
                     "weight": 2.0 if i == 0 else 1.0})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv"


def _cfg(**data):
    return config_from_dict({"data": {"classes": ["neg", "pos"], **data},
                             "transforms": {"spatial_dims": 3, "size": [4, 4, 4]}, "train": {"batch_size": 3}})


def _chain():
    return Compose([LoadImaged("image", ensure_channel_first=True, image_only=True),
                    Resized("image", spatial_size=(4, 4, 4))])


def test_items_hold_paths_encoded_labels_case_ids_and_rows(manifest):
    cfg = _cfg()
    df = load_manifest(manifest, cfg.data)
    items = dataset_items(select_split(df, "val"), cfg, LabelMap.from_manifest(df, cfg.data))
    assert items == [
        {"image": str(manifest.parent / "img" / "c6.nii.gz"), "label": 0, "case_id": "img/c6.nii.gz", "row": 8},
        {"image": str(manifest.parent / "img" / "c7.nii.gz"), "label": 0, "case_id": "img/c7.nii.gz", "row": 9},
    ]
    lm = LabelMap.from_manifest(df, cfg.data)
    assert [lm.decode(i["label"]) for i in dataset_items(df, cfg, lm)] == LABELS


def test_cache_dataset_item_equals_direct_transform(manifest):
    cfg = _cfg(cache="memory")
    df = load_manifest(manifest, cfg.data)
    ds = build_dataset(df, cfg, _chain(), split="train")
    assert isinstance(ds, CacheDataset) and len(ds) == 6
    direct = _chain()({"image": str(manifest.parent / "img" / "c4.nii.gz")})["image"]
    assert torch.equal(torch.as_tensor(ds[4]["image"]), torch.as_tensor(direct))
    assert ds[4]["label"] == 1 and ds[4]["row"] == 6


def test_persistent_dataset_folder_is_keyed_by_the_chain(manifest, tmp_path):
    cfg = _cfg(cache="disk")
    df = load_manifest(manifest, cfg.data)
    ds = build_dataset(df, cfg, _chain(), split="val", cache_dir=tmp_path / "cache")
    assert isinstance(ds, PersistentDataset)
    folder = tmp_path / "cache" / cache_key(cfg.transforms, cfg.data.image_columns)
    assert ds.cache_dir == folder
    first = ds[0]["image"]
    assert len(list(folder.glob("*.pt"))) == 1
    assert torch.equal(torch.as_tensor(ds[0]["image"]), torch.as_tensor(first))
    other = with_changes(cfg, transforms={"size": [5, 5, 5]})
    assert cache_key(other.transforms, other.data.image_columns) != cache_key(cfg.transforms, cfg.data.image_columns)
    with_aug = with_changes(cfg, transforms={"augment": "heavy"})
    assert cache_key(with_aug.transforms, with_aug.data.image_columns) == cache_key(cfg.transforms, cfg.data.image_columns)
    assert build_dataset(df, with_changes(cfg, data={"cache_dir": str(tmp_path / "c2")}), _chain()).cache_dir == (
        tmp_path / "c2" / cache_key(cfg.transforms, cfg.data.image_columns))
    with pytest.raises(ConfigError, match="data.cache_dir"):
        build_dataset(df, cfg, _chain())


def test_plain_dataset_and_no_labels(manifest):
    cfg = _cfg(cache="none")
    df = load_manifest(manifest, cfg.data).drop(columns=["label"])
    ds = build_dataset(df, cfg, _chain())
    assert type(ds) is Dataset and "label" not in ds.data[0] and len(ds) == 8


def test_bad_labels_and_missing_split(manifest):
    cfg = _cfg()
    df = load_manifest(manifest, cfg.data)
    bad = df.assign(label=["pos", "maybe", "neg", "what", "pos", "neg", "neg", "neg"])
    with pytest.raises(ManifestError, match="row 3, column 'label'.*row 5, column 'label'"):
        build_dataset(bad, cfg, _chain())
    with pytest.raises(ManifestError, match="no 'split' column"):
        build_dataset(df.drop(columns=["split"]), cfg, _chain(), split="train")


def test_class_weights_inverse_frequency_mean_one(manifest):
    cfg = _cfg()
    df = load_manifest(manifest, cfg.data)
    lm = LabelMap.from_manifest(df, cfg.data)
    train = select_split(df, "train")  # neg 4, pos 2
    assert torch.allclose(class_weights(train, lm), torch.tensor([2 / 3, 4 / 3]))
    lm3 = LabelMap("multiclass", ("neg", "pos", "other"), ("label",))
    assert torch.allclose(class_weights(train, lm3), torch.tensor([2 / 3, 4 / 3, 0.0]))
    ml = pd.DataFrame({"a": ["1", "0", "0", "0"], "b": ["1", "1", "0", "0"]})
    assert torch.allclose(class_weights(ml, LabelMap("multilabel", ("a", "b"), ("a", "b"))),
                          torch.tensor([3.0, 1.0]))
    with pytest.raises(ManifestError, match="regression"):
        class_weights(train, LabelMap("regression", (), ("label",)))


def test_sampler_balances_classes_times_weight_column(manifest):
    cfg = _cfg()
    df = load_manifest(manifest, cfg.data)
    lm = LabelMap.from_manifest(df, cfg.data)
    train = select_split(df, "train")
    weights = sample_weights(train, lm)
    assert torch.allclose(weights, torch.tensor([8 / 3, 2 / 3, 2 / 3, 2 / 3, 4 / 3, 2 / 3], dtype=torch.float64))
    sampler = make_sampler(train, lm, seed=0)
    assert len(sampler) == 6 and list(sampler) == list(make_sampler(train, lm, seed=0))
    draws = [i for _ in range(1000) for i in sampler]  # 6000 draws; positives (rows 0, 4): 4 of 20/3 weight
    pos_share = float(np.isin(draws, [0, 4]).mean())
    assert abs(pos_share - 0.6) < 0.03


def test_loader_batches_seeded_and_drops_a_last_batch_of_one(manifest):
    cfg = _cfg(cache="none")
    df = load_manifest(manifest, cfg.data)
    ds = build_dataset(df, cfg, _chain(), split="train")
    rows = [b["row"].tolist() for b in make_loader(ds, cfg, True, "cpu")]
    assert [b["row"].tolist() for b in make_loader(ds, cfg, True, "cpu")] == rows
    assert sorted(sum(rows, [])) == [2, 3, 4, 5, 6, 7]
    batch = next(iter(make_loader(ds, cfg, False, "cpu")))
    assert batch["image"].shape == (3, 1, 4, 4, 4) and batch["label"].tolist() == [1, 0, 0]
    assert batch["case_id"] == ["img/c0.nii.gz", "img/c1.nii.gz", "img/c2.nii.gz"]
    seven = build_dataset(df[df["row"] < 9], with_changes(cfg, train={"batch_size": 3}), _chain())
    assert len(make_loader(seven, cfg, True, "cpu")) == 2  # 7 cases: the last batch of one is dropped
    assert len(make_loader(seven, cfg, False, "cpu")) == 3


def test_thread_loader_when_augmentation_runs_on_cuda(manifest, monkeypatch):
    from monai.data import ThreadDataLoader

    import pipeline.train.dataset as dataset_module

    cfg = _cfg(cache="none")
    ds = build_dataset(load_manifest(manifest, cfg.data), cfg, _chain(), split="train")
    assert not isinstance(make_loader(ds, cfg, True, "cpu"), ThreadDataLoader)
    monkeypatch.setattr(dataset_module, "resolve_device", lambda t, allow_cuda=True: torch.device("cuda"))
    loader = make_loader(ds, cfg, True, "cuda")
    assert isinstance(loader, ThreadDataLoader) and loader.num_workers == 0
    assert not isinstance(make_loader(ds, cfg, False, "cuda"), ThreadDataLoader)
    assert next(iter(loader))["image"].shape == (3, 1, 4, 4, 4)


def test_metadata_tracking_stops_only_when_every_case_is_cached_in_memory():
    cfg = config_from_dict({})
    assert metadata_free_after_cache(cfg)
    assert not metadata_free_after_cache(with_changes(cfg, data={"cache": "disk"}))
    assert not metadata_free_after_cache(with_changes(cfg, data={"cache_rate": 0.5}))
