"""Pretrained weight sources: find the file, read it safely, and name its keys as ours.

A source string is ``KIND:VALUE``:

==============  ==========================================================================
``torchvision``  ImageNet state dict of torchvision's resnet18/34/50 or densenet121: a path, or a
                 name (``torchvision:resnet18``, or plain ``torchvision`` for the model's own name)
                 looked up in the weights cache and downloaded when online.
``medicalnet``   MedicalNet (Med3D) checkpoint ``{"state_dict": {"module.conv1.weight": ...}}``: a
                 path, or ``resnet_18`` / ``resnet_10_23dataset`` (plain ``medicalnet``: the model's depth).
``bundle``       a MONAI bundle folder: ``DIR/models/model.pt`` (state dict), network from ``DIR/configs/``.
``run``          one of our runs: ``DIR/checkpoints/best.pt`` (``{"model": state_dict, ...}``) and
                 ``DIR/config.yaml`` (model name checked); of an ensemble run (``model.members``), the
                 first member (:meth:`SourceWeights.member` gives the others).
``file``         a state dict of our model (or of the bare MONAI network); a plain path ending in
                 ``.pt``, ``.pth``, ``.bin`` or ``.ckpt`` means the same.
==============  ==========================================================================

Every file is read with ``torch.load(path, map_location="cpu", weights_only=True)``: a
pickle that would run code is refused. The cache folder is ``$RADPIPE_WEIGHTS_DIR`` or
``~/.cache/radpipe/weights``; ``RADPIPE_OFFLINE=1`` turns downloads off.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import WeightsError
from pipeline.files import file_digest, write_atomic

if TYPE_CHECKING:
    import torch

log = logging.getLogger("radpipe")

KINDS = ("torchvision", "medicalnet", "bundle", "run", "file")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WEIGHTS_DIR_ENV = "RADPIPE_WEIGHTS_DIR"
OFFLINE_ENV = "RADPIPE_OFFLINE"
TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "densenet121": "densenet121-a639ec97.pth",
}
TORCHVISION_URL = "https://download.pytorch.org/models/{file}"
MEDICALNET_URL = "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}/resolve/main/{file}"
_MEDICALNET_NAME = re.compile(r"^resnet_?(\d+)(_23dataset)?(?:\.pth)?$")


@dataclass
class SourceWeights:
    """A weights file read into memory.

    Attributes:
        source: the source string as given.
        kind: one of :data:`KINDS`.
        path: the file read.
        sha256: hex digest of the file.
        state: its state dict (tensors only, keys as in the file).
        meta: what else was learnt (bundle network, run model name and dims; of an ensemble run ``members``, its
            member count, and ``member``, the member ``state`` holds).
        member_states: of an ensemble run, every member's state dict (keys as a single model's).
    """

    source: str
    kind: str
    path: Path
    sha256: str
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    member_states: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def member(self, k: int) -> SourceWeights:
        """The weights member ``k`` of a new ensemble starts from: the source's member ``k mod K`` when the source
        is an ensemble run of ``K`` members, else the source itself."""
        if not self.member_states:
            return self
        index = k % len(self.member_states)
        return SourceWeights(self.source, self.kind, self.path, self.sha256, self.member_states[index],
                             self.meta | {"member": index}, self.member_states)

    def resnet_shortcut(self) -> str | None:
        """``A`` or ``B`` for a ResNet file (downsample weights or not); None for other files."""
        if not any(re.search(r"(^|\.)layer1\.0\.", k) for k in self.state):
            return None
        return "B" if any(".downsample." in k for k in self.state) else "A"


def weights_dir() -> Path:
    """The weights cache folder: ``$RADPIPE_WEIGHTS_DIR`` or ``~/.cache/radpipe/weights``."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "radpipe" / "weights"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (what a download records and a cached file is checked against)."""
    return file_digest(path, "sha256")


def _download(url: str, dest: Path, hash_prefix: str = "") -> None:
    """Download ``url`` to ``dest`` with ``torch.hub``: into a temporary file beside it, whose sha256 must start
    with ``hash_prefix`` (when given) before it is moved into place, so a corrupt or altered download never
    reaches the cache."""
    import torch.hub

    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix or None, progress=sys.stderr.isatty())


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256.json")


