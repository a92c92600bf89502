"""The ``model`` and ``transfer`` sections of a run config, and the values each setting allows.

This module imports neither torch nor MONAI, so a config loads fast; :func:`models.factory.create_from_config`,
:class:`models.transfer.TransferSchedule` and :func:`models.transfer.build_param_groups` take these sections
alone, without a run config. The allowed values are owned here and used by the modules implementing them
(:data:`CHANNEL_MODES` and :data:`INFLATE_MODES` by :mod:`models.adapt`, :data:`STRATEGIES` by
:mod:`models.transfer`).

Example:
    >>> ModelConfig(name="resnet50", pretrained="torchvision:resnet50").channel_adapt
    'sum'
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: How the stem of an RGB model becomes the task's channels.
CHANNEL_MODES = ("sum", "mean")
#: How 2D kernels become 3D.
INFLATE_MODES = ("mean", "centre")
#: The most networks ``model.members`` may average.
MAX_MEMBERS = 16
#: How pretrained weights are trained on the new task.
STRATEGIES = ("finetune", "linear-probe", "gradual")


@dataclass(frozen=True)
class ModelConfig:
    """The backbone and where its weights come from.

    Attributes:
        name: registry name (``radpipe models`` lists them).
        pretrained: weight source, e.g. ``torchvision:PATH``, ``medicalnet:PATH``, ``bundle:DIR``, ``run:DIR``.
        small_input: small-input stem (3x3 conv, stride 1, no max-pool) for 28-64 px inputs.
        dropout: dropout before the classifier.
        channel_adapt: how an RGB stem becomes the task's channels: ``sum`` or ``mean``.
        inflate: 2D->3D kernel inflation: ``mean`` (spread over depth) or ``centre``.
        strict: a backbone key missing or shape-mismatched in the weights is an error.
        cam_layer: layer Grad-CAM hooks (a name of ``model.named_modules()``, e.g. ``net.layer2``); empty
            chooses the deepest layer whose feature map keeps about 8 voxels along each axis.
        members: networks of this architecture trained side by side and averaged (a deep ensemble in one run,
            :mod:`models.ensemble`); 1: a single network.
    """

    name: str = "resnet18"
    pretrained: str = ""
    small_input: bool = False
    dropout: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    channel_adapt: str = field(default="sum", metadata={"choices": CHANNEL_MODES})
    inflate: str = field(default="mean", metadata={"choices": INFLATE_MODES})
    strict: bool = True
    cam_layer: str = ""
    members: int = field(default=1, metadata={"range": (1, MAX_MEMBERS)})


@dataclass(frozen=True)
class TransferConfig:
    """How pretrained weights are trained on the new task.

    Attributes:
        strategy: ``finetune`` (all layers), ``linear-probe`` (frozen backbone, BatchNorm in eval mode)
            or ``gradual`` (unfreeze stage by stage, head first).
        head_lr: learning rate of the new head; 0 means ``train.lr``.
        layer_decay: learning-rate factor per stage going down from the head (1 = same LR everywhere).
        unfreeze_every: with ``gradual``, epochs between unfreezing one more stage.
    """

    strategy: str = field(default="finetune", metadata={"choices": STRATEGIES})
    head_lr: float = field(default=0.0, metadata={"range": (0.0, None)})
    layer_decay: float = field(default=1.0, metadata={"range": (0.0, 1.0)})
    unfreeze_every: int = field(default=1, metadata={"range": (1, None)})
