"""The uniform interface every radpipe model has, whatever MONAI network is inside.

A :class:`Backbone` wraps one MONAI network (``self.net``, its own classifier removed)
and adds a new head (``self.classifier``). Its state-dict keys are therefore
``net.<MONAI name>`` for the backbone and ``classifier.fc.*`` for the head; run
checkpoints (``{"model": model.state_dict(), ...}``) use exactly these keys.

Depth order for freezing and layer-wise learning rates comes from :meth:`Backbone.stages`:
``stem``, ``stage1`` ... ``stageN``, ``head``. Frozen stages (see :meth:`Backbone.set_frozen`)
stay in eval mode even when ``model.train()`` is called, so their BatchNorm statistics
do not move; MONAI's ``SupervisedTrainer`` calls ``network.train()`` every iteration and
that is fine.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Dropout then a linear layer: pooled features -> logits."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))


class Backbone(nn.Module, abc.ABC):
    """A backbone from the registry: MONAI network + new classifier + transfer-learning hooks.

    Attributes:
        name: registry name (e.g. ``resnet18``).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: outputs of the head.
        feature_dim: length of the pooled feature vector.
        cam_layer: name (for ``model.get_submodule`` / MONAI ``GradCAM(target_layers=...)``) of the
            last convolutional feature layer.
        stem_conv: name of the first convolution (the one whose input channels are adapted).
        net_head_keys: key prefixes of the MONAI network's own classifier, dropped from weight files.
        options: the architecture options it was built with (JSON-serialisable; dropout excluded):
            ``create_model(name, spatial_dims, in_channels, num_classes, dropout=..., **model.options)``
            rebuilds the same architecture, e.g. a ResNet whose ``shortcut_type`` came from a MedicalNet file.
        weights_report: the :class:`~models.weights.WeightsReport` of the weights loaded at creation.
    """

    cam_layer: str = ""
    stem_conv: str = ""
    net_head_keys: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        net: nn.Module,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        feature_dim: int,
        dropout: float = 0.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.options = dict(options or {})
        self.classifier = ClassifierHead(feature_dim, num_classes, dropout)
        self.weights_report: Any = None
        self._frozen: frozenset[str] = frozenset()

    # --- forward ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps before global pooling, ``(B, C, *spatial)`` (tokens ``(B, N, C)`` for a ViT)."""

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """Global average pooling of :meth:`forward_features` to ``(B, feature_dim)``."""
        return maps.flatten(2).mean(dim=2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector ``(B, feature_dim)`` the head sees."""
        return self.pool(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``; the head runs in float32 under autocast.

        A bf16 head would round the logits to 8 significant bits, so close cases would tie in probability (and in
        AUC ranking); float32 costs one small matrix product.
        """
        feats = self.features(x)
        if torch.is_autocast_enabled(feats.device.type):
            with torch.autocast(feats.device.type, enabled=False):
                return self.classifier(feats.float())
        return self.classifier(feats)

    def reset_classifier(self, num_classes: int, dropout: float | None = None) -> None:
        """Replace the head by a new one for ``num_classes`` outputs (dropout kept unless given)."""
        if dropout is None:
            old = self.classifier.dropout
            dropout = old.p if isinstance(old, nn.Dropout) else 0.0
        device = self.classifier.fc.weight.device
        self.classifier = ClassifierHead(self.feature_dim, num_classes, dropout).to(device)
        self.num_classes = num_classes

    # --- depth order -----------------------------------------------------------------------------
    @abc.abstractmethod
    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Modules by depth: ``("stem", [...]), ("stage1", [...]), ..., ("head", [classifier])``."""

    def stage_extra_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters held directly by the network rather than by a stage module (e.g. a ViT's class token)."""
        return {}

    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Every parameter exactly once, grouped by depth, stem first and head last.

        Raises:
            RuntimeError: a parameter belongs to no stage (a bug in the family's :meth:`stages`).
        """
        seen: set[int] = set()
        extra = self.stage_extra_parameters()
        groups: list[tuple[str, list[nn.Parameter]]] = []
        for stage, modules in self.stages():
            params: list[nn.Parameter] = []
            candidates = [p for m in modules for p in m.parameters()] + list(extra.get(stage, []))
            for p in candidates:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
            groups.append((stage, params))
        missing = [n for n, p in self.named_parameters() if id(p) not in seen]
        if missing:
            raise RuntimeError(f"{self.name}: parameters in no stage: {missing[:5]} ({len(missing)} in all)")
        return groups

    def stage_names(self) -> list[str]:
        """Names of :meth:`stages` in depth order."""
        return [name for name, _ in self.stages()]

    # --- freezing --------------------------------------------------------------------------------
    @property
    def frozen_stages(self) -> frozenset[str]:
        """Stages currently frozen by :meth:`set_frozen`."""
        return self._frozen

    def set_frozen(self, stages: Iterable[str]) -> None:
        """Freeze exactly ``stages`` (all others become trainable).

        Frozen parameters get ``requires_grad=False`` and their ``.grad`` is cleared, so an
        optimiser skips them entirely (no weight decay either). Frozen stages run in eval
        mode (BatchNorm uses its running statistics, which stay unchanged; dropout is off),
        also after ``model.train()``.

        Raises:
            ValueError: a stage name is unknown.
        """
        names = frozenset(stages)
        known = self.stage_names()
        unknown = sorted(names - set(known))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown} of {self.name}; stages: {', '.join(known)}")
        self._frozen = names
        for stage, params in self.param_groups():
            for p in params:
                p.requires_grad_(stage not in names)
                if stage in names:
                    p.grad = None
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Set train/eval mode; frozen stages stay in eval mode.

        :class:`~models.ensemble.MemberEnsemble` uses this method too, hence ``nn.Module.train`` by name, not
        ``super()``.
        """
        nn.Module.train(self, mode)
        if mode and self._frozen:
            for stage, modules in self.stages():
                if stage in self._frozen:
                    for m in modules:
                        m.eval()
        return self

    # --- weights ---------------------------------------------------------------------------------
    def backbone_keys(self) -> list[str]:
        """State-dict keys of the backbone (everything but the head), in model order."""
        return [k for k in self.state_dict() if not k.startswith("classifier.")]

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"num_classes={self.num_classes}, feature_dim={self.feature_dim}"
        )
