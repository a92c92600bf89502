"""Ignite handlers of the trainer: per-epoch seeding, epoch statistics, and the run recorder.

Order on the trainer (ignite fires handlers in the order they were attached)::

    EPOCH_STARTED    EpochSetup (seeds, sampler epoch, transfer schedule), EpochStats (timer, lr)
    ITERATION_COMPLETED  EpochStats (loss, images), LrScheduleHandler (per-iteration LR)
    EPOCH_COMPLETED  EpochStats (all-reduced train loss, time), PreciseBN (validating epochs,
                     see :mod:`pipeline.train.precise_bn`), buffer sync (DDP),
                     ValidationHandler (evaluator -> metrics, best, early stop), RunRecorder
"""
from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys as Keys

from pipeline.train.checkpoint import atomic_save, inference_checkpoint, rng_state, unwrap_model
from pipeline.config import Config, config_to_dict
from pipeline.errors import RunError
from pipeline.files import remove_stale_temporaries
from pipeline.train.distributed import DistInfo, EpochSampler, all_reduce_sum, epoch_seed
from pipeline.train.run_dir import MetricsLog

log = logging.getLogger("radpipe")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class EpochSetup:
    """EPOCH_STARTED: make everything random in the epoch a function of ``(seed, epoch, rank)``.

    Seeds the global generators (dropout, anything unseeded), sets the sampler's epoch (which
    also keys the augmentation, see :class:`~pipeline.train.distributed.EpochSeededDataset`), reseeds
    the loader's generator (worker base seeds); then lets the transfer schedule freeze /
    unfreeze stages for the epoch.
    """

    def __init__(self, seed: int, rank: int, sampler: EpochSampler, loader: Any, schedule: Any = None) -> None:
        self.seed = seed
        self.rank = rank
        self.sampler = sampler
        self.loader = loader
        self.schedule = schedule

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        seed_everything(epoch_seed(self.seed, epoch, stream=100 + self.rank))
        self.sampler.set_epoch(epoch)
        generator = getattr(self.loader, "generator", None)
        if generator is not None:
            generator.manual_seed(epoch_seed(self.seed, epoch, stream=200 + self.rank))
        if self.schedule is not None:
            self.schedule.on_epoch_start(epoch - 1)  # the transfer schedule counts epochs from 0


class EpochStats:
    """Mean training loss, images per second and LR of each epoch (summed over ranks).

    A loss that is not finite at the end of an epoch stops the run with a :class:`~pipeline.errors.RunError`
    before that epoch is validated or checkpointed (attach this before :class:`RunRecorder`), so ``last.pt``
    and ``best.pt`` stay those of the last good epoch. Every rank sees the same summed loss and stops alike.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, dist_info: DistInfo) -> None:
        self.optimizer = optimizer
        self.dist_info = dist_info
        self.values: dict[str, float] = {}
        self._start = 0.0
        self._loss: torch.Tensor | float = 0.0
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._loss, self._count = 0.0, 0
        self.values = {"lr": float(self.optimizer.param_groups[-1]["lr"])}

    def iteration(self, engine: Engine) -> None:
        out = engine.state.output
        n = len(out[Keys.IMAGE])
        self._loss = self._loss + out[Keys.LOSS].detach().float() * n
        self._count += n

    def completed(self, engine: Engine) -> None:
        loss = float(self._loss)  # synchronises a CUDA device before the clock is read
        elapsed = time.perf_counter() - self._start
        loss_sum, count = all_reduce_sum([loss, self._count], self.dist_info)
        if not math.isfinite(loss_sum):
            kept = f"checkpoints/last.pt of epoch {engine.state.epoch - 1} is kept" if engine.state.epoch > 1 else \
                "no checkpoint was written"
            raise RunError(
                f"training stopped: the training loss of epoch {engine.state.epoch} is {loss_sum} (learning rate "
                f"{self.values.get('lr', float('nan')):g}); {kept}. Lower train.lr, check the images for NaN values "
                f"(radpipe preview), or set train.amp=false"
            )
        elapsed = max(elapsed, 1e-9)
        self.values.update(
            train_loss=loss_sum / max(count, 1), time_s=elapsed, images_per_s=count / elapsed, images=count
        )


def broadcast_buffers(model: torch.nn.Module, dist_info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank before validation."""
    if not dist_info.enabled:
        return
    import torch.distributed as dist

    for buffer in unwrap_model(model).buffers():
        dist.broadcast(buffer.data, src=0)


