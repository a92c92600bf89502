"""Loading pretrained weights onto a backbone, with a report of what happened to every key.

:func:`load_pretrained` maps a weight source (:mod:`models.sources`) onto a
:class:`~models.backbone.Backbone`: keys are renamed, the stem is adapted to the
model's input channels, 2D kernels are inflated for a 3D model, and the head is
always new. Loading is strict on the backbone by default: a key missing, of a shape
that cannot be adapted, or left over in the file is a :class:`WeightsError` naming
the keys. The :class:`WeightsReport` says, for every backbone parameter and buffer,
whether it was loaded, adapted (and how) or newly initialised; the trainer writes it
to the run as ``weights_report.json``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from models.adapt import CHANNEL_MODES, INFLATE_MODES, adapt_input_channels, describe_channel_adaptation, inflate_kernel
from models.backbone import Backbone
from models.keymaps import translate
from models.registry import get_entry
from models.sources import SourceWeights, read_weights
from pipeline.errors import WeightsError, format_problems

LOADED, ADAPTED, NEW = "loaded", "adapted", "new"
_BUNDLE_FAMILY_WORDS = {
    "resnet": ("resnet",),
    "densenet": ("densenet",),
    "efficientnet": ("efficientnet",),
    "seresnet": ("seresnet", "senet"),
    "vit": ("vit",),
}


@dataclass
class WeightsReport:
    """What a weight source did to a model (JSON-serialisable via :meth:`to_dict`).

    Attributes:
        model, spatial_dims, in_channels, num_classes: the model loaded.
        source, kind, path, sha256: the weights (empty ``source`` and kind ``none``: random init).
        strict, channel_adapt, inflate: the loading settings.
        backbone: state-dict key -> ``{"status": loaded|adapted|new, "how": str, "kind": parameter|buffer,
            "shape": [...]}`` for every backbone parameter and buffer.
        head: the same for the classifier keys (always new).
        unexpected: file keys that fit no backbone key.
        dropped: file keys left out on purpose (the source's classifier) -> reason.
        meta: what the source told (bundle network, run model and dims).
    """

    model: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    source: str = ""
    kind: str = "none"
    path: str = ""
    sha256: str = ""
    strict: bool = True
    channel_adapt: str = "sum"
    inflate: str = "mean"
    backbone: dict[str, dict[str, Any]] = field(default_factory=dict)
    head: dict[str, dict[str, Any]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def untrained(cls, model: Backbone) -> WeightsReport:
        """The report of a randomly initialised model."""
        report = cls(model.name, model.spatial_dims, model.in_channels, model.num_classes)
        kinds = _key_kinds(model)
        state = model.state_dict()
        for key in model.backbone_keys():
            report.backbone[key] = _entry(NEW, "random init (no pretrained source)", kinds[key], state[key])
        report.head = _head_entries(model)
        return report

    def counts(self) -> dict[str, int]:
        """Backbone parameters (not buffers) per status, plus ``total``."""
        params = [e for e in self.backbone.values() if e["kind"] == "parameter"]
        result = {s: sum(1 for e in params if e["status"] == s) for s in (LOADED, ADAPTED, NEW)}
        result["total"] = len(params)
        return result

    @property
    def loaded_fraction(self) -> float:
        """Fraction of backbone parameters taken from the source (loaded or adapted)."""
        c = self.counts()
        return (c[LOADED] + c[ADAPTED]) / c["total"] if c["total"] else 0.0

    def summary(self) -> str:
        """One line, e.g. ``resnet18 <- torchvision:...: 62/62 backbone parameters from the file (1 adapted)``."""
        if self.kind == "none":
            return f"{self.model}: random initialisation ({self.counts()['total']} backbone parameters)"
        c = self.counts()
        return (
            f"{self.model} <- {self.source}: {c[LOADED] + c[ADAPTED]}/{c['total']} backbone parameters from the file "
            f"({c[ADAPTED]} adapted, {c[NEW]} new), {len(self.unexpected)} unexpected key(s), "
            f"head new for {self.num_classes} output(s); sha256 {self.sha256[:12]}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, with ``counts`` and ``loaded_fraction`` added."""
        data = asdict(self)
        data["counts"] = self.counts()
        data["loaded_fraction"] = self.loaded_fraction
        return data


def _key_kinds(model: Backbone) -> dict[str, str]:
    params = {n for n, _ in model.named_parameters()}
    return {k: "parameter" if k in params else "buffer" for k in model.state_dict()}


def _entry(status: str, how: str, kind: str, tensor: torch.Tensor) -> dict[str, Any]:
    return {"status": status, "how": how, "kind": kind, "shape": list(tensor.shape)}


def _head_entries(model: Backbone) -> dict[str, dict[str, Any]]:
    kinds = _key_kinds(model)
    return {
        k: _entry(NEW, f"new head for {model.num_classes} output(s)", kinds[k], v)
        for k, v in model.state_dict().items()
        if k.startswith("classifier.")
    }


def _adapt(key: str, tensor: torch.Tensor, shape: torch.Size, model: Backbone, channel_adapt: str,
           inflate: str) -> tuple[torch.Tensor | None, str]:
    """``tensor`` made to ``shape`` (or None) and how (or why not)."""
    how: list[str] = []
    if tensor.ndim == 4 and len(shape) == 5:
        tensor = inflate_kernel(tensor, shape[2], inflate)
        how.append(f"inflated 2D->3D {inflate}, depth {shape[2]}")
    is_stem = key == f"{model.stem_conv}.weight"
    if is_stem and tensor.ndim == len(shape) and tensor.shape[1] != shape[1] and tensor.shape[0] == shape[0]:
        how.insert(0, describe_channel_adaptation(tensor.shape[1], shape[1], channel_adapt))
        tensor = adapt_input_channels(tensor, shape[1], channel_adapt)
    if tuple(tensor.shape) == tuple(shape):
        return tensor, "; ".join(how)
    reason = f"file has shape {list(tensor.shape)}, model needs {list(shape)}"
    if tensor.ndim > len(shape):
        reason += " (3D weights cannot start a 2D model)"
    elif is_stem and tensor.shape[2:] != shape[2:]:
        reason += (" (stem kernel differs: small_input builds a 3x3 stem; "
                   "set small_input false to keep the pretrained stem)")
    return None, reason


def _check_bundle(source: SourceWeights, model: Backbone, family: str) -> None:
    network = str(source.meta.get("network") or "")
    if not network:
        return
    word = network.rsplit(".", 1)[-1].lower()
    if not any(w in word for w in _BUNDLE_FAMILY_WORDS[family]) or (family == "resnet" and "se" in word[:2]):
        raise WeightsError(
            f"bundle {source.path.parent.parent} holds a {network} network but the model is {model.name}; "
            f"pick the model.name that matches the bundle's network"
        )


def load_pretrained(
    model: Backbone,
    source: str | SourceWeights,
    *,
    channel_adapt: str = "sum",
    inflate: str = "mean",
    strict: bool = True,
) -> WeightsReport:
    """Load a weight source onto ``model``'s backbone (the head stays new) and report it.

    Args:
        model: a registry model (:func:`models.create_model`).
        source: a source string (``torchvision:PATH`` ...; see :mod:`models.sources`) or weights already read.
        channel_adapt: ``sum`` or ``mean``: stem adaptation when the input channels differ.
        inflate: ``mean`` or ``centre``: 2D -> 3D kernel inflation when the model is 3D and the file 2D.
        strict: when False, backbone keys missing or of unfixable shape are newly initialised (and
            reported) and leftover file keys are only reported, instead of raising.

    Returns:
        The report; also stored as ``model.weights_report``.

    Raises:
        WeightsError: the source cannot be read or, with ``strict``, does not fit the backbone
            (the message names the keys: the first 20 and the count).
    """
    if channel_adapt not in CHANNEL_MODES:
        raise WeightsError(f"channel_adapt {channel_adapt!r} is unknown; allowed: {', '.join(CHANNEL_MODES)}")
    if inflate not in INFLATE_MODES:
        raise WeightsError(f"inflate {inflate!r} is unknown; allowed: {', '.join(INFLATE_MODES)}")
    weights = source if isinstance(source, SourceWeights) else read_weights(source, model_name=model.name)
    entry = get_entry(model.name)
    if weights.kind not in entry.sources:
        raise WeightsError(
            f"{weights.kind} weights cannot start {model.name}; it accepts: {', '.join(entry.sources)} "
            f"(`radpipe models` lists what each model accepts)"
        )
    if weights.kind == "bundle":
        _check_bundle(weights, model, entry.family)
    keymap = translate(weights, model, entry.family)
    report = WeightsReport(
        model.name, model.spatial_dims, model.in_channels, model.num_classes, weights.source, weights.kind,
        str(weights.path), weights.sha256, strict, channel_adapt, inflate,
        unexpected=list(keymap.unexpected), dropped=dict(keymap.dropped), meta=dict(weights.meta),
    )
    values, problems = _backbone_values(model, weights, keymap, report, channel_adapt, inflate)
    if strict:
        problems += [f"{k}: in the file but fits no key of the model" for k in keymap.unexpected]
        if problems:
            raise WeightsError(
                f"weights {weights.source} ({weights.path}) do not fit {model.name} ({model.spatial_dims}D, "
                f"{model.in_channels} channel(s)): {format_problems(problems)}. Fix: choose the model that matches "
                f"the file (model.name, options such as small_input or shortcut_type) or set model.strict: false "
                f"to initialise these keys anew"
            )
    model.load_state_dict(values, strict=False)
    report.head = _head_entries(model)
    model.weights_report = report
    return report


def _backbone_values(model: Backbone, weights: SourceWeights, keymap: Any, report: WeightsReport,
                     channel_adapt: str, inflate: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Each backbone key's tensor from the file (adapted where needed), recorded in ``report``; and the problems."""
    state = model.state_dict()
    kinds = _key_kinds(model)
    values: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key in model.backbone_keys():
        target = state[key]
        file_key = keymap.pairs.get(key)
        if file_key is None:
            if key.endswith("num_batches_tracked"):
                how = "BatchNorm step counter, not in the file (harmless)"
                report.backbone[key] = _entry(NEW, how, kinds[key], target)
                continue
            problems.append(f"{key}: missing from the file")
            report.backbone[key] = _entry(NEW, "missing from the file: random init", kinds[key], target)
            continue
        tensor, how = _adapt(key, weights.state[file_key], target.shape, model, channel_adapt, inflate)
        if tensor is None:
            problems.append(f"{key} ({file_key}): {how}")
            report.backbone[key] = _entry(NEW, f"{how}: random init", kinds[key], target)
            continue
        values[key] = tensor.to(target.dtype)
        report.backbone[key] = _entry(ADAPTED if how else LOADED, how or f"from {file_key}", kinds[key], target)
    return values, problems
