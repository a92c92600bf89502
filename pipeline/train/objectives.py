"""What a model is trained and judged on per task: outputs, losses and validation metrics.

The outputs of a model per task (what :func:`pipeline.train.outputs.probabilities` turns into probabilities):

* ``binary`` and ``multiclass``: one logit per class (softmax; cross-entropy loss, class
  weights with ``data.balance: loss``). Binary metrics use the probability of class index 1.
* ``multilabel``: one logit per label (sigmoid; BCE-with-logits, positive weights with
  ``data.balance: loss``).
* ``regression``: one value (identity; MSE loss, or L1 with ``train.regression_loss: l1``).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from monai.utils import CommonKeys as Keys

from models.ensemble import member_loss
from pipeline import statistics as m
from pipeline.train.distributed import DistInfo, all_gather_rows
from pipeline.train.outputs import probabilities

CLASSIFICATION_METRICS = ("auc", "balanced_accuracy", "f1", "accuracy")
BINARY_METRICS = CLASSIFICATION_METRICS + ("sensitivity", "specificity")
REGRESSION_METRICS = ("mae", "rmse")


def metric_names(task: str) -> tuple[str, ...]:
    """Validation metrics computed for ``task``, in the column order of ``metrics.csv``."""
    if task == "binary":
        return BINARY_METRICS + ("loss",)
    if task == "regression":
        return REGRESSION_METRICS + ("loss",)
    return CLASSIFICATION_METRICS + ("loss",)


class TaskLoss(torch.nn.Module):
    """The loss of a task, shaping targets as the criterion expects.

    Args:
        task: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        weight: class weights (cross-entropy) or positive weights (multi-label), or None.
        regression_loss: ``mse`` or ``l1``.
        label_smoothing: classification targets moved this far towards uniform (0: off).
    """

    def __init__(self, task: str, weight: torch.Tensor | None = None, regression_loss: str = "mse",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.task = task
        self.label_smoothing = label_smoothing if task != "regression" else 0.0
        if task in ("binary", "multiclass"):
            self.criterion: torch.nn.Module = torch.nn.CrossEntropyLoss(weight=weight,
                                                                        label_smoothing=self.label_smoothing)
        elif task == "multilabel":
            self.criterion = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
        else:
            self.criterion = torch.nn.L1Loss() if regression_loss == "l1" else torch.nn.MSELoss()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of logits ``(B, outputs)``, or of an ensemble's members ``(B, K, outputs)`` in training
        (:func:`models.ensemble.member_loss`: the members' mean, each member trained on its own loss)."""
        if pred.ndim == 3:
            return member_loss(self._loss, pred, target)
        return self._loss(pred, target)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = pred.float()
        if self.task in ("binary", "multiclass"):
            if target.is_floating_point() and target.shape == pred.shape:  # class probabilities (mixup)
                return self.criterion(pred, target)
            return self.criterion(pred, target.reshape(-1).long())
        target = target.reshape(pred.shape).float()
        if self.task == "multilabel" and self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return self.criterion(pred, target)


def compute_metrics(task: str, logits: torch.Tensor, targets: torch.Tensor, loss_fn: TaskLoss) -> dict[str, float]:
    """All validation metrics of a task from gathered logits and targets (via :mod:`pipeline.statistics`).

    Binary: positive = class index 1, called at probability >= 0.5; AUC, sensitivity, specificity,
    F1, accuracy, balanced accuracy. Multi-class: argmax calls, macro one-vs-rest AUC and F1, balanced
    accuracy = mean recall of the classes present. Multi-label: per label at 0.5, macro means of AUC,
    F1 and balanced accuracy, accuracy over all (case, label) pairs. Regression: MAE and RMSE.
    Undefined values (one class only) are NaN.
    """
    out: dict[str, float] = {"loss": float(loss_fn(logits, targets)) if len(logits) else float("nan")}
    probs = probabilities(logits, task).cpu().numpy().astype(float)
    if task == "regression":
        y = targets.reshape(probs.shape).float().cpu().numpy()
        r = m.regression_metrics(y.reshape(-1), probs.reshape(-1))
        out.update(mae=r["mae"], rmse=r["rmse"])
        return out
    if task == "multilabel":
        y = targets.reshape(probs.shape).cpu().numpy().round().astype(int)
        per_label = [m.binary_metrics(y[:, k], probs[:, k], 0.5) for k in range(y.shape[1])]

        def mean(key: str) -> float:
            values = [r[key] for r in per_label if np.isfinite(r[key])]
            return float(np.mean(values)) if values else float("nan")

        out["auc"] = float(m.macro_auc(y, probs)[0]) if len(y) else float("nan")
        out["accuracy"] = float(((probs >= 0.5) == y).mean()) if y.size else float("nan")
        out.update(balanced_accuracy=mean("balanced_accuracy"), f1=mean("f1"))
        return out
    y = targets.reshape(-1).long().cpu().numpy()
    if task == "binary":
        r = m.binary_metrics(y, probs[:, 1], 0.5)
        names = BINARY_METRICS
    else:
        r = m.multiclass_metrics(y, probs)
        names = CLASSIFICATION_METRICS
    out.update({k: float(r[k]) for k in names})
    return out