class RunRecorder:
    """EPOCH_COMPLETED (after validation): the ``metrics.csv`` row, ``best.pt`` and ``last.pt``.

    Only rank 0 writes. ``last.pt`` is written every epoch and holds what a resumed run needs to continue
    identically; ``best.pt`` is written when the validation key metric improved (ties: the lower validation
    loss, then the earlier epoch; see :func:`pipeline.train.objectives.better`) and holds only what inference
    needs (:func:`pipeline.train.checkpoint.inference_checkpoint`). Both atomically.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: Config,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        evaluator: Any,
        stats: EpochStats,
        metrics_log: MetricsLog,
        metric_names: tuple[str, ...],
        early_stop: Any,
        model_info: dict[str, Any],
        dist_info: DistInfo,
        labels: dict[str, Any] | None = None,
        average: Any = None,
    ) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.evaluator = evaluator
        self.stats = stats
        self.metrics_log = metrics_log
        self.metric_names = metric_names
        self.early_stop = early_stop
        self.model_info = model_info
        self.dist_info = dist_info
        self.labels = labels
        self.average = average
        self.validated_epoch = -1
        self.trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        if self.dist_info.is_main:  # a kill while a checkpoint was written left its temporary behind
            for path in remove_stale_temporaries(self.run_dir / "checkpoints"):
                log.info("removed %s, left by a run killed while writing a checkpoint", path.name)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _validated(self, evaluator: Engine) -> None:
        self.validated_epoch = evaluator.state.epoch

    def early_stop_state(self) -> dict[str, Any] | None:
        """The early-stopping counter and best score (None when early stopping is off)."""
        handler = getattr(self.early_stop, "_handler", None)
        return None if handler is None else dict(handler.state_dict())

    def checkpoint(self, engine: Engine) -> dict[str, Any]:
        """Everything a resumed run restores."""
        scaler = getattr(engine, "scaler", None)
        best = self.evaluator.state.best_metric
        live = unwrap_model(self.model).state_dict()
        return {
            "model": live,
            **(self.average.checkpoint_entries(live) if self.average is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "best_metric": None if self.evaluator.state.best_metric_epoch < 0 else float(best),
            "best_epoch": int(self.evaluator.state.best_metric_epoch),
            "best_loss": getattr(getattr(self.evaluator, "metric_cmp_fn", None), "best_loss", None),
            "early_stop_state": self.early_stop_state(),
            "rng": rng_state(),
            "config": config_to_dict(self.cfg),
            "model_info": self.model_info,
            "finished": engine.state.epoch >= engine.state.max_epochs or bool(engine.should_terminate),
        }

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        validated = self.validated_epoch == epoch
        row: dict[str, Any] = {"epoch": epoch, **self.stats.values}
        metrics = self.evaluator.state.metrics if validated else {}
        for name in self.metric_names:
            row[f"val_{name}"] = float(metrics[name]) if name in metrics else ""
        improved = validated and self.evaluator.state.best_metric_epoch == epoch
        self.metrics_log.append(row)
        if self.dist_info.is_main:
            state = self.checkpoint(engine)
            if improved:
                atomic_save(inference_checkpoint(state, self.labels, self.cfg.train.key_metric),
                            self.run_dir / "checkpoints" / "best.pt")
            atomic_save(state, self.run_dir / "checkpoints" / "last.pt")
            shown = " ".join(
                f"{k} {v:.4g}" for k, v in row.items() if k.startswith("val_") and isinstance(v, float)
            )
            log.info(
                "epoch %d/%d  lr %.3g  train_loss %.4g  %s  %.1f s  %.1f img/s%s",
                epoch,
                engine.state.max_epochs,
                row["lr"],
                row["train_loss"],
                shown or "(no validation)",
                row["time_s"],
                row["images_per_s"],
                "  *best*" if improved else "",
            )


def attach_progress_and_tracking(cfg: Config, run_dir: Path, trainer: Any, evaluator: Any) -> None:
    """tqdm bar on a terminal; TensorBoard when installed and on; MLflow when ``train.mlflow_uri`` is set."""
    import importlib.util
    import sys

    def loss(out: dict[str, Any]) -> float:
        return float(out[Keys.LOSS].item())

    if sys.stderr.isatty():
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": loss(out)})
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        log.info("TensorBoard logs off: tensorboard is not installed (pip install 'radpipe[tracking]')")
    elif cfg.train.tensorboard:
        from monai.handlers import TensorBoardStatsHandler
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        TensorBoardStatsHandler(writer, iteration_log=True, epoch_log=False, output_transform=loss,
                                tag_name="train_loss").attach(trainer)
        TensorBoardStatsHandler(writer, iteration_log=False, epoch_log=True).attach(evaluator)
        trainer.add_event_handler(Events.COMPLETED, lambda _: writer.close())
    if cfg.train.mlflow_uri:
        from monai.handlers import MLFlowHandler

        params = {f"{s}.{k}": str(v) for s, section in config_to_dict(cfg).items() for k, v in section.items()}
        common = {"tracking_uri": cfg.train.mlflow_uri, "experiment_name": "radpipe", "run_name": run_dir.name}
        MLFlowHandler(**common, iteration_log=True, epoch_log=False, output_transform=loss,
                      tag_name="train_loss", experiment_param=params, close_on_complete=True).attach(trainer)
        MLFlowHandler(**common, iteration_log=False, epoch_log=True).attach(evaluator)
