"""Exponential moving average (EMA) of a model's weights, validated and saved in place of the live weights.

With ``train.ema = d`` (0 < d < 1), after every training iteration the averaged weights move towards the live
ones: ``avg <- d' avg + (1 - d') live``, with the warm-up ``d' = min(d, (1 + n) / (10 + n))`` after ``n``
updates (as timm's ``ModelEmaV2`` and TF's ``ExponentialMovingAverage(num_updates=...)``), so the first
epochs are not dominated by the random initial weights. The average is a
:class:`torch.optim.swa_utils.AveragedModel`.

BatchNorm statistics: with precise BN on (``train.precise_bn`` > 0), the averaged model's buffers follow the
live ones during training and are recomputed for the averaged weights before each validation (the
:class:`~pipeline.train.precise_bn.PreciseBN` handler is given :attr:`WeightAverage.module`); with precise BN off,
the running statistics are averaged like the weights.

Checkpoints: ``model`` holds the averaged weights (what validation measured, what ``best.pt``, ``evaluate`` and
``run:`` weight sources use); ``last.pt`` adds ``ema`` = ``{"live": live weights, "updates": n}``, which a
resumed run restores, so it continues exactly as the uninterrupted run.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_average(decay: float) -> Any:
    """``multi_avg_fn`` of :class:`AveragedModel`: EMA with warm-up; integer buffers are copied."""

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        n = int(updates)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    return average


class WeightAverage:
    """Trainer handler keeping the EMA of ``model``'s weights.

    Args:
        model: the bare live model (already on its device).
        decay: ``train.ema``.
        average_buffers: average BatchNorm statistics too (when precise BN is off).
    """

    def __init__(self, model: nn.Module, decay: float, average_buffers: bool) -> None:
        self.model = model
        self.averaged = AveragedModel(model, multi_avg_fn=ema_average(decay), use_buffers=average_buffers)

    @property
    def module(self) -> nn.Module:
        """The averaged model (what the evaluator runs)."""
        return self.averaged.module

    def attach(self, engine: Any) -> None:
        """Update after every iteration; before each epoch's end handlers, copy the live modules' train flags."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.match_modes)

    def update(self, engine: Any = None) -> None:
        self.averaged.update_parameters(self.model)

    def match_modes(self, engine: Any = None) -> None:
        """Give each averaged module the live module's training flag (frozen stages stay in eval mode).

        The evaluator leaves the averaged model in eval mode; precise BN recomputes only the BatchNorm layers
        that train, as in the live model.
        """
        for averaged, live in zip(self.module.modules(), self.model.modules()):
            averaged.training = live.training

    def checkpoint_entries(self, live_state: dict[str, Any]) -> dict[str, Any]:
        """``model`` (averaged weights) and ``ema`` (live weights and update count) for a checkpoint."""
        return {"model": self.module.state_dict(),
                "ema": {"live": live_state, "updates": int(self.averaged.n_averaged)}}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Averaged weights and update count from a checkpoint written by :meth:`checkpoint_entries`."""
        self.module.load_state_dict(checkpoint["model"])
        self.averaged.n_averaged.fill_(int(checkpoint["ema"]["updates"]))


def live_weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The live (trained) weights of a checkpoint: ``ema.live`` when the run averaged its weights, else ``model``."""
    ema = checkpoint.get("ema")
    return ema["live"] if isinstance(ema, dict) and "live" in ema else checkpoint["model"]
