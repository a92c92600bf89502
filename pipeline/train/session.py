"""One training session: everything of a validated run built, trained, and its result returned.

:func:`run_training` is the body of :func:`pipeline.train.launch.train` once the config, the manifest and the
run directory have been checked. It builds, in order: the model (so that a weights error surfaces before anything
is written), the run files, the datasets and loaders, the transfer schedule and optimiser, the MONAI engines and
their handlers; then it trains and returns a :class:`TrainResult`.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai.data
import torch
from ignite.engine import Events
from monai.handlers import EarlyStopHandler, LrScheduleHandler, ValidationHandler
from torch.utils.data import DataLoader

from models.factory import create_from_config
from models.transfer import TransferSchedule, build_param_groups
from pipeline.config import Config
from pipeline.manifest.labels import LabelMap
from pipeline.train.checkpoint import restore_training, set_rng_state
from pipeline.train.dataset import (build_dataset, class_weights, dataset_items, make_loader,
                                    metadata_free_after_cache, sample_weights,
                                    select_split)
from pipeline.train.distributed import (DistInfo, EpochSampler, EpochSeededDataset, barrier, init_distributed,
                                        shutdown_distributed)
from pipeline.train.ema import WeightAverage, live_weights
from pipeline.train.engine import (build_engines, configure_torch, make_optimizer, make_scheduler, plain_tensors,
                                   resolve_train_device, wrap_model)
from pipeline.train.handlers import EpochSetup, EpochStats, RunRecorder, attach_progress_and_tracking, broadcast_buffers
from pipeline.train.objectives import TaskLoss, ValidationMetrics, metric_names
from pipeline.train.precise_bn import PreciseBN
from pipeline.train.precision import cpu_autocast_kwargs
from pipeline.train.run_dir import MetricsLog, env_info, write_run_files
from transforms.chains import eval_chain, resolve_device, train_chain


@dataclass(frozen=True)
class TrainResult:
    """What :func:`pipeline.train.launch.train` returns.

    Attributes:
        run_dir: the run directory.
        key_metric: ``train.key_metric``.
        best_metric: best validation value of the key metric (None when never validated).
        best_epoch: epoch of ``best.pt`` (None when never validated).
        last_epoch: last finished epoch (the epoch of ``last.pt``).
        stopped_early: early stopping ended the run before ``train.epochs``.
        history: the rows of ``metrics.csv`` (numbers; empty validation cells are None).
    """

    run_dir: Path
    key_metric: str
    best_metric: float | None
    best_epoch: int | None
    last_epoch: int
    stopped_early: bool
    history: list[dict[str, Any]]


@dataclass
class _Session:
    """What the steps of one session hand each other."""

    cfg: Config
    run_dir: Path
    df: Any
    label_map: LabelMap
    checkpoint: dict[str, Any] | None
    dist_info: DistInfo
    device: torch.device


def run_training(
    cfg: Config,
    run_dir: Path,
    df: Any,
    label_map: LabelMap,
    checkpoint: dict[str, Any] | None,
    extra_handlers: Sequence[Any] = (),
) -> TrainResult:
    """Build everything of a validated run and train it (the body of :func:`pipeline.train.launch.train`).

    Joins the process group under torchrun (and leaves it at the end, also on errors) and
    restores MONAI's metadata tracking (off while training on cached data) and torch's
    deterministic-algorithms setting. After a run that ends normally, every rank waits for the
    others before leaving the group: a rank tearing its Gloo group down while rank 0 still writes
    the last checkpoint was seen to abort (SIGABRT, "terminate called without an active exception").
    """
    dist_info = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    track_meta = monai.data.get_track_meta()
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        device = resolve_train_device(cfg, dist_info.local_rank)
        session = _Session(cfg, run_dir, df, label_map, checkpoint, dist_info, device)
        result = _train(session, extra_handlers)
        barrier(dist_info)
        return result
    finally:
        monai.data.set_track_meta(track_meta)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        shutdown_distributed(dist_info)


def _train(s: _Session, extra_handlers: Sequence[Any]) -> TrainResult:
    configure_torch(s.cfg, s.device)
    model, model_info = _build_model(s)
    train_loader, val_loader, sampler = _build_loaders(s)
    if s.checkpoint is not None:
        model.load_state_dict(live_weights(s.checkpoint))
    if s.dist_info.enabled and s.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net, schedule = _wrap_for_transfer(s, model)
    average = WeightAverage(model, s.cfg.train.ema, s.cfg.train.precise_bn == 0) if s.cfg.train.ema > 0 else None
    if average is not None and s.checkpoint is not None:
        average.restore(s.checkpoint)
    validated = average.module if average is not None else model
    optimizer = make_optimizer(build_param_groups(model, s.cfg.transfer, s.cfg.train.lr, s.cfg.train.weight_decay),
                               s.cfg)
    scheduler = make_scheduler(optimizer, s.cfg, len(train_loader))
    weight = class_weights(select_split(s.df, "train"), s.label_map).to(s.device) \
        if s.cfg.data.balance == "loss" and s.label_map.task != "regression" else None
    loss_fn = TaskLoss(s.label_map.task, weight, s.cfg.train.regression_loss,
                       s.cfg.train.label_smoothing).to(s.device)
    val_loss = TaskLoss(s.label_map.task, weight, s.cfg.train.regression_loss)  # unsmoothed: comparable across runs
    metric = ValidationMetrics(s.label_map.task, val_loss, s.cfg.train.key_metric, s.dist_info,
                               s.label_map.num_outputs, s.device)
    trainer, evaluator = build_engines(
        s.cfg, device=s.device, net=net, eval_net=torch.compile(validated) if s.cfg.train.compile else validated,
        train_loader=train_loader, val_loader=val_loader, optimizer=optimizer, loss_fn=loss_fn, metric=metric,
        num_outputs=s.label_map.num_outputs,
    )
    EpochSetup(s.cfg.train.seed, s.dist_info.rank, sampler, train_loader, schedule).attach(trainer)
    stats = EpochStats(optimizer, s.dist_info)
    stats.attach(trainer)
    LrScheduleHandler(scheduler, print_lr=False, epoch_level=False).attach(trainer)
    if average is not None:
        average.attach(trainer)
    PreciseBN(validated, train_loader, s.cfg.train.precise_bn, s.cfg.train.val_every, s.dist_info,
              autocast=cpu_autocast_kwargs(s.cfg, s.device)).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: broadcast_buffers(validated, s.dist_info))
    early_stop = _attach_validation(s.cfg, trainer, evaluator)
    names = metric_names(s.label_map.task)
    columns = ["epoch", "lr", "train_loss", *[f"val_{n}" for n in names], "time_s", "images_per_s"]
    metrics_log = MetricsLog(s.run_dir / "metrics.csv", columns, write=s.dist_info.is_main)
    RunRecorder(
        s.run_dir, s.cfg, model=model, optimizer=optimizer, scheduler=scheduler, evaluator=evaluator, stats=stats,
        metrics_log=metrics_log, metric_names=names, early_stop=early_stop, model_info=model_info,
        dist_info=s.dist_info, labels=json.loads(s.label_map.to_json()), average=average,
    ).attach(trainer)
    if s.dist_info.is_main:
        attach_progress_and_tracking(s.cfg, s.run_dir, trainer, evaluator)
    for handler in extra_handlers:
        handler.attach(trainer)
    if s.checkpoint is not None:
        restore_training(s.checkpoint, trainer, evaluator, optimizer, scheduler, early_stop, metrics_log)
        set_rng_state(s.checkpoint["rng"])
    _run(trainer, evaluator, s.checkpoint)
    return _result(s.cfg, s.run_dir, trainer, evaluator, metrics_log)


def _build_model(s: _Session) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (weights errors surface before anything is written; channels from one case), then the run files."""
    df_train = select_split(s.df, "train")
    probe = eval_chain(s.cfg.transforms, s.cfg.data.image_columns)(dataset_items(df_train.head(1), s.cfg, s.label_map)[0])
    in_channels = int(probe["image"].shape[0])
    t = s.cfg.transforms
    model = create_from_config(s.cfg.model, t.spatial_dims, in_channels, s.label_map.num_outputs, t.size)
    report = model.weights_report.to_dict() if model.weights_report is not None else {}
    report["source"] = report.get("source") or None
    if s.checkpoint is None and s.dist_info.is_main:
        write_run_files(s.run_dir, s.cfg, s.label_map, report, env_info(s.cfg, s.device, s.dist_info.world_size))
    barrier(s.dist_info)
    model_info = {"name": s.cfg.model.name, "spatial_dims": s.cfg.transforms.spatial_dims,
                  "in_channels": in_channels, "num_outputs": s.label_map.num_outputs, "options": dict(model.options)}
    return model, model_info


