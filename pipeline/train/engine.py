"""The MONAI engines of a run: optimiser, LR schedule, batch preparation, trainer and evaluator.

The LR schedule is stepped every iteration: ``cosine`` warms up linearly over
``warmup_epochs`` then follows a half cosine to 0 at the last iteration; ``step``
multiplies the LR by ``gamma`` from the first iteration of each epoch in ``step_epochs``
(after the same warm-up); ``none`` keeps it constant. Parameter groups keep their own
base LR (head LR, layer-wise decay), all scaled by the same factor.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import CommonKeys as Keys

from pipeline.config import Config


def make_optimizer(param_groups: list[dict[str, Any]], cfg: Config) -> torch.optim.Optimizer:
    """The optimiser of ``train.optimizer`` over parameter groups (each may carry its own ``lr``)."""
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay, nesterov=True)
    if t.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(param_groups, lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(iteration: int, cfg: Config, epoch_length: int) -> float:
    """LR multiplier before iteration ``iteration`` (0-based, counted over the whole run)."""
    t = cfg.train
    total = max(1, t.epochs * epoch_length)
    warmup = min(t.warmup_epochs * epoch_length, total - 1) if t.scheduler != "none" else 0
    if iteration < warmup:
        return (iteration + 1) / warmup
    if t.scheduler == "cosine":
        progress = (iteration - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if t.scheduler == "step":
        epoch = iteration // epoch_length + 1
        return t.gamma ** sum(1 for e in t.step_epochs if epoch >= e)
    return 1.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config, epoch_length: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg, epoch_length))


class BatchPreparer:
    """``prepare_batch`` of the engines: image and label to the device, plain tensors, task dtypes."""

    def __init__(self, task: str, channels_last: bool = False, gpu_augment: Callable | None = None) -> None:
        self.task = task
        self.channels_last = channels_last
        self.gpu_augment = gpu_augment

    def __call__(
        self, batch: dict[str, Any], device: torch.device, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch[Keys.IMAGE]
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        image = image.to(device, non_blocking=non_blocking, **kwargs)
        if self.gpu_augment is not None:
            image = self.gpu_augment(image)
        if self.channels_last and image.dim() == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        label = batch[Keys.LABEL]
        label = label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(label)
        label = label.to(device, non_blocking=non_blocking)
        if self.task in ("binary", "multiclass"):
            label = label.reshape(-1).long()
        else:
            label = label.reshape(len(image), -1).float()
        return image, label


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mixed precision on ``device``: bf16 where supported, else fp16; None off CUDA.

    Training and inference both take it from here, so a model is predicted in the precision it was trained in.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def amp_settings(cfg: Config, device: torch.device) -> tuple[bool, dict[str, Any]]:
    """Whether AMP is on and its ``torch.autocast`` kwargs (see :func:`amp_dtype`)."""
    dtype = amp_dtype(device) if cfg.train.amp else None
    return (False, {}) if dtype is None else (True, {"dtype": dtype})


def plain_tensors(chain: Any) -> Any:
    """``chain`` then image metadata dropped: the engines need none, and batches collate faster without it."""
    from monai.transforms import Compose, EnsureTyped

    return Compose([*chain.transforms, EnsureTyped("image", track_meta=False)])


def configure_torch(cfg: Config, device: torch.device) -> None:
    """Seeds and determinism (``train.deterministic``), cuDNN autotuning otherwise."""
    from pipeline.train.handlers import seed_everything

    if cfg.train.deterministic:
        import os

        from monai.utils import set_determinism

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_determinism(seed=cfg.train.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        seed_everything(cfg.train.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic


def resolve_train_device(cfg: Config, local_rank: int = 0) -> torch.device:
    """``train.device`` with ``auto`` = CUDA when present (the local rank's GPU under torchrun)."""
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def wrap_model(
    model: torch.nn.Module, cfg: Config, device: torch.device, dist_info: Any, find_unused: bool
) -> torch.nn.Module:
    """Device, channels-last (2D on CUDA), SyncBatchNorm + DDP under torchrun, ``torch.compile``."""
    model.to(device)
    if device.type == "cuda" and cfg.train.channels_last and cfg.transforms.spatial_dims == 2:
        model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
    if cfg.train.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


def build_engines(
    cfg: Config,
    *,
    device: torch.device,
    net: torch.nn.Module,
    eval_net: torch.nn.Module,
    train_loader: Any,
    val_loader: Any,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    metric: Any,
) -> tuple[Any, Any]:
    """MONAI ``SupervisedTrainer`` and ``SupervisedEvaluator`` of a run (AMP, accumulation, key metric)."""
    from monai.engines import SupervisedEvaluator, SupervisedTrainer

    from pipeline.train.objectives import better

    amp, amp_kwargs = amp_settings(cfg, device)
    channels_last = device.type == "cuda" and cfg.train.channels_last and cfg.transforms.spatial_dims == 2
    prepare = BatchPreparer(cfg.data.task, channels_last=channels_last)
    non_blocking = device.type == "cuda"
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=cfg.train.epochs,
        train_data_loader=train_loader,
        network=net,
        optimizer=optimizer,
        loss_function=loss_fn,
        prepare_batch=prepare,
        non_blocking=non_blocking,
        amp=amp,
        amp_kwargs=amp_kwargs,
        decollate=False,
        optim_set_to_none=True,
        accumulation_steps=cfg.train.grad_accum,
    )
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=val_loader,
        network=eval_net,
        prepare_batch=prepare,
        non_blocking=non_blocking,
        key_val_metric={cfg.train.key_metric: metric},
        metric_cmp_fn=better,
        amp=amp,
        amp_kwargs=amp_kwargs,
        decollate=False,
    )
    if amp and amp_kwargs.get("dtype") == torch.bfloat16:
        from ignite.engine import Events

        @trainer.on(Events.STARTED)
        def _no_loss_scaling(engine: Any) -> None:  # bf16 has fp32's range: a scaler only costs time
            engine.scaler = torch.amp.GradScaler("cuda", enabled=False)

    return trainer, evaluator