def _check_cached(dest: Path, hash_prefix: str, fix: str) -> None:
    """Check a cached file against its expected hash prefix and the size and sha256 recorded at download.

    Raises:
        WeightsError: the file differs (it is deleted, so the next use downloads it anew).
    """
    record: dict[str, Any] = {}
    if _record_path(dest).is_file():
        try:
            record = json.loads(_record_path(dest).read_text(encoding="utf-8"))
        except ValueError:
            record = {}
    size = dest.stat().st_size
    digest = "" if record.get("size", size) != size else file_sha256(dest)
    expected = record.get("sha256") or hash_prefix
    if digest and digest.startswith(expected):
        return
    dest.unlink()
    _record_path(dest).unlink(missing_ok=True)
    found = f"sha256 {digest[:16]}..." if digest else f"{size} bytes, {record.get('size')} recorded at download"
    raise WeightsError(
        f"weights file {dest} has {found}, expected sha256 {expected[:16]}...; the file is corrupt or altered "
        f"and was deleted: run again to download it anew, or {fix}"
    )


def _cached(kind: str, file: str, url: str, hash_prefix: str = "") -> Path:
    """The cached file ``<cache>/<kind>/<file>``, downloaded from ``url`` when missing and online.

    A cached file is checked on every use: its sha256 against ``hash_prefix`` (torchvision names carry one) and
    against the size and sha256 recorded beside it at download (``<file>.sha256.json``).
    """
    dest = weights_dir() / kind / file
    fix = (
        f"download {url} on a machine with network and place it at {dest} (the cache is ${WEIGHTS_DIR_ENV} "
        f"or ~/.cache/radpipe/weights), or give its path as {kind}:PATH"
    )
    if dest.is_file():
        _check_cached(dest, hash_prefix, fix)
        return dest
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise WeightsError(f"{kind} weights {file} are not in the cache and {OFFLINE_ENV} is set; {fix}")
    try:
        _download(url, dest, hash_prefix)
    except RuntimeError as e:  # torch.hub: "invalid hash value (expected ..., got ...)"
        raise WeightsError(
            f"downloaded {url} has the wrong sha256 ({e}); expected it to start with {hash_prefix}; the download "
            f"is corrupt or altered and was not kept, try again or {fix}"
        ) from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsError(
            f"{kind} weights {file} are not in the cache and could not be downloaded ({e}); {fix}"
        ) from e
    digest = file_sha256(dest)
    if not digest.startswith(hash_prefix):
        dest.unlink()
        raise WeightsError(
            f"downloaded {url} has sha256 {digest[:16]}..., expected it to start with {hash_prefix}; "
            f"the download is corrupt or altered, try again or {fix}"
        )
    write_atomic(_record_path(dest), json.dumps({"url": url, "size": dest.stat().st_size, "sha256": digest}) + "\n")
    return dest


