"""Key translation: the names of a weights file's tensors -> our model's state-dict keys.

Our keys are ``net.<MONAI name>`` (backbone) and ``classifier.fc.*`` (head). Tables:

* torchvision ResNet: identical to MONAI's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
  ``layer1.0.downsample.0/1`` ...); ``fc`` is the dropped ImageNet head.
* torchvision DenseNet-121: ``features.denseblockB.denselayerL.<norm1|conv1|norm2|conv2>`` ->
  ``features.denseblockB.denselayerL.layers.<...>`` (the released file's old ``norm.1`` style
  too); ``classifier`` is dropped.
* MedicalNet: ``module.`` stripped; ``conv_seg`` (segmentation head) dropped.
* bundle / run / file: keys that equal ours after one common prefix (``""``, ``net.``,
  ``module.``, ``module.net.`` ...), the source's classifier dropped.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import WeightsError

if TYPE_CHECKING:
    from models.backbone import Backbone
    from models.sources import SourceWeights

_OLD_DENSENET_KEY = re.compile(  # torchvision's released densenet121 file: denselayer1.norm.1.weight
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass
class KeyMap:
    """How a file's keys map onto a model: ``pairs`` (our key -> file key), ``dropped`` (file key ->
    reason, e.g. a classifier head), ``unexpected`` (file keys that fit nowhere)."""

    pairs: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)


def _torchvision_keys(state: Mapping[str, Any], family: str) -> tuple[dict[str, str], dict[str, str]]:
    """torchvision name -> our name, and the dropped ImageNet classifier."""
    mapped: dict[str, str] = {}
    dropped: dict[str, str] = {}
    head = "fc." if family == "resnet" else "classifier."
    for key in state:
        if key.startswith(head):
            dropped[key] = "ImageNet classifier (the task gets a new head)"
            continue
        ours = key
        if family == "densenet":
            ours = _OLD_DENSENET_KEY.sub(r"\1\2", ours)  # old files: denselayer1.norm.1.weight
            ours = re.sub(r"^(features\.denseblock\d+\.denselayer\d+)\.", r"\1.layers.", ours)
        mapped[key] = "net." + ours
    return mapped, dropped


def _medicalnet_keys(state: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    mapped: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key in state:
        ours = key[len("module."):] if key.startswith("module.") else key
        if ours.startswith("conv_seg."):
            dropped[key] = "MedicalNet segmentation head (the task gets a new head)"
        else:
            mapped[key] = "net." + ours
    return mapped, dropped


def _keys_by_suffix(state: Mapping[str, Any], model: Backbone) -> tuple[dict[str, str], dict[str, str]]:
    """Map keys that equal ours after one common prefix (``""``, ``net.``, ``module.net.``, ``model.`` ...)."""
    ours = {k[len("net."):] for k in model.backbone_keys()}
    counts: Counter[str] = Counter()
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in ours:
                counts[".".join(parts[:i])] += 1
                break
    prefix = max(counts, key=lambda p: (counts[p], -len(p))) if counts else ""
    lead = prefix + "." if prefix else ""
    # our own checkpoints: <wrapper>net.<net key> and <wrapper>classifier.<...>
    wrapper = lead[: -len("net.")] if (lead == "net." or lead.endswith(".net.")) else None
    mapped: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key in state:
        rest = key[len(lead):] if key.startswith(lead) else None
        if rest is not None and rest in ours:
            mapped[key] = "net." + rest
        elif (wrapper is not None and key.startswith(wrapper + "classifier.")) or (
            rest is not None and any(rest.startswith(h) for h in model.net_head_keys)
        ):
            dropped[key] = "classifier of the source model (the task gets a new head)"
    return mapped, dropped


def translate(source: SourceWeights, model: Backbone, family: str) -> KeyMap:
    """Map the file's keys onto ``model``'s backbone keys.

    Raises:
        WeightsError: the source kind has no mapping for this family.
    """
    if source.kind == "torchvision":
        if family not in ("resnet", "densenet"):
            raise WeightsError(f"torchvision weights map onto resnet18/34/50 and densenet121 only, not {model.name}")
        mapped, dropped = _torchvision_keys(source.state, family)
    elif source.kind == "medicalnet":
        if family != "resnet":
            raise WeightsError(f"MedicalNet weights are 3D ResNets; they cannot start {model.name}")
        mapped, dropped = _medicalnet_keys(source.state)
    else:
        mapped, dropped = _keys_by_suffix(source.state, model)
    backbone = set(model.backbone_keys())
    result = KeyMap(dropped=dropped)
    for key in source.state:
        if key in dropped:
            continue
        ours = mapped.get(key)
        if ours in backbone and ours not in result.pairs:
            result.pairs[ours] = key
        else:
            result.unexpected.append(key)
    return result