def run_training(
    cfg: Config,
    run_dir: Path,
    df: Any,
    label_map: Any,
    checkpoint: dict[str, Any] | None,
    extra_handlers: Sequence[Any] = (),
) -> Any:
    """Build everything of a validated run and train it (the body of :func:`pipeline.train.launch.train`).

    Joins the process group under torchrun (and leaves it at the end, also on errors) and
    restores MONAI's metadata tracking (off while training on cached data) and torch's
    deterministic-algorithms setting. After a run that ends normally, every rank waits for the
    others before leaving the group: a rank tearing its Gloo group down while rank 0 still writes
    the last checkpoint was seen to abort (SIGABRT, "terminate called without an active exception").
    """
    import monai.data

    from pipeline.train.distributed import barrier, init_distributed, shutdown_distributed

    dist_info = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    track_meta = monai.data.get_track_meta()
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        result = _train(cfg, run_dir, df, label_map, checkpoint, extra_handlers, dist_info)
        barrier(dist_info)
        return result
    finally:
        monai.data.set_track_meta(track_meta)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        shutdown_distributed(dist_info)


def _train(
    cfg: Config,
    run_dir: Path,
    df: Any,
    label_map: Any,
    checkpoint: dict[str, Any] | None,
    extra_handlers: Sequence[Any],
    dist_info: Any,
) -> Any:
    import monai.data
    from ignite.engine import Events
    from monai.handlers import EarlyStopHandler, LrScheduleHandler, ValidationHandler
    from torch.utils.data import DataLoader

    from models.registry import create_from_config
    from models.transfer import TransferSchedule, build_param_groups
    from pipeline.train.checkpoint import restore_training, set_rng_state
    from pipeline.train.dataset import build_dataset, class_weights, dataset_items, make_loader, sample_weights, select_split
    from pipeline.train.distributed import EpochSampler, EpochSeededDataset, barrier
    from pipeline.train.handlers import EpochSetup, EpochStats, RunRecorder, attach_progress_and_tracking, broadcast_buffers
    from pipeline.train.objectives import TaskLoss, ValidationMetrics, metric_names
    from pipeline.train.precise_bn import PreciseBN
    from pipeline.train.run_dir import MetricsLog, env_info, write_run_files
    from pipeline.train.launch import TrainResult
    from transforms.chains import eval_chain, metadata_free_after_cache, resolve_device, train_chain

    device = resolve_train_device(cfg, dist_info.local_rank)
    configure_torch(cfg, device)
    task = label_map.task
    df_train = select_split(df, "train")

    # Model first (weights errors surface before anything is written); channels from one case.
    probe = eval_chain(cfg)(dataset_items(df_train.head(1), cfg, label_map)[0])
    in_channels = int(probe["image"].shape[0])
    model = create_from_config(cfg, in_channels, label_map.num_outputs)
    report = model.weights_report.to_dict() if model.weights_report is not None else {}
    report["source"] = report.get("source") or None
    if checkpoint is None and dist_info.is_main:
        write_run_files(run_dir, cfg, label_map, report, env_info(cfg, device, dist_info.world_size))
    barrier(dist_info)
    model_info = {"name": cfg.model.name, "spatial_dims": cfg.transforms.spatial_dims,
                  "in_channels": in_channels, "num_outputs": label_map.num_outputs, "options": dict(model.options)}

    cache_dir = cfg.data.cache_dir or str(run_dir / "cache")
    aug_device = resolve_device(cfg) if device.type == "cuda" else torch.device("cpu")
    train_ds = build_dataset(df, cfg, plain_tensors(train_chain(cfg, aug_device)), "train", cache_dir, label_map)
    val_ds = build_dataset(df, cfg, plain_tensors(eval_chain(cfg)), "val", cache_dir, label_map)
    if metadata_free_after_cache(cfg):
        monai.data.set_track_meta(False)
    weights = sample_weights(df_train, label_map) if cfg.data.balance == "sampler" else None
    sampler = EpochSampler(len(train_ds), cfg.train.seed, True, weights, dist_info.rank, dist_info.world_size,
                           keyed=True)
    train_loader = make_loader(EpochSeededDataset(train_ds, cfg.train.seed), cfg, True, device, sampler=sampler)
    val_loader = DataLoader(
        val_ds, batch_size=cfg.train.batch_size, collate_fn=monai.data.list_data_collate,
        sampler=EpochSampler(len(val_ds), shuffle=False, rank=dist_info.rank, world_size=dist_info.world_size,
                             pad=False),
        num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
        pin_memory=device.type == "cuda", generator=torch.Generator(),
    )

    strategy = cfg.transfer.strategy
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    if dist_info.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if strategy == "gradual":  # DDP fixes its parameters when built: build it while every stage trains
        net = wrap_model(model, cfg, device, dist_info, find_unused=True)
        schedule = TransferSchedule(model, cfg.transfer)
    else:
        schedule = TransferSchedule(model, cfg.transfer)
        net = wrap_model(model, cfg, device, dist_info, find_unused=False)
    optimizer = make_optimizer(build_param_groups(model, cfg.transfer, cfg.train.lr, cfg.train.weight_decay), cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    weight = class_weights(df_train, label_map).to(device) if cfg.data.balance == "loss" and task != "regression" \
        else None
    loss_fn = TaskLoss(task, weight, cfg.train.regression_loss).to(device)
    metric = ValidationMetrics(task, loss_fn, cfg.train.key_metric, dist_info, label_map.num_outputs, device)
    trainer, evaluator = build_engines(
        cfg, device=device, net=net, eval_net=torch.compile(model) if cfg.train.compile else model,
        train_loader=train_loader, val_loader=val_loader, optimizer=optimizer, loss_fn=loss_fn, metric=metric,
    )

    EpochSetup(cfg.train.seed, dist_info.rank, sampler, train_loader, schedule).attach(trainer)
    stats = EpochStats(optimizer, dist_info)
    stats.attach(trainer)
    LrScheduleHandler(scheduler, print_lr=False, epoch_level=False).attach(trainer)
    PreciseBN(model, train_loader, cfg.train.precise_bn, cfg.train.val_every, dist_info).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: broadcast_buffers(model, dist_info))
    validation = ValidationHandler(interval=cfg.train.val_every, validator=evaluator)
    validation.attach(trainer)
    if cfg.train.epochs % cfg.train.val_every:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=cfg.train.epochs), validation)
    early_stop = None
    if cfg.train.patience > 0:
        early_stop = EarlyStopHandler(
            patience=cfg.train.patience, trainer=trainer,
            score_function=lambda e: _finite(e.state.metrics[cfg.train.key_metric]),
        )
        early_stop.attach(evaluator)
    names = metric_names(task)
    columns = ["epoch", "lr", "train_loss", *[f"val_{n}" for n in names], "time_s", "images_per_s"]
    metrics_log = MetricsLog(run_dir / "metrics.csv", columns, write=dist_info.is_main)
    recorder = RunRecorder(
        run_dir, cfg, model=model, optimizer=optimizer, scheduler=scheduler, evaluator=evaluator, stats=stats,
        metrics_log=metrics_log, metric_names=names, early_stop=early_stop, model_info=model_info,
        dist_info=dist_info,
    )
    recorder.attach(trainer)
    if dist_info.is_main:
        attach_progress_and_tracking(cfg, run_dir, trainer, evaluator)
    for handler in extra_handlers:
        handler.attach(trainer)

    if checkpoint is not None:
        restore_training(checkpoint, trainer, evaluator, optimizer, scheduler, early_stop, metrics_log)
        set_rng_state(checkpoint["rng"])
    for engine in (trainer, evaluator):  # RunRecorder logs one line per epoch instead
        engine.logger.setLevel(logging.WARNING)
    if checkpoint is None or not checkpoint.get("finished"):
        with warnings.catch_warnings():  # LR is stepped per iteration, also on accumulation-only steps
            warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
            trainer.run()
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
