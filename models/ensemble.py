"""A deep ensemble in one model: ``model.members: K`` networks of one architecture, trained side by side.

The members start from different random weights (or the same pretrained weights with different heads) and
see the same batches; each is trained on its own loss, exactly as if it were trained alone (the loss of the
ensemble is the mean of the members' losses, with each member's gradient that of its own loss: see
:func:`member_loss`). Prediction is the mean of the members' logits, so everything that runs a model
(validation, ``evaluate``, ``predict``, test-time augmentation, CAMs) runs an ensemble unchanged. In
training mode :meth:`MemberEnsemble.forward` returns every member's logits, ``(B, K, outputs)``.

State-dict keys are ``members.<k>.<key of a single model>``; ``model_info["options"]["members"]`` rebuilds it.
Depth stages (freezing, layer-wise learning rates) are those of one member, each stage holding the
matching modules of every member.

Example:
    >>> import torch
    >>> from models.factory import create_model
    >>> model = create_model("resnet10", 2, 1, 2, members=3).eval()
    >>> model(torch.zeros(4, 1, 32, 32)).shape, model.train()(torch.zeros(4, 1, 32, 32)).shape
    (torch.Size([4, 2]), torch.Size([4, 3, 2]))
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models.backbone import Backbone


class MemberEnsemble(nn.Module):
    """``K`` backbones of one architecture whose logits are averaged.

    Args:
        members: the networks (same registry name, dimensions, channels and outputs).

    Attributes:
        name, spatial_dims, in_channels, num_classes, cam_layer: those of a member (``cam_layer`` of the first
            member: ``members.0.<layer>``).
        options: the members' options plus ``members``.
        weights_report: the first member's (every member read the same source).
    """

    def __init__(self, members: Sequence[Backbone]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least 2 members")
        first = members[0]
        for m in members[1:]:
            if (m.name, m.spatial_dims, m.in_channels, m.num_classes) != (first.name, first.spatial_dims,
                                                                          first.in_channels, first.num_classes):
                raise ValueError("ensemble members must share name, dimensions, channels and outputs")
        self.members = nn.ModuleList(members)
        self.name = first.name
        self.spatial_dims = first.spatial_dims
        self.in_channels = first.in_channels
        self.num_classes = first.num_classes
        self.options = {**first.options, "members": len(members)}
        self.cam_layer = f"members.0.{first.cam_layer}" if first.cam_layer else ""
        self.weights_report: Any = first.weights_report
        self._frozen: frozenset[str] = frozenset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean logits ``(B, outputs)`` in eval mode; every member's ``(B, K, outputs)`` in training mode."""
        logits = torch.stack([m(x) for m in self.members], dim=1)
        return logits if self.training else logits.mean(dim=1)

    # --- depth order (one member's stages, each holding every member's modules) -------------------
    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """``(stage, modules of every member)`` in one member's depth order."""
        per_member = [m.stages() for m in self.members]
        return [(name, [mod for stages in per_member for mod in stages[i][1]])
                for i, (name, _) in enumerate(per_member[0])]

    def stage_extra_parameters(self) -> dict[str, list[nn.Parameter]]:
        merged: dict[str, list[nn.Parameter]] = {}
        for m in self.members:
            for stage, params in m.stage_extra_parameters().items():
                merged.setdefault(stage, []).extend(params)
        return merged

    param_groups = Backbone.param_groups
    stage_names = Backbone.stage_names
    frozen_stages = Backbone.frozen_stages
    set_frozen = Backbone.set_frozen
    train = Backbone.train

    def member_layers(self, layer: str) -> list[str]:
        """The layer ``layer`` names, in every member: ``members.<k>.X`` or a member's own name ``X``."""
        parts = layer.split(".", 2)
        inner = parts[2] if len(parts) == 3 and parts[0] == "members" and parts[1].isdigit() else layer
        return [f"members.{k}.{inner}" for k in range(len(self.members))]

    def extra_repr(self) -> str:
        return f"members={len(self.members)}"


def member_loss(criterion: Any, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss of every member's logits ``(B, K, outputs)``: their mean as the value, each member's own gradient.

    The value (what ``metrics.csv`` logs) is comparable with a single network's loss; the gradient reaching
    member ``k`` is that of its own loss, not ``1/K`` of it, so every optimiser (SGD included) trains each
    member as it would train it alone.
    """
    total = torch.stack([criterion(pred[:, k], target) for k in range(pred.shape[1])]).sum()
    return total.detach() / pred.shape[1] + (total - total.detach())
