"""The backbone registry: each name's family, dimensions, weight sources accepted and options.

:func:`models.factory.create_model` builds a registered name. This module imports neither
torch nor MONAI, so ``radpipe models`` (:func:`list_models`) is fast and the weight loader can
look entries up without importing the factory.

Example:
    >>> get_entry("resnet18").sources
    ('torchvision', 'medicalnet', 'bundle', 'run', 'file')
    >>> get_entry("resnet81")
    Traceback (most recent call last):
    ...
    pipeline.errors.UnknownModelError: unknown model 'resnet81'; known models: ... Did you mean 'resnet18', ...
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline.errors import UnknownModelError

COMMON_OPTIONS = ("small_input", "dropout", "members")
OWN_SOURCES = ("bundle", "run", "file")


@dataclass(frozen=True)
class ModelEntry:
    """One registry name: the family class, its fixed arguments and what it accepts."""

    name: str
    family: str
    dims: tuple[int, ...]
    sources: tuple[str, ...]
    notes: str
    options: tuple[str, ...] = COMMON_OPTIONS
    fixed: dict[str, Any] = field(default_factory=dict)


class ModelInfo(NamedTuple):
    """A row of ``radpipe models``."""

    name: str
    dims: tuple[int, ...]
    sources: tuple[str, ...]
    notes: str


_RESNET_OPTIONS = COMMON_OPTIONS + ("shortcut_type", "widen_factor")
_VIT_OPTIONS = COMMON_OPTIONS + ("img_size", "patch_size")


def _entries() -> dict[str, ModelEntry]:
    entries = [
        ModelEntry("resnet10", "resnet", (2, 3), ("medicalnet",) + OWN_SOURCES,
                   "MONAI ResNet-10; MedicalNet 3D weights (shortcut B)", _RESNET_OPTIONS, {"depth": 10}),
        ModelEntry("resnet18", "resnet", (2, 3), ("torchvision", "medicalnet") + OWN_SOURCES,
                   "MONAI ResNet-18; ImageNet (2D, inflatable to 3D) or MedicalNet 3D (shortcut A)",
                   _RESNET_OPTIONS, {"depth": 18}),
        ModelEntry("resnet34", "resnet", (2, 3), ("torchvision", "medicalnet") + OWN_SOURCES,
                   "MONAI ResNet-34; ImageNet (2D, inflatable to 3D) or MedicalNet 3D (shortcut A)",
                   _RESNET_OPTIONS, {"depth": 34}),
        ModelEntry("resnet50", "resnet", (2, 3), ("torchvision", "medicalnet") + OWN_SOURCES,
                   "MONAI ResNet-50 (bottleneck); ImageNet V1 (2D, inflatable) or MedicalNet 3D (shortcut B)",
                   _RESNET_OPTIONS, {"depth": 50}),
        ModelEntry("densenet121", "densenet", (2, 3), ("torchvision",) + OWN_SOURCES,
                   "MONAI DenseNet-121; ImageNet (2D, inflatable to 3D)"),
        ModelEntry("seresnet50", "seresnet", (2, 3), OWN_SOURCES, "MONAI SEResNet-50"),
    ]
    for b in range(5):
        entries.append(ModelEntry(f"efficientnet-b{b}", "efficientnet", (2, 3), OWN_SOURCES,
                                  f"MONAI EfficientNet-B{b} (BatchNorm); inputs >= 32 px"))
    for size, label in (("s16", "ViT-S/16"), ("b16", "ViT-B/16")):
        entries.append(ModelEntry(f"vit-{size}", "vit", (2, 3), OWN_SOURCES,
                                  f"MONAI ViT ({label}); options img_size (default 224 / 96), patch_size",
                                  _VIT_OPTIONS, {"size": size}))
    return {e.name: e for e in entries}


REGISTRY: dict[str, ModelEntry] = _entries()


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises:
        UnknownModelError: ``name`` is not registered (the message lists close matches).
    """
    entry = REGISTRY.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(REGISTRY)}.{hint} (`radpipe models` lists them)"
        )
    return entry


def list_models() -> list[ModelInfo]:
    """Every registered backbone as (name, dims supported, weight sources accepted, notes)."""
    return [ModelInfo(e.name, e.dims, e.sources, e.notes) for e in REGISTRY.values()]
