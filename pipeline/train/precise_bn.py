"""Precise BatchNorm: running statistics recomputed from training batches before each validation.

BatchNorm's running mean and variance are exponential averages (momentum 0.1) of batch
statistics taken while the weights move. With few iterations per epoch (small cohorts) they lag
the weights far behind, and the eval-mode model is badly calibrated (every case gets the same
class) although the train-mode model separates the classes. As in pycls / Detectron's "precise
BN", :func:`recompute_bn_stats` replaces them by the statistics of the layer inputs over up to
``train.precise_bn`` training batches, forwarded with the current weights.

Only BatchNorm modules in training mode are recomputed: frozen stages (``linear-probe``,
``gradual``) run in eval mode and keep their pretrained statistics. During the pass BatchNorm
normalises with batch statistics, as in training, so every layer sees the inputs it sees in
training; dropout is switched off, so the statistics are those of eval-time inputs (and no
random number is drawn). The statistics are pooled exactly over all cases and positions of the
batches (Chan's parallel mean / variance), not averaged per batch, and under DDP over all ranks,
so every rank ends with the same values. Weights and optimiser state are not touched: training
after the pass is the same as without it.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from pipeline.train.distributed import DistInfo

log = logging.getLogger("radpipe")


def training_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm modules (SyncBatchNorm included) of ``model`` in training mode that track running statistics."""
    return [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        and m.running_mean is not None and m.running_var is not None
    ]


class _Moments:
    """Count, mean and sum of squared deviations per channel, merged batch by batch (float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        n = x.numel() // max(1, x.shape[1])
        if n == 0:
            return
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total


def _all_reduce_moments(moments: list[_Moments], channels: list[int], device: torch.device) -> None:
    """Pool every layer's moments over ranks (sums of x and x**2 in float64, one all-reduce)."""
    import torch.distributed as dist

    target = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else \
        torch.device("cpu")
    parts = []
    for m, c in zip(moments, channels):
        if m.mean is None or m.m2 is None:
            parts.append(torch.zeros(1 + 2 * c, dtype=torch.float64, device=target))
            continue
        s1 = m.mean * m.count
        s2 = m.m2 + m.count * m.mean.square()
        parts.append(torch.cat([torch.tensor([float(m.count)], dtype=torch.float64, device=s1.device), s1, s2])
                     .to(target))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    offset = 0
    for m, c in zip(moments, channels):
        count = int(round(float(flat[offset])))
        s1, s2 = flat[offset + 1: offset + 1 + c].to(device), flat[offset + 1 + c: offset + 1 + 2 * c].to(device)
        offset += 1 + 2 * c
        if count == 0:
            m.count, m.mean, m.m2 = 0, None, None
            continue
        m.count, m.mean = count, s1 / count
        m.m2 = (s2 - count * m.mean.square()).clamp_min(0.0)


def recompute_bn_stats(
    model: nn.Module,
    inputs: Iterable[torch.Tensor],
    *,
    dist_info: DistInfo | None = None,
    autocast: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Set the running mean / variance of ``model``'s training-mode BatchNorm layers from ``inputs``.

    Each batch is forwarded under ``torch.no_grad()`` with those BatchNorm layers normalising by
    batch statistics (as in training) and dropout off; the inputs of every such layer are pooled
    over all batches (and ranks), and its ``running_mean`` / ``running_var`` (unbiased, as PyTorch
    keeps it) are set to their mean / variance. ``num_batches_tracked``, the weights and the
    train / eval mode of every module are left as they were. Eval-mode BatchNorm layers (frozen
    stages) are not changed. Without training-mode BatchNorm layers nothing is forwarded.

    Args:
        model: the bare model (no DDP wrapper), in the mode it trains in.
        inputs: batches of model inputs, already on the model's device.
        dist_info: under DDP (``enabled``), statistics are pooled over all ranks; every rank must
            forward the same number of batches (SyncBatchNorm communicates in each forward).
        autocast: ``torch.autocast`` kwargs (``device_type``, ``dtype``) of the trainer's forward;
            None: full precision.

    Returns:
        The number of BatchNorm layers and of batches used.
    """
    bns = training_batchnorms(model)
    if not bns:
        return 0, 0
    saved = [(bn.running_mean.clone(), bn.running_var.clone(),
              None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()) for bn in bns]
    modes = {m: m.training for m in model.modules()}
    moments = [_Moments() for _ in bns]
    hooks = [bn.register_forward_pre_hook(m) for bn, m in zip(bns, moments)]
    batches = 0
    try:
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        with torch.no_grad():
            for x in inputs:  # loading (augmentation) outside autocast: a CPU autocast would reach its matmuls
                with torch.autocast(**autocast) if autocast else contextlib.nullcontext():
                    model(x)
                batches += 1
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    device = bns[0].running_mean.device
    if dist_info is not None and dist_info.enabled:
        _all_reduce_moments(moments, [bn.num_features for bn in bns], device)
    with torch.no_grad():
        for bn, m, (mean, var, tracked) in zip(bns, moments, saved):
            if tracked is not None and bn.num_batches_tracked is not None:
                bn.num_batches_tracked.copy_(tracked)
            if m.mean is None or m.m2 is None or m.count < 2:  # no data reached this layer: keep its statistics
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                continue
            bn.running_mean.copy_(m.mean.to(device, bn.running_mean.dtype))
            bn.running_var.copy_((m.m2 / (m.count - 1)).to(device, bn.running_var.dtype))
    return len(bns), batches


class _HeadSampler(Sampler[Any]):
    """The first ``count`` items of ``sampler``'s current epoch."""

    def __init__(self, sampler: Sampler[Any], count: int) -> None:
        self.sampler = sampler
        self.count = count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.sampler), self.count)

    def __len__(self) -> int:
        return min(self.count, len(self.sampler))  # type: ignore[arg-type]


