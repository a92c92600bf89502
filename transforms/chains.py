"""Train, eval and infer transform chains, built only from a :class:`~transforms.config.TransformsConfig` and the image keys.

Input sample: a dict with one key per image column (``cfg.data.image_columns``; values are
paths: NIfTI/NRRD/MHA file, DICOM folder or file, or ``*.series.json`` series reference),
``"label"`` already encoded by the dataset code (int, float, or list of floats) and any other
keys, which are carried through untouched. Output: ``"image"`` a float32 ``(C, *cfg.size)``
tensor (a MetaTensor until metadata tracking is switched off), the image columns
concatenated as channels, and ``"label"`` a tensor (int64 for ints, float32 otherwise).

The chain is the deterministic part then the random part::

    load -> channels -> check -> reorient -> crop foreground -> resample -> intensity -> 2D slicing
         -> size -> concatenate columns -> trim metadata -> float32 -> label   (deterministic_part)
    [to device] -> augmentation set                               (random_part)

MONAI ``CacheDataset`` / ``PersistentDataset`` cache every transform before the first random
one, so the deterministic part is computed once per case. :func:`cache_key` hashes everything
that determines it; use it in the disk cache folder name so a changed chain never serves a
stale cache.

CUDA: with :func:`resolve_device` giving a CUDA device, the random part starts with
:class:`ToDeviced` (``EnsureTyped(device=..., track_meta=False)``), so each cached case moves
to the GPU once per epoch and the augmentation runs there. ``ToDeviced`` is marked random
(``RandomizableTrait``), so the caches stop before it and stay in host memory. The trainer
then uses ``monai.data.ThreadDataLoader`` (CUDA cannot run in forked workers). When the whole
training set is cached in memory (:func:`metadata_free_after_cache`), the trainer calls
``monai.data.set_track_meta(False)`` right after building the cached datasets and before the
first epoch: the deterministic part (which needs affines) has run by then, and the random part
runs on plain tensors, which is faster. It never does so otherwise, because the deterministic
part would then run without metadata. On the CPU too, with the set cached in memory,
``ThreadDataLoader`` keeps the per-sample cost of the ``light`` set at about 0.3 ms per 2D image
(``benchmarks/loader.py``); with the metadata kept and ``copy_cache=True`` it is about 1.5 ms.

Reproducibility: ``chain.set_random_state(seed)`` fixes a chain called directly. MONAI's
``DataLoader`` / ``ThreadDataLoader`` re-seed the dataset's random transforms from torch's
generator when iteration starts (and per worker), so under a loader the augmented batches
follow ``monai.utils.set_determinism(seed)`` (or the loader's ``generator``). The random part
never modifies its input in place, so ``CacheDataset(copy_cache=False)`` is safe and saves a
deep copy per sample.

The eval chain is a pure function of the config: a run's saved ``config.yaml`` rebuilds it with
``eval_chain(cfg.transforms, cfg.data.image_columns)`` with ``cfg = load_config(run / "config.yaml")``; :func:`infer_chain` is the eval chain without
the label.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandomizableTrait,
    Transform,
)

from pipeline.errors import ConfigError, format_problems, pipeline_error_in
from transforms.config import TransformsConfig
from transforms.augment import augment_transforms
from transforms.channels import ImageChannelsd
from transforms.intensity import (
    PIXELWISE_LINEAR,
    foreground_threshold,
    get_preset,
    intensity_transforms,
    modality_of,
    uses_display_window,
    window_of,
)
from transforms.spatial import (
    CheckImaged,
    Reorientd,
    crop_foreground_transforms,
    size_transforms,
    slicing_transforms,
    spacing_transforms,
)

#: Bump when a deterministic transform changes behaviour: it invalidates every disk cache.
CHAIN_VERSION = 2

#: TransformsConfig fields that determine the deterministic part (and so the cache).
DETERMINISTIC_FIELDS = (
    "spatial_dims",
    "orientation",
    "spacing",
    "channels",
    "intensity",
    "window",
    "windows",
    "crop_foreground",
    "size",
    "resize",
    "slice_mode",
    "slab",
)


class ToDeviced(EnsureTyped, RandomizableTrait):
    """Move images to ``device`` as plain tensors (no metadata); marked random so caches stop before it."""

    def __init__(self, keys: Sequence[str], device: torch.device) -> None:
        super().__init__(keys, device=device, track_meta=False)


#: Metadata kept on the output images; the rest (reader headers, None-valued entries) is dropped.
KEPT_META = ("filename_or_obj", "affine", "space")


class TrimMetad(MapTransform):
    """Keep only :data:`KEPT_META` (non-None) in each image's metadata.

    Readers attach format-specific headers (possibly None-valued, possibly patient
    identifiers from DICOM); they would break batching of cases read by different readers
    and must not reach caches, logs or outputs.
    """

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if isinstance(img, MetaTensor):
                img.meta = {k: img.meta[k] for k in KEPT_META if img.meta.get(k) is not None}
        return d


class LabelToTensord(MapTransform):
    """Encoded label -> tensor: ints (and bools) give int64, floats and lists of floats give float32."""

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, (bool, int, np.integer, np.bool_)):
                d[key] = torch.tensor(int(value), dtype=torch.int64)
            elif isinstance(value, torch.Tensor) and not value.is_floating_point():
                d[key] = value.to(torch.int64)
            elif isinstance(value, (float, np.floating, list, tuple, np.ndarray, torch.Tensor)):
                d[key] = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor)
                                         else value, dtype=torch.float32)
            else:
                raise TypeError(
                    f"sample key '{key}' holds {value!r} ({type(value).__name__}); the chain expects a label already "
                    "encoded as int, float or list of floats (the dataset encodes class names)"
                )
        return d


def check_config(t: TransformsConfig, image_keys: Sequence[str]) -> None:
    """Check the transform settings the config loader cannot (preset names, windows), all at once.

    Args:
        t: the transforms settings.
        image_keys: the sample keys (manifest image columns) stacked as channels.

    Raises:
        ConfigError: one message listing every problem.
    """
    problems: list[str] = []
    names = [*t.windows] if t.windows else ([t.intensity] if t.intensity == "ct-custom" else [])
    checks = [lambda: get_preset(t.intensity)] + [lambda n=n: window_of(n, t) for n in names]
    if t.windows and t.intensity != "none":
        checks.append(lambda: intensity_transforms(["image"], t))
    for check in checks:
        try:
            check()
        except ConfigError as e:
            problems.append(str(e))
    if len(t.size) != t.spatial_dims:
        problems.append(f"config key 'transforms.size': expected {t.spatial_dims} values, found {list(t.size)}")
    if not image_keys:
        problems.append("config key 'data.image_columns': expected at least one image column, found none")
    if problems:
        raise ConfigError(format_problems(list(dict.fromkeys(problems))))


def _reader(t: TransformsConfig) -> Any:
    from transforms.readers import RadpipeReader  # imported here: DICOM support loads only when a chain is built

    return RadpipeReader(display_window=uses_display_window(t))


def deterministic_part(t: TransformsConfig, image_keys: Sequence[str] = ("image",), labels: bool = True) -> Compose:
    """The transforms of the chain that give the same output every time (what the caches store).

    Args:
        t: the transforms settings.
        image_keys: the sample keys (manifest image columns) stacked as channels into ``"image"``.
        labels: convert ``"label"`` to a tensor (False for inference).
    """
    check_config(t, image_keys)
    cols = list(image_keys)
    steps: list[Transform] = [
        LoadImaged(cols, reader=_reader(t), image_only=True, ensure_channel_first=True),
        ImageChannelsd(cols, t.channels, t.spatial_dims, before_check=True),
        CheckImaged(cols, t.spatial_dims),
        ImageChannelsd(cols, t.channels, t.spatial_dims),
    ]
    if t.orientation:
        steps.append(Reorientd(cols, t.orientation))
    if t.crop_foreground:
        steps += crop_foreground_transforms(cols, foreground_threshold(t))
    steps += spacing_transforms(cols, t)
    # a per-pixel linear preset commutes with interpolation: run it on the resized image (5x fewer pixels, 512 -> 224)
    late = t.intensity in PIXELWISE_LINEAR and t.resize == "resize" and not t.windows
    steps += [] if late else intensity_transforms(cols, t)
    steps += slicing_transforms(cols, t)
    steps += size_transforms(cols, t)
    steps += intensity_transforms(cols, t) if late else []
    if cols != ["image"]:
        steps.append(ConcatItemsd(cols, name="image", dim=0))
        rest = [c for c in cols if c != "image"]
        if rest:
            steps.append(DeleteItemsd(rest))
    steps += [TrimMetad("image"), EnsureTyped("image", dtype=torch.float32)]
    if labels:
        steps.append(LabelToTensord("label"))
    return Compose(steps)


def resolve_device(t: TransformsConfig, allow_cuda: bool = True) -> torch.device:
    """Where the random augmentation runs: ``transforms.device``, with ``auto`` = CUDA when present.

    ``auto`` stays on the CPU when ``allow_cuda`` is False (a run whose ``train.device`` is ``cpu``).
    On CUDA the trainer must iterate with ``monai.data.ThreadDataLoader`` (no worker processes).

    Raises:
        ConfigError: ``cuda`` is asked for but no CUDA device is available.
    """
    wanted = t.device
    if wanted == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "config key 'transforms.device' is 'cuda' but no CUDA device is available; set device: auto or cpu"
            )
        return torch.device("cuda")
    if wanted == "auto" and allow_cuda and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def random_part(t: TransformsConfig, device: torch.device | str | None = None) -> Compose:
    """The random augmentation of ``t.augment``, preceded by :class:`ToDeviced` on CUDA.

    Args:
        t: the transforms settings.
        device: where augmentation runs; None means :func:`resolve_device`.
    """
    dev = resolve_device(t) if device is None else torch.device(device)
    steps: list[Transform] = []
    if dev.type == "cuda":
        steps.append(ToDeviced(["image"], dev))
    aug_device = dev if dev.type == "cuda" else None
    steps += augment_transforms(["image"], t.augment, t.augment_prob, t.size, modality_of(t), aug_device,
                                flip_axes=t.flip_axes, turns=t.turns)
    return Compose(steps)


def train_chain(t: TransformsConfig, image_keys: Sequence[str] = ("image",),
                device: torch.device | str | None = None) -> Compose:
    """Deterministic part then random part (see the module docstring)."""
    return Compose([*deterministic_part(t, image_keys).transforms, *random_part(t, device).transforms])


def eval_chain(t: TransformsConfig, image_keys: Sequence[str] = ("image",)) -> Compose:
    """The deterministic part with the label: what evaluate and validation see."""
    return deterministic_part(t, image_keys, labels=True)


def infer_chain(t: TransformsConfig, image_keys: Sequence[str] = ("image",)) -> Compose:
    """The eval chain without the label: what predict sees."""
    return deterministic_part(t, image_keys, labels=False)


def cache_key(t: TransformsConfig, image_keys: Sequence[str] = ("image",)) -> str:
    """A stable 16-hex-digit hash of everything that determines the deterministic part.

    It covers :data:`CHAIN_VERSION`, the MONAI version, the image keys and the
    :data:`DETERMINISTIC_FIELDS` of ``t``; augmentation settings do not change it.
    """
    try:
        monai_version = metadata.version("monai")
    except metadata.PackageNotFoundError:  # pragma: no cover - monai is a dependency
        monai_version = "unknown"
    state = {
        "chain_version": CHAIN_VERSION,
        "monai": monai_version,
        "image_columns": list(image_keys),
        **{name: _plain(getattr(t, name)) for name in DETERMINISTIC_FIELDS},
    }
    text = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


__all__ = [
    "CHAIN_VERSION",
    "DETERMINISTIC_FIELDS",
    "LabelToTensord",
    "KEPT_META",
    "ToDeviced",
    "TrimMetad",
    "cache_key",
    "check_config",
    "deterministic_part",
    "eval_chain",
    "infer_chain",
    "pipeline_error_in",
    "random_part",
    "resolve_device",
    "train_chain",
]
