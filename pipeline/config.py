"""Run configuration: YAML mapped onto frozen dataclasses, validated once.

A config has six sections (``data``, ``transforms``, ``model``, ``transfer``,
``train``, ``eval``). Every field has a default, so an empty file is a valid
config. Unknown keys and bad values raise :class:`~pipeline.errors.ConfigError`
naming the key, the value and what is allowed, with a close match for typos.

The ``transforms`` section is defined by the layer that uses it
(:class:`transforms.config.TransformsConfig`), as are ``model`` and ``transfer``
(:mod:`models.config`); this module composes them with its own sections, validates
them all, and hands each layer only its part.

Example:
    >>> cfg = load_config(overrides=["train.epochs=3", "model.name=resnet10"])
    >>> cfg.train.epochs, cfg.model.name
    (3, 'resnet10')
    >>> load_config(overrides=["train.epoch=3"])
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: unknown config key 'train.epoch'; allowed here: epochs, ... Did you mean 'epochs'?
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from models.config import ModelConfig, TransferConfig
from pipeline.errors import ConfigError
from pipeline.files import write_atomic
from transforms.config import TransformsConfig

TASKS = ("binary", "multiclass", "multilabel", "regression")


def _choices(*values: Any) -> dict[str, Any]:
    return {"choices": tuple(values)}


def _range(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"range": (low, high)}


@dataclass(frozen=True)
class DataConfig:
    """Where the cases come from and how they are cached.

    Attributes:
        manifest: CSV manifest; relative image paths resolve against its folder.
        image_columns: manifest columns stacked as input channels.
        label_columns: one column for binary / multi-class / regression, several for multi-label.
        task: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        classes: class names in index order; empty means sorted unique labels of the manifest.
        patient_column: column that groups cases of one patient.
        cache: ``memory`` (CacheDataset), ``disk`` (PersistentDataset) or ``none``.
        cache_rate: fraction of cases cached in memory.
        cache_dir: folder of the disk cache (default: ``<run>/cache``).
        num_workers: data-loader worker processes.
        balance: ``none``, ``sampler`` (weighted sampling) or ``loss`` (class weights).
    """

    manifest: str = ""
    image_columns: tuple[str, ...] = ("image",)
    label_columns: tuple[str, ...] = ("label",)
    task: str = field(default="binary", metadata=_choices(*TASKS))
    classes: tuple[str, ...] = ()
    patient_column: str = "patient_id"
    cache: str = field(default="memory", metadata=_choices("memory", "disk", "none"))
    cache_rate: float = field(default=1.0, metadata=_range(0.0, 1.0))
    cache_dir: str = ""
    num_workers: int = field(default=0, metadata=_range(0))
    balance: str = field(default="none", metadata=_choices("none", "sampler", "loss"))


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop.

    Attributes:
        epochs: number of epochs.
        batch_size: cases per step (per process under DDP).
        lr: base learning rate.
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        weight_decay: decoupled weight decay.
        scheduler: ``cosine`` (with warm-up), ``step`` or ``none``.
        warmup_epochs: linear warm-up before the cosine schedule.
        step_epochs: epochs at which ``step`` multiplies the LR by ``gamma``.
        gamma: factor of the step schedule.
        val_every: validate every N epochs.
        key_metric: validation metric that selects ``best.pt`` (ties: lower validation loss, then the earlier epoch).
        patience: early stop after this many validations without improvement (0: off).
        regression_loss: loss of ``regression`` tasks: ``mse`` or ``l1``.
        label_smoothing: training targets of classification tasks moved this far towards uniform (cross-entropy's
            ``label_smoothing``; multi-label: each target to ``t (1 - s) + s / 2``); validation loss stays unsmoothed.
        mixup: mixup's Beta(alpha, alpha) parameter (0: off): each training batch becomes ``lam x + (1 - lam) x[perm]``
            with its targets (one-hot for classes) mixed alike; drawn from the seed and the iteration, so a resumed
            run mixes as the uninterrupted one.
        ema: decay of an exponential moving average of the weights, updated every iteration (0: off); validation,
            ``best.pt`` and ``last.pt``'s ``model`` then hold the averaged weights (see :mod:`pipeline.train.ema`).
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a scaler).
        cpu_bf16: with ``amp``, bf16 autocast and channels-last on a CPU that computes bf16 natively (AVX512-BF16
            or AMX; about 1.8x faster 2D training); ignored on other CPUs and on CUDA. ``evaluate`` and ``predict``
            then run the model in bf16 too.
        channels_last: channels-last memory format for 2D models on CUDA (and on the CPU with ``cpu_bf16``).
        compile: ``torch.compile`` the model.
        grad_accum: optimiser step every N batches.
        precise_bn: before each validation, recompute the running statistics of the training
            BatchNorm layers from this many training batches ("precise BN"; frozen stages keep
            theirs); 0: off (the running averages of training are kept).
        seed: seed of every random generator.
        deterministic: deterministic algorithms only.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        tensorboard: write TensorBoard logs when tensorboard is installed.
        mlflow_uri: MLflow tracking URI; empty means off.
    """

    epochs: int = field(default=10, metadata=_range(1))
    batch_size: int = field(default=16, metadata=_range(1))
    lr: float = field(default=1e-3, metadata=_range(0.0))
    optimizer: str = field(default="adamw", metadata=_choices("adamw", "adam", "sgd"))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))
    scheduler: str = field(default="cosine", metadata=_choices("cosine", "step", "none"))
    warmup_epochs: int = field(default=0, metadata=_range(0))
    step_epochs: tuple[int, ...] = ()
    gamma: float = field(default=0.1, metadata=_range(0.0))
    val_every: int = field(default=1, metadata=_range(1))
    key_metric: str = field(
        default="auc", metadata=_choices("auc", "balanced_accuracy", "f1", "accuracy", "neg_mae", "neg_loss")
    )
    patience: int = field(default=0, metadata=_range(0))
    regression_loss: str = field(default="mse", metadata=_choices("mse", "l1"))
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 0.5))
    mixup: float = field(default=0.0, metadata=_range(0.0, 10.0))
    ema: float = field(default=0.0, metadata=_range(0.0, 0.99999))
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = True
    compile: bool = False
    grad_accum: int = field(default=1, metadata=_range(1))
    precise_bn: int = field(default=16, metadata=_range(0))
    seed: int = 0
    deterministic: bool = False
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda"))
    tensorboard: bool = True
    mlflow_uri: str = ""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation and reporting.

    Attributes:
        split: manifest split evaluated by ``radpipe evaluate``.
        tta: average predictions over flipped (and turned) copies of each image (test-time augmentation).
        tta_views: which copies: ``flips`` (the image and one flip along each spatial axis), ``train-flips``
            (the image and one flip along each of ``transforms.flip_axes``: the flips training makes) or
            ``dihedral`` (every in-plane turn and flip the default training augmentation makes: 8 views in 2D
            for square images, 4 otherwise; in 3D each of those also flipped along the third axis).
        threshold: operating point rule fixed on validation predictions: ``youden`` or ``sensitivity``.
        target_sensitivity: with ``threshold: sensitivity``, the sensitivity to reach.
        bootstrap: number of bootstrap resamples of the confidence intervals.
        cohorts: cohort columns reported separately.
        min_cases: a cohort with fewer positives or negatives than this is flagged as unstable.
    """

    split: str = field(default="test", metadata=_choices("train", "val", "test"))
    tta: bool = False
    tta_views: str = field(default="flips", metadata=_choices("flips", "dihedral", "train-flips"))
    threshold: str = field(default="youden", metadata=_choices("youden", "sensitivity"))
    target_sensitivity: float = field(default=0.9, metadata=_range(0.0, 1.0))
    bootstrap: int = field(default=1000, metadata=_range(0))
    cohorts: tuple[str, ...] = ()
    min_cases: int = field(default=10, metadata=_range(0))


@dataclass(frozen=True)
class Config:
    """A whole run configuration."""

    data: DataConfig = DataConfig()
    transforms: TransformsConfig = TransformsConfig()
    model: ModelConfig = ModelConfig()
    transfer: TransferConfig = TransferConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


def _closest(word: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


def _parse_scalar(text: str) -> Any:
    """Parse one ``--set`` value with YAML rules (numbers, booleans, lists)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _coerce(key: str, value: Any, hint: Any, meta: typing.Mapping[str, Any]) -> Any:
    """Convert ``value`` to the type ``hint`` and check its allowed values."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(key, value, args[0], meta)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(key, v, item_type, {}) for v in value)
    result: Any
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                result = value.lower() in ("true", "yes", "on", "1")
            elif isinstance(value, bool):
                result = value
            else:
                raise ValueError
        elif hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(value)
        elif hint is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        elif hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            result = "" if value is None else str(value)
        else:
            result = value
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key '{key}': expected {getattr(hint, '__name__', hint)}, found {value!r}; fix the value"
        ) from None
    if hint is float and not math.isfinite(result):
        raise ConfigError(f"config key '{key}': expected a finite number, found {value!r}; fix the value")
    choices = meta.get("choices")
    if choices is not None and result not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise ConfigError(
            f"config key '{key}': {result!r} is not allowed; allowed: {allowed}.{_closest(str(result), map(str, choices))}"
        )
    low, high = meta.get("range", (None, None))
    if (low is not None and result < low) or (high is not None and result > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"config key '{key}': {result!r} is outside {bounds}; fix the value")
    return result


def _build(cls: type, values: typing.Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(values, typing.Mapping):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, found {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        where = f"{prefix}.{key}" if prefix else key
        allowed = ", ".join(fields)
        raise ConfigError(f"unknown config key '{where}'; allowed here: {allowed}.{_closest(str(key), fields)}")
    kwargs = {}
    for name, value in values.items():
        where = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, where)
        else:
            kwargs[name] = _coerce(where, value, hint, fields[name].metadata)
    return cls(**kwargs)


def _check_consistency(cfg: Config) -> None:
    """Checks across sections (each section checks its own fields when built)."""
    if cfg.data.task != "multilabel" and len(cfg.data.label_columns) != 1:
        raise ConfigError(
            f"config key 'data.label_columns': task '{cfg.data.task}' takes one label column, found "
            f"{list(cfg.data.label_columns)}; set data.task: multilabel for several"
        )
    if cfg.data.task == "regression" and cfg.train.key_metric not in ("neg_mae", "neg_loss"):
        raise ConfigError(
            f"config key 'train.key_metric': '{cfg.train.key_metric}' does not apply to regression; use neg_mae"
        )


def config_from_dict(values: typing.Mapping[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from nested mappings (as read from YAML)."""
    cfg = _build(Config, values or {}, "")
    _check_consistency(cfg)
    return cfg