def head_loader(train_loader: DataLoader, batches: int) -> DataLoader:
    """A loader of the first ``batches`` batches of ``train_loader``'s current epoch.

    Same dataset, sampler (so the same cases, augmented the same way under an
    :class:`~pipeline.train.distributed.EpochSeededDataset`), batch size and collation; its own
    generator and non-persistent workers, so neither the trainer's iterator (persistent workers
    share one) nor any global random generator is touched.
    """
    from monai.data import ThreadDataLoader

    threaded = isinstance(train_loader, ThreadDataLoader)
    size = int(train_loader.batch_size or 1)
    return DataLoader(
        train_loader.dataset,
        batch_size=size,
        sampler=_HeadSampler(train_loader.sampler, batches * size),
        collate_fn=train_loader.collate_fn,
        num_workers=0 if threaded else train_loader.num_workers,
        pin_memory=train_loader.pin_memory,
        drop_last=train_loader.drop_last,
        generator=torch.Generator(),
    )


class PreciseBN:
    """Trainer EPOCH_COMPLETED handler: :func:`recompute_bn_stats` on the epochs that validate.

    Attach it before the validation handler (and the DDP buffer broadcast), so the validation
    metrics, ``best.pt`` and ``last.pt`` all carry the recomputed statistics.

    Args:
        model: the bare model.
        train_loader: the trainer's loader (its sampler's epoch is the epoch just trained).
        batches: at most this many batches (``train.precise_bn``; 0: the handler does nothing).
        val_every: validation interval in epochs; the last epoch always validates.
        dist_info: the run's process group.
        autocast: ``torch.autocast`` kwargs of the training forward when the engine does not autocast itself (bf16
            on a CPU, :class:`~pipeline.train.precision.CpuAutocast`); None: the engine's AMP settings.
    """

    def __init__(self, model: nn.Module, train_loader: DataLoader, batches: int, val_every: int,
                 dist_info: DistInfo, autocast: dict[str, Any] | None = None) -> None:
        self.model = model
        self.autocast = autocast
        self.loader = head_loader(train_loader, batches) if batches > 0 else None
        self.val_every = val_every
        self.dist_info = dist_info

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if self.loader is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch = engine.state.epoch
        if self.loader is None or (epoch % self.val_every and epoch != engine.state.max_epochs):
            return
        if not training_batchnorms(self.model):
            return
        device = engine.state.device
        prepare = getattr(engine.prepare_batch, "plain", engine.prepare_batch)  # unmixed images (mixup)

        def images() -> Iterator[torch.Tensor]:
            for batch in self.loader:
                yield prepare(batch, device, engine.non_blocking, **engine.to_kwargs)[0]

        autocast = self.autocast
        if autocast is None and engine.amp:
            autocast = {"device_type": torch.device(device).type, **engine.amp_kwargs}
        layers, count = recompute_bn_stats(self.model, images(), dist_info=self.dist_info, autocast=autocast)
        log.debug("precise BN: epoch %d, running statistics of %d BatchNorm layers recomputed from %d batches",
                  epoch, layers, count)
