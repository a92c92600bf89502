"""The MONAI engines of a run: optimiser, LR schedule, batch preparation, trainer and evaluator.

The LR schedule is stepped every iteration: ``cosine`` warms up linearly over
``warmup_epochs`` then follows a half cosine to 0 at the last iteration; ``step``
multiplies the LR by ``gamma`` from the first iteration of each epoch in ``step_epochs``
(after the same warm-up); ``none`` keeps it constant. Parameter groups keep their own
base LR (head LR, layer-wise decay), all scaled by the same factor.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.transforms import Compose, EnsureTyped
from monai.utils import CommonKeys as Keys
from monai.utils import set_determinism
from torch.nn.parallel import DistributedDataParallel

from pipeline.config import Config
from pipeline.train.handlers import seed_everything
from pipeline.train.objectives import BestEpoch
from pipeline.train.precision import CpuAutocast, amp_settings, cpu_autocast_kwargs, uses_channels_last


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


class MixupPreparer:
    """The training ``prepare_batch`` with mixup (Zhang et al., 2018): ``lam x + (1 - lam) x[perm]``, targets alike.

    ``lam ~ Beta(alpha, alpha)`` and the permutation are drawn from ``(seed, iteration)`` (set by the trainer's
    ``ITERATION_STARTED`` handler, :meth:`attach`), so a resumed run draws what the uninterrupted one drew. Class
    targets become probabilities (one-hot, mixed); multi-label and regression targets are mixed as they are.
    ``plain`` is the preparer without mixing (precise BN takes its batches from it).
    """

    def __init__(self, plain: BatchPreparer, alpha: float, num_classes: int, seed: int) -> None:
        self.plain, self.alpha, self.num_classes, self.seed = plain, alpha, num_classes, seed
        self.iteration = 0

    def attach(self, trainer: Any) -> None:
        @trainer.on(Events.ITERATION_STARTED)
        def _iteration(engine: Any) -> None:
            self.iteration = engine.state.iteration

    def __call__(
        self, batch: dict[str, Any], device: torch.device, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.plain(batch, device, non_blocking, **kwargs)
        rng = np.random.default_rng([self.seed, self.iteration])
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = torch.as_tensor(rng.permutation(len(image)), device=image.device)
        if self.plain.task in ("binary", "multiclass"):
            label = torch.nn.functional.one_hot(label, self.num_classes).float()
        mixed = image * lam + image[perm] * (1.0 - lam)
        return mixed.to(image.dtype), label * lam + label[perm] * (1.0 - lam)


def plain_tensors(chain: Any) -> Any:
    """``chain`` then image metadata dropped: the engines need none, and batches collate faster without it."""
    return Compose([*chain.transforms, EnsureTyped("image", track_meta=False)])


def configure_torch(cfg: Config, device: torch.device) -> None:
    """Seeds and determinism (``train.deterministic``), cuDNN autotuning otherwise."""
    if cfg.train.deterministic:
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
    """Device, channels-last (:func:`uses_channels_last`), SyncBatchNorm + DDP under torchrun, ``torch.compile``."""
    model.to(device)
    if uses_channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if dist_info.enabled:
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
    num_outputs: int = 2,
) -> tuple[Any, Any]:
    """MONAI ``SupervisedTrainer`` and ``SupervisedEvaluator`` of a run (AMP, accumulation, key metric, mixup).

    ``num_outputs`` is the model's number of outputs (the classes that mixup's one-hot targets span).
    """
    amp, amp_kwargs = amp_settings(cfg, device)
    cpu_autocast = cpu_autocast_kwargs(cfg, device)
    if cpu_autocast is not None:  # MONAI's engines autocast for CUDA only
        net, eval_net = CpuAutocast(net, cpu_autocast["dtype"]), CpuAutocast(eval_net, cpu_autocast["dtype"])
        amp, amp_kwargs = False, {}
    prepare = BatchPreparer(cfg.data.task, channels_last=uses_channels_last(cfg, device))
    train_prepare: Any = prepare
    if cfg.train.mixup > 0:
        train_prepare = MixupPreparer(prepare, cfg.train.mixup, num_outputs, cfg.train.seed)
    non_blocking = device.type == "cuda"
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=cfg.train.epochs,
        train_data_loader=train_loader,
        network=net,
        optimizer=optimizer,
        loss_function=loss_fn,
        prepare_batch=train_prepare,
        non_blocking=non_blocking,
        amp=amp,
        amp_kwargs=amp_kwargs,
        decollate=False,
        optim_set_to_none=True,
        accumulation_steps=cfg.train.grad_accum,
    )
    best_epoch = BestEpoch()
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=val_loader,
        network=eval_net,
        prepare_batch=prepare,
        non_blocking=non_blocking,
        key_val_metric={cfg.train.key_metric: metric},
        metric_cmp_fn=best_epoch,
        amp=amp,
        amp_kwargs=amp_kwargs,
        decollate=False,
    )
    best_epoch.attach(evaluator)
    if isinstance(train_prepare, MixupPreparer):
        train_prepare.attach(trainer)
    if amp and amp_kwargs.get("dtype") == torch.bfloat16:
        @trainer.on(Events.STARTED)
        def _no_loss_scaling(engine: Any) -> None:  # bf16 has fp32's range: a scaler only costs time
            engine.scaler = torch.amp.GradScaler("cuda", enabled=False)

    return trainer, evaluator