def key_value(metrics: dict[str, float], key_metric: str) -> float:
    """The value of ``train.key_metric`` (``neg_mae`` and ``neg_loss`` are negated, higher is better)."""
    if key_metric.startswith("neg_"):
        return -metrics[key_metric[4:]]
    return metrics[key_metric]


def better(current: float, best: float, current_loss: float = math.nan, best_loss: float = math.nan) -> bool:
    """Whether an epoch's validation beats the best so far (the rule that picks ``best.pt``).

    The higher key metric wins. On a tie (common on small validation sets: an AUC of 1.0 reached early
    and kept) the lower validation loss wins, and on a tie of both the earlier epoch stays best. NaN is
    never better; anything beats a NaN best; a finite loss beats a NaN one.

    >>> better(0.9, 0.8), better(1.0, 1.0, current_loss=0.2, best_loss=0.3), better(1.0, 1.0, 0.3, 0.2)
    (True, True, False)
    >>> better(1.0, 1.0, 0.3, 0.3)  # same metric, same loss: the earlier epoch stays best
    False
    """
    if math.isnan(current):
        return False
    if math.isnan(best) or current != best:
        return math.isnan(best) or current > best
    if math.isnan(current_loss):
        return False
    return math.isnan(best_loss) or current_loss < best_loss


class BestEpoch:
    """The evaluator's ``metric_cmp_fn``: :func:`better` with the validation loss as the tie-break.

    MONAI passes only the key metric; the loss of the epoch being judged is read from the evaluator's
    metrics (``loss``, stored by :class:`ValidationMetrics`), and the loss of the best epoch is kept
    here (saved in checkpoints as ``best_loss`` so a resumed run judges alike).
    """

    def __init__(self) -> None:
        self.best_loss = math.nan
        self.evaluator: Any = None

    def attach(self, evaluator: Any) -> None:
        """Read the evaluator's losses; record the loss of every epoch MONAI marks best."""
        from ignite.engine import Events

        self.evaluator = evaluator
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._record)  # after MONAI's comparison

    def _loss(self) -> float:
        metrics = getattr(getattr(self.evaluator, "state", None), "metrics", None) or {}
        return float(metrics.get("loss", math.nan))

    def _record(self, evaluator: Any) -> None:
        if evaluator.state.best_metric_epoch == evaluator.state.epoch:
            self.best_loss = self._loss()

    def __call__(self, current: float, best: float) -> bool:
        return better(float(current), float(best), self._loss(), self.best_loss)


class ValidationMetrics(Metric):
    """Ignite metric gathering logits and targets over the epoch (and over ranks), then scoring them.

    Attached under the key metric's name, whose value it returns; :meth:`completed` also stores
    every metric of :func:`compute_metrics` in ``engine.state.metrics``. ``num_outputs`` and
    ``device`` shape the empty tensors of a rank that got no validation case.
    """

    def __init__(
        self,
        task: str,
        loss_fn: TaskLoss,
        key_metric: str,
        dist_info: DistInfo,
        num_outputs: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.task = task
        self.num_outputs = num_outputs
        self.device = torch.device(device)
        self.loss_fn = copy.deepcopy(loss_fn).cpu()
        self.key_metric = key_metric
        self.dist_info = dist_info
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        super().__init__(output_transform=lambda out: (out[Keys.PRED], out[Keys.LABEL]))

    def reset(self) -> None:
        self._logits, self._targets = [], []

    def update(self, output: Sequence[torch.Tensor]) -> None:
        pred, target = output
        self._logits.append(pred.detach().float())
        self._targets.append(target.detach().float().reshape(len(pred), -1))

    def compute_all(self) -> dict[str, float]:
        """Every metric over all cases of all ranks."""
        width = self.num_outputs if self.task == "multilabel" else 1
        empty = (torch.empty(0, self.num_outputs, device=self.device), torch.empty(0, width, device=self.device))
        logits = torch.cat(self._logits) if self._logits else empty[0]  # a rank may get no validation case
        targets = torch.cat(self._targets) if self._targets else empty[1]
        logits = all_gather_rows(logits, self.dist_info).cpu()
        targets = all_gather_rows(targets, self.dist_info).cpu()
        metrics = compute_metrics(self.task, logits, targets, self.loss_fn)
        metrics[self.key_metric] = key_value(metrics, self.key_metric)
        return metrics

    def compute(self) -> float:
        return self.compute_all()[self.key_metric]

    def completed(self, engine: Any, name: str) -> None:
        metrics = self.compute_all()
        engine.state.metrics.update(metrics)
        engine.state.metrics[name] = metrics[self.key_metric]