def safe_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU; refuses pickles that hold code.

    Raises:
        WeightsError: the file is missing, unreadable, or holds objects other than tensors and containers.
    """
    import torch

    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        detail = " ".join(str(e).split())[:300]
        if "unsupported global" in str(e).lower():
            raise WeightsError(
                f"{path} holds Python objects other than tensors, which radpipe refuses to unpickle "
                f"(weights_only=True; a pickle can run code): {detail}. Save the state dict alone "
                f"(torch.save(model.state_dict(), path)) from a source you trust"
            ) from e
        raise WeightsError(f"cannot read weights file {path}: {detail}; is it a PyTorch .pt/.pth file?") from e


def _unwrap(obj: Any, path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``obj`` itself or ``obj[key]`` for the first key present."""
    import torch

    nested = [obj[k] for k in keys if isinstance(obj, Mapping) and k in obj]
    for c in nested + [obj]:
        if isinstance(c, Mapping):
            tensors = {str(k): v for k, v in c.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
    found = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(
        f"{path}: expected a state dict (names -> tensors) or a checkpoint holding one under "
        f"{' / '.join(repr(k) for k in keys)}, found {found}"
    )


def parse_source(source: str) -> tuple[str, str]:
    """Split ``KIND:VALUE``; a bare path with a weights suffix is ``file``.

    Raises:
        WeightsError: the kind is unknown.
    """
    kind, sep, value = source.partition(":")
    if sep and kind in KINDS:
        return kind, value.strip()
    if not sep and source in ("torchvision", "medicalnet"):
        return source, ""
    if Path(source).suffix.lower() in WEIGHT_SUFFIXES:
        return "file", source
    raise WeightsError(
        f"weight source {source!r} is not understood; expected torchvision:PATH|NAME, medicalnet:PATH|NAME, "
        f"bundle:DIR, run:RUN_DIR, file:PATH or a path ending in {', '.join(WEIGHT_SUFFIXES)}"
    )


def _torchvision_path(value: str, model_name: str | None) -> Path:
    name = value or model_name or ""
    if name in TORCHVISION_FILES and not Path(value).is_file():
        file = TORCHVISION_FILES[name]
        return _cached("torchvision", file, TORCHVISION_URL.format(file=file), file.rsplit("-", 1)[1][:8])
    if not value:
        raise WeightsError(
            f"no torchvision weights are known for {model_name!r}; known: {', '.join(TORCHVISION_FILES)}, "
            f"or give a file: torchvision:PATH"
        )
    return Path(value).expanduser()


def _medicalnet_path(value: str, model_name: str | None) -> Path:
    name = value
    if not value:
        depth = re.fullmatch(r"resnet(\d+)", model_name or "")
        if not depth:
            raise WeightsError(f"MedicalNet weights exist for resnet10/18/34/50 only, not {model_name!r}")
        name = f"resnet_{depth.group(1)}"
    match = _MEDICALNET_NAME.match(name)
    if match and not Path(value).is_file():
        file = f"resnet_{match.group(1)}{match.group(2) or ''}.pth"
        return _cached("medicalnet", file, MEDICALNET_URL.format(depth=match.group(1), file=file))
    return Path(value).expanduser()


def _bundle_network(folder: Path) -> str:
    """The ``_target_`` of the bundle's ``network_def`` (or ``network``), or ``""`` when not found."""
    configs = folder / "configs"
    files = sorted(configs.glob("*.json")) + sorted(configs.glob("*.yaml")) + sorted(configs.glob("*.yml"))
    files.sort(key=lambda p: (not p.stem.startswith("inference"), not p.stem.startswith("train"), p.name))
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
            if file.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except (OSError, ValueError) as e:
            log.warning("cannot read bundle config %s: %s", file, e)
            continue
        if isinstance(data, dict):
            for key in ("network_def", "network"):
                value = data.get(key)
                if isinstance(value, dict) and isinstance(value.get("_target_"), str):
                    return value["_target_"]
    return ""


def _run_meta(folder: Path) -> dict[str, Any]:
    config = folder / "config.yaml"
    if not config.is_file():
        raise WeightsError(f"run folder {folder} has no config.yaml; give the folder of a finished radpipe run")
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise WeightsError(f"cannot read {config}: {e}") from e
    model = data.get("model") or {}
    transforms = data.get("transforms") or {}
    return {"model_name": model.get("name", ""), "spatial_dims": transforms.get("spatial_dims")}


def read_weights(source: str, *, model_name: str | None = None) -> SourceWeights:
    """Find, read (safely) and fingerprint the weights of a source string.

    Args:
        source: ``KIND:VALUE`` (see the module docstring).
        model_name: the registry name of the model to be loaded, for name-only sources
            (``torchvision``, ``medicalnet``) and the run's name check.

    Raises:
        WeightsError: unknown source, missing file (with where to put it), unsafe or unreadable file,
            or a run trained with another model.
    """
    kind, value = parse_source(source)
    if not value and kind in ("bundle", "run", "file"):
        raise WeightsError(f"weight source {source!r} needs a path: {kind}:PATH")
    meta: dict[str, Any] = {}
    keys: tuple[str, ...] = ("state_dict", "model")
    if kind == "torchvision":
        path = _torchvision_path(value, model_name)
    elif kind == "medicalnet":
        path = _medicalnet_path(value, model_name)
    elif kind == "bundle":
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise WeightsError(f"bundle folder {folder} not found; give the folder holding models/ and configs/")
        path = folder / "models" / "model.pt"
        meta["network"] = _bundle_network(folder)
    elif kind == "run":
        folder = Path(value).expanduser()
        path = folder / "checkpoints" / "best.pt"
        if not folder.is_dir():
            raise WeightsError(f"run folder {folder} not found; give the folder of a finished radpipe run")
        if not path.is_file():
            raise WeightsError(f"run folder {folder} has no checkpoints/best.pt; has its training finished?")
        meta.update(_run_meta(folder))
        keys = ("model",)
        if model_name and meta["model_name"] and meta["model_name"] != model_name:
            raise WeightsError(
                f"run {folder} trained {meta['model_name']!r} but the model is {model_name!r}; "
                f"set model.name: {meta['model_name']} to start from this run"
            )
    else:
        path = Path(value).expanduser()
        keys = ("model", "state_dict")
    obj = safe_load(path)
    state = _unwrap(obj, path, keys)
    members: list[dict[str, torch.Tensor]] = []
    if kind == "run" and state and all(k.startswith("members.") for k in state):
        count = 1 + max(int(k.split(".", 2)[1]) for k in state)
        members = [{k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"members.{i}.")}
                   for i in range(count)]
        meta.update(members=count, member=0)
        state = members[0]
    return SourceWeights(source, kind, path, file_sha256(path), state, meta, members)
