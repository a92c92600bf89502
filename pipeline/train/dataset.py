"""Manifest rows -> a cached MONAI dataset, class-balanced sampling and data loaders.

Each item is a dict with one key per image column (an absolute path), ``"label"`` encoded
by the :class:`~pipeline.manifest.labels.LabelMap` (absent when the manifest has no label column,
as for inference), ``"case_id"`` (the image cell as written, or the manifest's ``case_id``
column) and ``"row"`` (the CSV line number). ``cfg.data.cache`` picks the dataset:

* ``memory``: ``CacheDataset`` (``cfg.data.cache_rate`` of the cases),
* ``disk``: ``PersistentDataset`` in ``<cache_dir>/<transforms.chains.cache_key(cfg)>``,
  so a changed deterministic chain never serves stale data,
* ``none``: plain ``Dataset``.

Both caches hold the chain's output up to its first random transform.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, ThreadDataLoader, list_data_collate
from torch.utils.data import WeightedRandomSampler

from pipeline.config import Config
from pipeline.errors import ConfigError, ManifestError, format_problems
from pipeline.manifest.labels import LabelMap, parse_float
from transforms.chains import cache_key, resolve_device

if TYPE_CHECKING:
    import pandas as pd


def select_split(df: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """The rows of one split (``train`` / ``val`` / ``test``); None keeps every row.

    Raises:
        ManifestError: a split is asked for but the manifest has no ``split`` column.
    """
    if split is None:
        return df
    if "split" not in df.columns:
        raise ManifestError(
            f"the manifest has no 'split' column, so split '{split}' cannot be selected; run radpipe split first"
        )
    return df[df["split"].astype(str).str.strip().str.lower() == split]


def dataset_items(df: pd.DataFrame, cfg: Config, label_map: LabelMap | None) -> list[dict[str, Any]]:
    """The dataset items of manifest rows (see the module docstring).

    Raises:
        ManifestError: an image column is missing or labels cannot be encoded (all rows listed together).
    """
    columns = list(cfg.data.image_columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(
            f"manifest has no image column(s) {missing} of data.image_columns; found {list(df.columns)}"
        )
    problems: list[str] = []
    items: list[dict[str, Any]] = []
    records = df.to_dict("records")
    for position, record in enumerate(records):
        row = int(record.get("row", position + 2))
        item: dict[str, Any] = {c: str(record[c]) for c in columns}
        if label_map is not None:
            try:
                item["label"] = label_map.encode({**record, "row": row})
            except ManifestError as e:
                problems.append(str(e))
                continue
        item["case_id"] = str(record.get("case_id") or record[columns[0]])
        item["row"] = row
        items.append(item)
    if problems:
        raise ManifestError(format_problems(problems) + "; run radpipe validate-manifest for every problem")
    return items


def _cache_key(cfg: Config) -> str:
    return cache_key(cfg.transforms, cfg.data.image_columns)


def metadata_free_after_cache(cfg: Config) -> bool:
    """True when every training case is cached in memory, so metadata tracking may stop after caching."""
    return cfg.data.cache == "memory" and cfg.data.cache_rate >= 1.0


def build_dataset(
    df: pd.DataFrame,
    cfg: Config,
    chain: Callable[[Any], Any],
    split: str | None = None,
    cache_dir: str | Path | None = None,
    label_map: LabelMap | None = None,
) -> Dataset:
    """A MONAI dataset of the manifest's rows (of one split) with ``chain`` as transform.

    Args:
        df: the manifest from :func:`pipeline.manifest.reading.load_manifest` (all rows: the label map is
            built from the whole manifest so every split encodes the same way).
        cfg: the run config (``data.cache``, ``data.cache_rate``, ``data.cache_dir``, image and label columns).
        chain: the transform, e.g. ``transforms.chains.train_chain(cfg)``.
        split: keep only this split; None keeps every row.
        cache_dir: root of the disk cache; default ``cfg.data.cache_dir``.
        label_map: how labels are encoded; default :meth:`LabelMap.from_manifest` of ``df``
            (no labels when the manifest lacks the label columns).

    Raises:
        ConfigError: ``data.cache`` is ``disk`` without a cache folder.
        ManifestError: missing columns or unencodable labels.
    """
    if label_map is None and all(c in df.columns for c in cfg.data.label_columns):
        label_map = LabelMap.from_manifest(df, cfg.data)
    items = dataset_items(select_split(df, split), cfg, label_map)
    if cfg.data.cache == "memory":
        return CacheDataset(
            items, chain, cache_rate=cfg.data.cache_rate, num_workers=max(1, cfg.data.num_workers),
            progress=sys.stderr.isatty(),
        )
    if cfg.data.cache == "disk":
        root = cache_dir or cfg.data.cache_dir
        if not root:
            raise ConfigError(
                "config key 'data.cache' is 'disk' but no cache folder is set; set data.cache_dir (or use memory)"
            )
        folder = Path(root) / _cache_key(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, chain, cache_dir=folder)
    return Dataset(items, chain)


def _class_indices(df: pd.DataFrame, label_map: LabelMap) -> list[int | None]:
    column = label_map.label_columns[0]
    return [label_map.index_of(v) for v in df[column]]


def class_weights(df_train: pd.DataFrame, label_map: LabelMap) -> torch.Tensor:
    """Loss weights against class imbalance, from the training rows.

    Binary / multi-class: one weight per class, inverse class frequency normalised to mean 1
    over the classes present (an absent class gets 0). Multi-label: one ``pos_weight`` per
    label column for ``BCEWithLogitsLoss``, negatives / positives (1 for a column with no
    positive).

    Raises:
        ManifestError: the task is regression (no classes) or no training row has a known class.
    """
    if label_map.task == "regression":
        raise ManifestError("class weights need classes; task regression has none (set data.balance: none)")
    if label_map.task == "multilabel":
        flags = torch.tensor([label_map.encode(r) for r in df_train.to_dict("records")], dtype=torch.float64)
        positives = flags.sum(dim=0)
        negatives = len(flags) - positives
        return torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives)).float()
    counts = torch.zeros(len(label_map.classes), dtype=torch.float64)
    for index in _class_indices(df_train, label_map):
        if index is not None:
            counts[index] += 1
    if counts.sum() == 0:
        raise ManifestError("no training row has a known class; check the labels with radpipe validate-manifest")
    inverse = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return (inverse / inverse[counts > 0].mean()).float()


def sample_weights(df_train: pd.DataFrame, label_map: LabelMap) -> torch.Tensor:
    """Per-row sampling weights: the class weight (binary / multi-class) times the ``weight`` column."""
    n = len(df_train)
    weights = torch.ones(n, dtype=torch.float64)
    if label_map.task in ("binary", "multiclass"):
        per_class = class_weights(df_train, label_map).double()
        weights = torch.tensor(
            [float(per_class[i]) if i is not None else 0.0 for i in _class_indices(df_train, label_map)],
            dtype=torch.float64,
        )
    if "weight" in df_train.columns:
        column = [parse_float(v) for v in df_train["weight"]]
        bad = [int(r) for r, w in zip(df_train.get("row", range(2, n + 2)), column) if w is None or w < 0]
        if bad:
            raise ManifestError(f"column 'weight' holds no number >= 0 on rows {bad[:20]}; fix the weights")
        weights = weights * torch.tensor(column, dtype=torch.float64)
    return weights


def make_sampler(df_train: pd.DataFrame, label_map: LabelMap, seed: int = 0) -> WeightedRandomSampler:
    """A sampler drawing classes about equally often (times the ``weight`` column), with replacement.

    Multi-label and regression rows are weighted by the ``weight`` column only.
    """
    weights = sample_weights(df_train, label_map)
    if float(weights.sum()) <= 0:
        raise ManifestError("every sampling weight is 0; give the training cases weights > 0")
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)


def make_loader(
    dataset: Dataset,
    cfg: Config,
    train: bool,
    device: torch.device | str,
    sampler: WeightedRandomSampler | None = None,
) -> DataLoader:
    """The data loader of a dataset.

    A ``ThreadDataLoader`` (no worker processes) when training with the random part on CUDA
    (:func:`transforms.chains.resolve_device`); otherwise MONAI's ``DataLoader`` with
    ``cfg.data.num_workers`` workers. Shuffling (or ``sampler``) only when ``train``; the
    generator is seeded with ``cfg.train.seed``; batches use ``list_data_collate``. A final
    training batch of one case is dropped (BatchNorm cannot train on it).
    """
    device = torch.device(device)
    batch = cfg.train.batch_size
    n = len(sampler) if sampler is not None else len(dataset)
    common: dict[str, Any] = {
        "batch_size": batch,
        "shuffle": train and sampler is None,
        "sampler": sampler if train else None,
        "collate_fn": list_data_collate,
        "generator": torch.Generator().manual_seed(cfg.train.seed),
        "drop_last": train and n > 1 and n % batch == 1,
        "pin_memory": device.type == "cuda",
    }
    if train and device.type == "cuda" and resolve_device(cfg.transforms, cfg.train.device != "cpu").type == "cuda":
        common["pin_memory"] = False
        return ThreadDataLoader(dataset, num_workers=0, **common)
    workers = cfg.data.num_workers
    return DataLoader(dataset, num_workers=workers, persistent_workers=train and workers > 0, **common)
