"""Building a model: :func:`create_model`, the one way in, and :func:`create_from_config`.

A registered backbone (:mod:`models.registry`) gets a new head and, optionally, pretrained weights read
from a source (:mod:`models.sources`) and adapted to it (:mod:`models.weights`).

Example:
    >>> model = create_model("resnet10", spatial_dims=3, in_channels=1, num_classes=2)
    >>> model.weights_report.kind, model.num_classes
    ('none', 2)
"""
from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import Any

from models import families
from models.backbone import Backbone
from models.config import MAX_MEMBERS, ModelConfig
from models.ensemble import MemberEnsemble
from models.registry import ModelEntry, get_entry
from models.sources import read_weights
from models.weights import WeightsReport, load_pretrained
from pipeline.errors import ConfigError

log = logging.getLogger("radpipe")

_FAMILY_CLASSES = {
    "resnet": "ResNetBackbone",
    "densenet": "DenseNetBackbone",
    "efficientnet": "EfficientNetBackbone",
    "seresnet": "SEResNetBackbone",
    "vit": "ViTBackbone",
}


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
    members = options.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or not 1 <= members <= MAX_MEMBERS:
        problems.append(f"members must be a whole number from 1 to {MAX_MEMBERS}, found {members!r}")
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
) -> Backbone | MemberEnsemble:
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
            ``patch_size``; any family: ``members`` (K > 1: a :class:`~models.ensemble.MemberEnsemble` of K
            such networks, each with the pretrained weights and its own random head).

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
    source = read_weights(pretrained, model_name=name) if pretrained else None
    if source is not None and entry.family == "resnet" and "shortcut_type" not in options:
        shortcut = source.resnet_shortcut()
        if shortcut:
            options["shortcut_type"] = shortcut
    members = int(options.pop("members", 1))
    if source is not None and source.meta.get("members", 1) > members:
        log.warning("%s is an ensemble of %d; the model takes the first %d member(s)", source.source,
                    source.meta["members"], members)
    cls = getattr(families, _FAMILY_CLASSES[entry.family])
    built = []
    for k in range(members):
        model = cls(name, spatial_dims, in_channels, num_classes, **entry.fixed, **options)
        if source is None:
            model.weights_report = WeightsReport.untrained(model)
        else:
            load_pretrained(model, source.member(k), channel_adapt=channel_adapt, inflate=inflate, strict=strict)
        built.append(model)
    return built[0] if members == 1 else MemberEnsemble(built)


def create_from_config(m: ModelConfig, spatial_dims: int, in_channels: int, num_classes: int,
                       image_size: Sequence[int] = ()) -> Backbone | MemberEnsemble:
    """:func:`create_model` from the ``model`` section of a run config.

    Args:
        m: the model settings.
        spatial_dims: 2 or 3 (``transforms.spatial_dims``).
        in_channels: input channels.
        num_classes: outputs of the new head.
        image_size: the size the model sees (``transforms.size``): a ViT's ``img_size``.
    """
    options: dict[str, Any] = {"small_input": m.small_input, "dropout": m.dropout}
    if m.members > 1:
        options["members"] = m.members
    if get_entry(m.name).family == "vit" and image_size:
        options["img_size"] = tuple(image_size)
    return create_model(
        m.name,
        spatial_dims,
        in_channels,
        num_classes,
        pretrained=m.pretrained or None,
        channel_adapt=m.channel_adapt,
        inflate=m.inflate,
        strict=m.strict,
        **options,
    )