def _build_loaders(s: _Session) -> tuple[Any, DataLoader, EpochSampler]:
    """Cached train and val datasets, the epoch-seeded train loader and its sampler, the val loader."""
    cfg, dist_info = s.cfg, s.dist_info
    cache_dir = cfg.data.cache_dir or str(s.run_dir / "cache")
    aug_device = resolve_device(cfg.transforms, cfg.train.device != "cpu") if s.device.type == "cuda" else torch.device("cpu")
    train_ds = build_dataset(s.df, cfg, plain_tensors(train_chain(cfg.transforms, cfg.data.image_columns, aug_device)), "train", cache_dir, s.label_map)
    val_ds = build_dataset(s.df, cfg, plain_tensors(eval_chain(cfg.transforms, cfg.data.image_columns)), "val", cache_dir, s.label_map)
    if metadata_free_after_cache(cfg):
        monai.data.set_track_meta(False)
    weights = sample_weights(select_split(s.df, "train"), s.label_map) if cfg.data.balance == "sampler" else None
    sampler = EpochSampler(len(train_ds), cfg.train.seed, True, weights, dist_info.rank, dist_info.world_size,
                           keyed=True)
    train_loader = make_loader(EpochSeededDataset(train_ds, cfg.train.seed), cfg, True, s.device, sampler=sampler)
    val_loader = DataLoader(
        val_ds, batch_size=cfg.train.batch_size, collate_fn=monai.data.list_data_collate,
        sampler=EpochSampler(len(val_ds), shuffle=False, rank=dist_info.rank, world_size=dist_info.world_size,
                             pad=False),
        num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
        pin_memory=s.device.type == "cuda", generator=torch.Generator(),
    )
    return train_loader, val_loader, sampler


