"""Train / eval / infer chains built from a config: shape contract, cache split, determinism."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor, list_data_collate
from monai.transforms import Randomizable, RandomizableTrait

from pipeline.config import config_from_dict, load_config, save_config, with_changes
from pipeline.errors import ConfigError, ImageReadError
from transforms.chains import (
    KEPT_META,
    ToDeviced,
    cache_key,
    deterministic_part,
    eval_chain,
    infer_chain,
    pipeline_error_in,
    random_part,
    resolve_device,
    train_chain,
)

DEPTH = 10


def _write(path, shape=(24, 20, DEPTH), seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    vol = rng.normal(-800.0, 50.0, shape).astype(np.float32)
    vol[6:18, 5:15] = rng.normal(40.0 + offset, 20.0, vol[6:18, 5:15].shape)
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return str(path)


def _cfg(dims=3, image_columns=("image",), **transforms):
    size = [16, 16] if dims == 2 else [16, 16, 8]
    t = {"spatial_dims": dims, "size": size, "intensity": "ct-abdomen", "augment": "medium", "augment_prob": 0.8}
    t.update(transforms)
    return config_from_dict({"data": {"image_columns": list(image_columns)}, "transforms": t})


@pytest.fixture
def volume(tmp_path):
    return _write(tmp_path / "case.nii.gz")


def _sample(path, cfg, label=1):
    return {**{c: path for c in cfg.data.image_columns}, "label": label}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "extra, channels",
    [
        ({}, 1),
        ({"windows": ["ct-lung", "ct-abdomen", "ct-bone"], "intensity": "none"}, 3),
        ({"image_columns": ("ct", "ct2")}, 2),
        ({"crop_foreground": True, "resize": "crop-pad", "spacing": [2.0, 2.0, 2.0]}, 1),
    ],
)
def test_shape_contract(volume, dims, extra, channels):
    extra = dict(extra)
    cfg = _cfg(dims, image_columns=extra.pop("image_columns", ("image",)), **extra)
    size = tuple(cfg.transforms.size)
    for chain in (eval_chain(cfg.transforms, cfg.data.image_columns), train_chain(cfg.transforms, cfg.data.image_columns, device="cpu")):
        out = chain(_sample(volume, cfg))
        assert tuple(out["image"].shape) == (channels, *size)
        assert out["image"].dtype == torch.float32
        assert out["label"].dtype == torch.int64 and int(out["label"]) == 1
        assert set(out) == {"image", "label"}
    assert "label" not in infer_chain(cfg.transforms, cfg.data.image_columns)({c: volume for c in cfg.data.image_columns})


def test_outputs_batch_with_trimmed_metadata(tmp_path, volume):
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 40), np.float32), np.eye(4)), str(flat))
    cfg = _cfg(2)
    samples = [eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(path, cfg)) for path in (volume, str(flat))]
    assert all(set(s["image"].meta) <= set(KEPT_META) for s in samples)
    batch = list_data_collate(samples)
    assert tuple(batch["image"].shape) == (2, 1, 16, 16)


def test_slab_gives_slab_channels(volume):
    cfg = _cfg(2, slice_mode="slab", slab=5)
    assert tuple(train_chain(cfg.transforms, cfg.data.image_columns, "cpu")(_sample(volume, cfg))["image"].shape) == (5, 16, 16)


def test_all_gives_one_sample_per_slice_and_flattens_in_a_loader(tmp_path):
    cfg = _cfg(2, slice_mode="all")
    data = [_sample(_write(tmp_path / f"c{i}.nii.gz", seed=i), cfg, label=i) for i in range(2)]
    out = eval_chain(cfg.transforms, cfg.data.image_columns)(data[0])
    assert isinstance(out, list) and len(out) == DEPTH
    assert [s["slice_index"] for s in out] == list(range(DEPTH))
    ds = CacheDataset(data, train_chain(cfg.transforms, cfg.data.image_columns, "cpu"), progress=False)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert tuple(batch["image"].shape) == (2 * DEPTH, 1, 16, 16)
    assert batch["label"].tolist() == [0] * DEPTH + [1] * DEPTH


def test_2d_image_passes_through_a_2d_chain(tmp_path):
    path = tmp_path / "xray.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((30, 40)).astype(np.float32), np.eye(4)), str(path))
    cfg = _cfg(2, intensity="xray-percentile")
    out = train_chain(cfg.transforms, cfg.data.image_columns, "cpu")(_sample(str(path), cfg))
    assert tuple(out["image"].shape) == (1, 16, 16)
    assert 0.0 <= float(eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(str(path), cfg))["image"].min())


@pytest.mark.parametrize("label, dtype, shape", [(2, torch.int64, ()), (0.5, torch.float32, ()),
                                                 ([1.0, 0.0, 1.0], torch.float32, (3,))])
def test_label_types(volume, label, dtype, shape):
    cfg = _cfg()
    out = eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(volume, cfg, label=label))
    assert out["label"].dtype == dtype and tuple(out["label"].shape) == shape
    np.testing.assert_allclose(out["label"].numpy(), label)


def test_same_seed_same_augmented_batch(tmp_path):
    cfg = _cfg(3, augment="heavy", intensity="mr-zscore")
    data = [_sample(_write(tmp_path / f"c{i}.nii.gz", seed=i), cfg) for i in range(2)]
    ds = CacheDataset(data, train_chain(cfg.transforms, cfg.data.image_columns, "cpu"), progress=False)

    def batch(seed):  # MONAI's DataLoader re-seeds the chain from torch's generator
        loader = DataLoader(ds, batch_size=2, generator=torch.Generator().manual_seed(seed))
        return torch.as_tensor(next(iter(loader))["image"])

    a, b, c = batch(7), batch(7), batch(8)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    chain = train_chain(cfg.transforms, cfg.data.image_columns, "cpu")
    outputs = []
    for _ in range(2):
        chain.set_random_state(seed=3)
        outputs.append(torch.as_tensor(chain(dict(data[0]))["image"]))
    torch.testing.assert_close(*outputs)


def test_cache_stores_exactly_the_deterministic_part(volume):
    cfg = _cfg(3, augment="light")
    chain = train_chain(cfg.transforms, cfg.data.image_columns, "cpu")
    det, rnd = deterministic_part(cfg.transforms, cfg.data.image_columns), random_part(cfg.transforms, "cpu")
    assert len(chain.transforms) == len(det.transforms) + len(rnd.transforms)
    assert isinstance(rnd.transforms[0], Randomizable)
    assert not any(isinstance(t, RandomizableTrait) for t in det.transforms)
    ds = CacheDataset([_sample(volume, cfg)], chain, progress=False)
    cached = ds._cache[0]
    expected = det(_sample(volume, cfg))
    torch.testing.assert_close(torch.as_tensor(cached["image"]), torch.as_tensor(expected["image"]))


@pytest.mark.parametrize("augment", ["light", "medium", "heavy"])
def test_random_part_never_modifies_the_cached_input(volume, augment):
    cfg = _cfg(3, augment=augment, augment_prob=1.0, intensity="mr-zscore")
    cached = deterministic_part(cfg.transforms, cfg.data.image_columns)(_sample(volume, cfg))
    before = cached["image"].clone()
    # seeded: unseeded, 'light' can draw flips and a 180-degree turn that compose to the identity
    out = random_part(cfg.transforms, "cpu").set_random_state(seed=3)(cached)
    torch.testing.assert_close(cached["image"], before)
    assert not torch.allclose(torch.as_tensor(out["image"]), torch.as_tensor(before))


def test_device_move_is_never_cached(volume):
    cfg = _cfg(3)
    det = deterministic_part(cfg.transforms, cfg.data.image_columns)
    mover = ToDeviced(["image"], torch.device("cpu"))
    assert isinstance(mover, RandomizableTrait)
    ds = CacheDataset([_sample(volume, cfg)], [*det.transforms, mover], progress=False)
    assert isinstance(ds._cache[0]["image"], MetaTensor)
    out = ds[0]["image"]
    assert type(out) is torch.Tensor and out.shape == (1, 16, 16, 8)


def _key(cfg):
    return cache_key(cfg.transforms, cfg.data.image_columns)


def test_cache_key_follows_deterministic_fields_only():
    cfg = _cfg(3)
    key = _key(cfg)
    assert key == _key(_cfg(3)) and len(key) == 16
    assert _key(with_changes(cfg, transforms={"augment": "heavy", "augment_prob": 0.1, "device": "cpu"})) == key
    for change in ({"intensity": "ct-lung"}, {"size": [16, 16, 4]}, {"crop_foreground": True},
                   {"orientation": "LPS"}, {"spacing": [1, 1, 1]}, {"resize": "crop-pad"}):
        assert _key(with_changes(cfg, transforms=change)) != key, change
    assert _key(with_changes(cfg, data={"image_columns": ["t1"]})) != key


def test_unknown_preset_fails_with_the_known_ones(volume):
    cfg = _cfg(3, intensity="ct-lungs", windows=["ct-bone", "mr-zscore"])
    with pytest.raises(ConfigError) as info:
        eval_chain(cfg.transforms, cfg.data.image_columns)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "ct-lung, ct-mediastinum" in message and "Did you mean 'ct-lung'" in message
    assert "'mr-zscore' is not a CT window preset" in message
    assert "are both set" in message


def test_4d_input_error_names_the_file(tmp_path):
    path = tmp_path / "dynamic.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), str(path))
    cfg = _cfg(3)
    with pytest.raises(RuntimeError) as info:
        eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(str(path), cfg))
    cause = pipeline_error_in(info.value)
    assert isinstance(cause, ImageReadError) and "dynamic.nii.gz" in str(cause)


def test_eval_chain_rebuilds_from_saved_config(tmp_path, volume):
    cfg = _cfg(2, windows=["ct-lung", "ct-bone"], intensity="none", slice_mode="slab")
    save_config(cfg, tmp_path / "config.yaml")
    saved = load_config(tmp_path / "config.yaml")
    again = eval_chain(saved.transforms, saved.data.image_columns)(_sample(volume, cfg))["image"]
    first = eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(volume, cfg))["image"]
    torch.testing.assert_close(torch.as_tensor(again), torch.as_tensor(first))


def test_device_resolution():
    cfg = _cfg(3)
    assert resolve_device(with_changes(cfg, transforms={"device": "cpu"}).transforms).type == "cpu"
    assert resolve_device(cfg.transforms, allow_cuda=False).type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device(cfg.transforms).type == "cpu"
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device(with_changes(cfg, transforms={"device": "cuda"}).transforms)
    assert not any(isinstance(t, ToDeviced) for t in random_part(cfg.transforms, "cpu").transforms)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_augments_on_the_gpu(volume):
    cfg = _cfg(3, augment="heavy", intensity="mr-zscore")
    chain = train_chain(cfg.transforms, cfg.data.image_columns, device="cuda")
    assert isinstance(chain.transforms[len(deterministic_part(cfg.transforms, cfg.data.image_columns).transforms)], ToDeviced)
    ds = CacheDataset([_sample(volume, cfg)], chain, progress=False)
    assert ds._cache[0]["image"].device.type == "cpu"
    out = ds[0]["image"]
    assert out.device.type == "cuda" and out.shape == (1, 16, 16, 8)


def test_dicom_series_and_nifti_batch_together(tmp_path, volume):
    from pipeline.demo.synthetic_dicom import SeriesSpec, write_series

    series = tmp_path / "series"
    write_series(series, SeriesSpec(rows=16, cols=16, n_slices=6, modality="CT", seed=1))
    cfg = _cfg(3, intensity="ct-abdomen")
    samples = [eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(path, cfg)) for path in (str(series), volume)]
    assert all(set(s["image"].meta) <= set(KEPT_META) for s in samples)
    assert tuple(list_data_collate(samples)["image"].shape) == (2, 1, 16, 16, 8)
    dynamic = tmp_path / "dynamic"
    write_series(dynamic, SeriesSpec(rows=16, cols=16, n_slices=4, n_timepoints=2, modality="MR", seed=2))
    with pytest.raises(RuntimeError) as info:
        eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(str(dynamic), cfg))
    assert isinstance(pipeline_error_in(info.value), ImageReadError)
    assert "4D image" in str(pipeline_error_in(info.value))


def test_dicom_window_preset_shows_a_radiograph_as_its_header_says(tmp_path):
    """`intensity: dicom-window`: a DX image through its own window (MONOCHROME1 inverted), a picture min..max."""
    import pydicom
    from pydicom.pixels import apply_voi_lut

    from pipeline.demo.synthetic_dicom import write_single_image

    dx = write_single_image(tmp_path / "dx.dcm", rows=16, cols=16, photometric="MONOCHROME1")
    ds = pydicom.dcmread(dx)
    ds.WindowCenter, ds.WindowWidth = 1800, 1200
    ds.save_as(dx)
    cfg = _cfg(2, intensity="dicom-window", augment="none")
    out = eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(str(dx), cfg))["image"]
    expected = 1.0 - apply_voi_lut(ds.pixel_array.astype(float), ds) / (2 ** ds.BitsStored - 1)
    np.testing.assert_allclose(out[0].numpy(), expected.T, atol=2e-3)
    picture = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(256, dtype=np.float32).reshape(16, 16) * 4.0, np.eye(4)), str(picture))
    other = eval_chain(cfg.transforms, cfg.data.image_columns)(_sample(str(picture), cfg))["image"]
    assert float(other.min()) == 0.0 and float(other.max()) == pytest.approx(1.0)
