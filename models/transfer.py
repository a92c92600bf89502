"""Transfer strategies: what trains, when, and at which learning rate.

Strategies (``transfer.strategy``):

* ``finetune``: every stage trains from the first epoch.
* ``linear-probe``: only the head trains; the backbone is frozen and stays in eval mode
  (BatchNorm running statistics do not move) even when ``model.train()`` is called.
* ``gradual``: the head trains first; every ``unfreeze_every`` epochs one more stage, from
  the top down, joins it (epoch ``k * unfreeze_every`` unfreezes the k-th stage below the head).

Learning rates: the head gets ``transfer.head_lr`` (0: the base LR); the stage just below
the head gets ``lr * layer_decay``, the next ``lr * layer_decay**2`` ... down to the stem.

How the trainer uses it::

    schedule = TransferSchedule(model, cfg.transfer)          # applies epoch 0 already
    groups = build_param_groups(model, cfg.transfer, cfg.train.lr, cfg.train.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    for epoch in range(epochs):                               # 0-based; ignite: engine.state.epoch - 1
        schedule.on_epoch_start(epoch)                        # before the epoch's first batch
        model.train()                                         # frozen stages stay in eval mode
        ...
        optimizer.zero_grad(set_to_none=True)                 # frozen parameters keep grad None

A frozen parameter has ``requires_grad=False`` and ``grad=None``, so torch optimisers skip it
entirely (no weight decay, no momentum). With ``linear-probe`` the backbone is not even in the
optimiser. Under DDP, wrap the model after ``TransferSchedule(...)`` and, with ``gradual``, use
``find_unused_parameters=True`` or re-wrap when stages unfreeze (DDP fixes its parameter set
when it is built).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.backbone import Backbone
from models.config import STRATEGIES

if TYPE_CHECKING:
    from models.config import TransferConfig



def _check(transfer_cfg: TransferConfig) -> None:
    if transfer_cfg.strategy not in STRATEGIES:
        raise ValueError(f"unknown transfer strategy {transfer_cfg.strategy!r}; allowed: {', '.join(STRATEGIES)}")


def stage_learning_rates(model: Backbone, transfer_cfg: TransferConfig, base_lr: float) -> dict[str, float]:
    """Learning rate of every stage: head ``head_lr or base_lr``, stage k below the head ``base_lr * decay**k``."""
    names = model.stage_names()
    body = [n for n in names if n != "head"]
    rates = {name: base_lr * transfer_cfg.layer_decay ** (len(body) - i) for i, name in enumerate(body)}
    rates["head"] = transfer_cfg.head_lr or base_lr
    return rates


def build_param_groups(
    model: Backbone, transfer_cfg: TransferConfig, base_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimiser parameter groups, one per stage, for ``torch.optim.*(groups)``.

    Args:
        model: a registry model.
        transfer_cfg: the run's ``transfer`` section (strategy, head_lr, layer_decay).
        base_lr: ``train.lr``.
        weight_decay: ``train.weight_decay`` (same for every group).

    Returns:
        Dicts with ``name``, ``params``, ``lr`` and ``weight_decay``, stem first, head last. With
        ``linear-probe`` only the head group; otherwise every stage (frozen ones are skipped by
        the optimiser while their grads are None). Empty stages are left out.
    """
    _check(transfer_cfg)
    rates = stage_learning_rates(model, transfer_cfg, base_lr)
    groups = []
    for name, params in model.param_groups():
        if not params or (transfer_cfg.strategy == "linear-probe" and name != "head"):
            continue
        groups.append({"name": name, "params": params, "lr": rates[name], "weight_decay": weight_decay})
    return groups


class TransferSchedule:
    """Sets, epoch by epoch, which stages train (``requires_grad``) and which stay frozen in eval mode.

    Args:
        model: a registry model.
        transfer_cfg: the run's ``transfer`` section (strategy, unfreeze_every).

    The constructor applies epoch 0, so the model is ready for the first epoch.
    """

    def __init__(self, model: Backbone, transfer_cfg: TransferConfig) -> None:
        _check(transfer_cfg)
        self.model = model
        self.strategy = transfer_cfg.strategy
        self.unfreeze_every = max(1, int(transfer_cfg.unfreeze_every))
        self.on_epoch_start(0)

    def trainable_stages(self, epoch: int) -> list[str]:
        """Stages that train in ``epoch`` (0-based), in depth order."""
        names = self.model.stage_names()
        if self.strategy == "finetune":
            return names
        if self.strategy == "linear-probe":
            return ["head"]
        body = [n for n in names if n != "head"]
        unfrozen = min(len(body), max(0, epoch) // self.unfreeze_every)
        return body[len(body) - unfrozen:] + ["head"]

    def on_epoch_start(self, epoch: int) -> list[str]:
        """Freeze and unfreeze for ``epoch`` (0-based); call before the epoch's first batch.

        Returns:
            The stages that train in this epoch.
        """
        trainable = self.trainable_stages(epoch)
        self.model.set_frozen([n for n in self.model.stage_names() if n not in trainable])
        return trainable
