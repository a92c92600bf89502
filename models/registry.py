"""The backbone registry: names -> MONAI networks behind one interface.

:func:`create_model` is the one way to build a model. This module imports neither
torch nor MONAI at import time, so ``radpipe models`` (:func:`list_models`) is fast.

Example:
    >>> model = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=2,
    ...                      pretrained="medicalnet:/weights/resnet_18.pth")
    >>> model.weights_report.summary()
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.errors import ConfigError, UnknownModelError

if TYPE_CHECKING:
    from pipeline.config import Config

    from models.backbone import Backbone

COMMON_OPTIONS = ("small_input", "dropout")
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


_FAMILY_CLASSES = {
    "resnet": "ResNetBackbone",
    "densenet": "DenseNetBackbone",
    "efficientnet": "EfficientNetBackbone",
    "seresnet": "SEResNetBackbone",
    "vit": "ViTBackbone",
}
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


def _check_arguments(entry: ModelEntry, spatial_dims: int, in_channels: int, num_classes: int,
                     options: dict[str, Any]) -> None:
    problems = []
    if spatial_dims not in entry.dims:
        problems.append(f"spatial_dims {spatial_dims} is not supported by {entry.name} (supported: {entry.dims})")
    if not isinstance(in_channels, int) or in_channels < 1:
        problems.append(f"in_channels must be a whole number >= 1, found {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        problems.append(f"num_classes must be a whole number >= 1, found {num_classes!r}")
    for key in options:
        if key not in entry.options:
            close = difflib.get_close_matches(key, entry.options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            accepted = ", ".join(entry.options)
            problems.append(f"option {key!r} is not accepted by {entry.name}{hint}; accepted: {accepted}")
    dropout = options.get("dropout", 0.0)
    if not 0.0 <= float(dropout) < 1.0:
        problems.append(f"dropout must be in [0, 1), found {dropout}")
    if options.get("shortcut_type", "B") not in ("A", "B"):
        problems.append(f"shortcut_type must be 'A' or 'B', found {options['shortcut_type']!r}")
    if problems:
        raise ConfigError(f"cannot build model {entry.name!r}: " + "; ".join(problems))


def create_model(
    name: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    pretrained: str | None = None,
    *,
    channel_adapt: str = "sum",
    inflate: str = "mean",
    strict: bool = True,
    **options: Any,
) -> Backbone:
    """Build a registered backbone with a new head, optionally starting from pretrained weights.

    Args:
        name: registry name (:func:`list_models`).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: outputs of the new head.
        pretrained: weight source (see :func:`models.sources.read_weights`), e.g.
            ``torchvision:PATH``, ``medicalnet:PATH``, ``bundle:DIR``, ``run:DIR``, ``file:PATH``;
            None or empty for random initialisation.
        channel_adapt: ``sum`` or ``mean``: how a stem of other input channels is adapted.
        inflate: ``mean`` or ``centre``: how 2D kernels become 3D.
        strict: a backbone key missing or of unfixable shape in the weights is an error.
        **options: family options: ``small_input``, ``dropout``; ResNet: ``shortcut_type``
            (default: taken from the weights file, else ``B``), ``widen_factor``; ViT: ``img_size``,
            ``patch_size``.

    Returns:
        The model, with ``model.weights_report`` (a :class:`~models.weights.WeightsReport`).

    Raises:
        UnknownModelError: unknown ``name``.
        ConfigError: unsupported dims or options.
        WeightsError: the weights cannot be read or mapped.
    """
    entry = get_entry(name)
    options = dict(options)
    _check_arguments(entry, spatial_dims, in_channels, num_classes, options)
    from models import families
    from models.sources import read_weights
    from models.weights import WeightsReport, load_pretrained

    source = read_weights(pretrained, model_name=name) if pretrained else None
    if source is not None and entry.family == "resnet" and "shortcut_type" not in options:
        shortcut = source.resnet_shortcut()
        if shortcut:
            options["shortcut_type"] = shortcut
    cls = getattr(families, _FAMILY_CLASSES[entry.family])
    model = cls(name, spatial_dims, in_channels, num_classes, **entry.fixed, **options)
    if source is None:
        model.weights_report = WeightsReport.untrained(model)
    else:
        load_pretrained(model, source, channel_adapt=channel_adapt, inflate=inflate, strict=strict)
    return model


def create_from_config(cfg: Config, in_channels: int, num_classes: int) -> Backbone:
    """:func:`create_model` from a run config's ``model`` section and ``transforms.spatial_dims``.

    A ViT's ``img_size`` is taken from ``transforms.size``.
    """
    m = cfg.model
    options: dict[str, Any] = {"small_input": m.small_input, "dropout": m.dropout}
    if get_entry(m.name).family == "vit" and cfg.transforms.size:
        options["img_size"] = tuple(cfg.transforms.size)
    return create_model(
        m.name,
        cfg.transforms.spatial_dims,
        in_channels,
        num_classes,
        pretrained=m.pretrained or None,
        channel_adapt=m.channel_adapt,
        inflate=m.inflate,
        strict=m.strict,
        **options,
    )
