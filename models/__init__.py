"""Backbone registry, pretrained weight sources, adaptation and transfer strategies.

The public API is imported lazily, so ``import models`` does not import torch:

* :func:`create_model`, :func:`create_from_config` (``models.factory``), :func:`list_models` (``models.registry``)
* :func:`load_pretrained`, :class:`WeightsReport` (``models.weights``)
* :func:`build_param_groups`, :class:`TransferSchedule` (``models.transfer``)
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "create_model": "models.factory",
    "create_from_config": "models.factory",
    "list_models": "models.registry",
    "ModelInfo": "models.registry",
    "load_pretrained": "models.weights",
    "WeightsReport": "models.weights",
    "read_weights": "models.sources",
    "build_param_groups": "models.transfer",
    "TransferSchedule": "models.transfer",
    "Backbone": "models.backbone",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