def _wrap_for_transfer(s: _Session, model: torch.nn.Module) -> tuple[torch.nn.Module, TransferSchedule]:
    """The trained network (DDP, compile) and the transfer schedule, built in the order the strategy needs."""
    if s.cfg.transfer.strategy == "gradual":  # DDP fixes its parameters when built: build it while every stage trains
        net = wrap_model(model, s.cfg, s.device, s.dist_info, find_unused=True)
        return net, TransferSchedule(model, s.cfg.transfer)
    schedule = TransferSchedule(model, s.cfg.transfer)
    return wrap_model(model, s.cfg, s.device, s.dist_info, find_unused=False), schedule


def _attach_validation(cfg: Config, trainer: Any, evaluator: Any) -> Any:
    """Validation every ``val_every`` epochs and after the last; early stopping; returns the early-stop handler."""
    validation = ValidationHandler(interval=cfg.train.val_every, validator=evaluator)
    validation.attach(trainer)
    if cfg.train.epochs % cfg.train.val_every:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=cfg.train.epochs), validation)
    if cfg.train.patience <= 0:
        return None
    early_stop = EarlyStopHandler(
        patience=cfg.train.patience, trainer=trainer,
        score_function=lambda e: _finite(e.state.metrics[cfg.train.key_metric]),
    )
    early_stop.attach(evaluator)
    return early_stop


def _run(trainer: Any, evaluator: Any, checkpoint: dict[str, Any] | None) -> None:
    for engine in (trainer, evaluator):  # RunRecorder logs one line per epoch instead
        engine.logger.setLevel(logging.WARNING)
    if checkpoint is None or not checkpoint.get("finished"):
        with warnings.catch_warnings():  # LR is stepped per iteration, also on accumulation-only steps
            warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
            trainer.run()


def _result(cfg: Config, run_dir: Path, trainer: Any, evaluator: Any, metrics_log: MetricsLog) -> TrainResult:
    best_epoch = evaluator.state.best_metric_epoch
    return TrainResult(
        run_dir=run_dir,
        key_metric=cfg.train.key_metric,
        best_metric=None if best_epoch < 0 else float(evaluator.state.best_metric),
        best_epoch=None if best_epoch < 0 else int(best_epoch),
        last_epoch=int(trainer.state.epoch),
        stopped_early=int(trainer.state.epoch) < cfg.train.epochs,
        history=[dict(r) for r in metrics_log.rows],
    )


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value