def apply_overrides(values: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to nested mappings (values parsed as YAML)."""
    result = {k: dict(v) if isinstance(v, typing.Mapping) else v for k, v in values.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set '{item}': expected section.key=value, e.g. --set train.epochs=5")
        path, _, raw = item.partition("=")
        parts = path.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"--set '{item}': expected section.key=value with one dot, e.g. train.lr=0.001")
        section, key = parts
        sections = [f.name for f in dataclasses.fields(Config)]
        if section not in sections:
            raise ConfigError(
                f"--set '{item}': unknown section '{section}'; allowed: {', '.join(sections)}.{_closest(section, sections)}"
            )
        target = result.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, found {target!r}")
        target[key] = _parse_scalar(raw)
    return result


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config file (or defaults when ``path`` is None) and apply ``--set`` overrides.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value is invalid.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; give the path of a YAML file (examples in data_manifests/)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}".replace("\n", " ")) from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping of sections, found {type(loaded).__name__}")
        values = loaded or {}
    return config_from_dict(apply_overrides(values, overrides))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists, ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {
        section.name: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, section.name)).items()}
        for section in dataclasses.fields(cfg)
    }


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; :func:`load_config` reads it back to an equal object."""
    import yaml

    write_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def with_changes(cfg: Config, **sections: typing.Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys of some sections replaced, validated again."""
    values = config_to_dict(cfg)
    for name, changes in sections.items():
        values[name].update(changes)
    return config_from_dict(values)
