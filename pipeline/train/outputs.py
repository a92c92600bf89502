"""What a model's outputs mean per task: the one rule turning logits into probabilities.

Training (validation metrics), evaluation and prediction all take it from here, so a model is read the same way
everywhere. Only torch is imported: inference does not load the training engines.
"""
from __future__ import annotations

import torch


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Model outputs (B, K) -> probabilities (B, classes) in float32; regression values unchanged.

    ``binary`` and ``multiclass``: softmax over the logits (a single binary logit becomes
    ``[1 - sigmoid, sigmoid]``); ``multilabel``: sigmoid per label; ``regression``: identity.
    """
    logits = logits.float()
    if task == "regression":
        return logits
    if task == "multilabel":
        return torch.sigmoid(logits)
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)
