"""The ``transforms.channels`` rule: every image of a run brought to the model's channel count.

Files differ in colour: chest X-ray sets mix grey and RGB JPEGs, dermatology and fundus photographs are RGB,
MedMNIST stores RGB 2D images as (H, W, 1, 3) NIfTI. A batch needs one channel count, and the model was
built for one. The rule (allowed values :data:`transforms.config.CHANNEL_RULES`):

* ``grey``: one channel. RGB becomes its luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, what
  Pillow's ``convert("L")`` computes); a fourth (alpha) channel is dropped first, grey + alpha keeps the grey.
* ``rgb``: three channels. A grey image is repeated in R, G and B (what torchvision's loader does with
  ``convert("RGB")``), alpha is dropped.
* ``auto``: ``radpipe train`` resolves it once from the training and validation images
  (:func:`resolve_channels`: ``rgb`` when any picture or NIfTI file is colour, else ``grey``) and saves the
  resolved value in the run's ``config.yaml``, so ``evaluate`` and ``predict`` convert as training did.
  A chain built with ``auto`` still (an old run, a preview) keeps each image's channels as read.

In a 2D config, a colour volume of one slice, (C, x, y, 1) channels first (MedMNIST RGB), is a 2D colour
image: :class:`ImageChannelsd` drops the slice axis before the shape check. A 3D volume keeps its one channel
under ``grey`` and is repeated under ``rgb``. Images with other channel counts (2 under ``rgb`` / ``grey`` is
grey + alpha; 5 or more) are refused naming the file.

Example:
    >>> import torch
    >>> to_channels(torch.ones(1, 2, 2), "rgb", "x.png").shape
    torch.Size([3, 2, 2])
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.errors import ConfigError, ImageReadError
from transforms.config import CHANNEL_RULES
from transforms.image_files import is_picture

#: ITU-R BT.601 luma weights (Pillow's ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _where(img: Any, key: Hashable) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or f"<{key}>")


def to_channels(img: torch.Tensor, rule: str, where: str = "") -> torch.Tensor:
    """``img`` (C, spatial...) brought to the channels of ``rule`` (metadata kept for a MetaTensor).

    Raises:
        ImageReadError: a channel count the rule cannot convert (names ``where`` and the count).
    """
    channels = int(img.shape[0])
    if rule == "auto" or (rule == "grey" and channels == 1) or (rule == "rgb" and channels == 3):
        return img
    if channels not in (1, 2, 3, 4):
        raise ImageReadError(f"{where}: has {channels} channels, shape {tuple(img.shape)}; transforms.channels: "
                             f"{rule} converts images of 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels; "
                             "use channels: auto with images of one channel count, or convert the file")
    grey = channels <= 2
    if rule == "rgb":
        return img[:1].repeat(3, *([1] * (img.ndim - 1))) if grey else img[:3]
    if grey:
        return img[:1]
    weights = torch.as_tensor(LUMA, dtype=torch.float32, device=img.device).reshape(3, *([1] * (img.ndim - 1)))
    return (img[:3].float() * weights).sum(dim=0, keepdim=True)


class ImageChannelsd(MapTransform):
    """Apply the channel rule to each image key (and, in 2D, drop the slice axis of a one-slice colour volume).

    Args:
        keys: image keys, channels first.
        rule: ``auto``, ``grey`` or ``rgb``.
        spatial_dims: the model's (2 or 3).
        before_check: only drop the slice axis (the step before the shape check); the rule runs in a second
            instance after it.
    """

    def __init__(self, keys: KeysCollection, rule: str, spatial_dims: int, before_check: bool = False) -> None:
        super().__init__(keys)
        if rule not in CHANNEL_RULES:
            raise ConfigError(f"config key 'transforms.channels': '{rule}' unknown; allowed: "
                              f"{', '.join(CHANNEL_RULES)}")
        self.rule, self.spatial_dims, self.before_check = rule, spatial_dims, before_check

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if self.before_check:
                if self.spatial_dims == 2 and img.ndim == 4 and img.shape[-1] == 1 and img.shape[0] > 1:
                    d[key] = img[..., 0]
            else:
                d[key] = to_channels(img, self.rule, _where(img, key))
        return d


def is_colour_file(path: str | Path) -> bool:
    """Whether a file holds a colour image, from its header only: a colour picture, or a NIfTI of shape
    (x, y, 1, 3|4) (MedMNIST RGB). Other files (DICOM, grey pictures, unreadable files) count as grey."""
    from transforms.image_files import picture_header
    from transforms.limits import nifti_header

    name = str(path).lower()
    try:
        if is_picture(name):
            _, mode, _ = picture_header(path)
            return mode in _COLOUR_MODES or (mode in ("P", "PA") and _palette_colour(path))
        if name.endswith((".nii", ".nii.gz")):
            shape = nifti_header(path).shape
            return len(shape) == 4 and shape[2] == 1 and shape[3] in (3, 4)
    except (OSError, ValueError):  # unreadable files are reported by the manifest check, not here
        return False
    return False


def _palette_colour(path: str | Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        palette = img.getpalette() or []
    triples = [palette[i:i + 3] for i in range(0, len(palette) - 2, 3)]
    return any(len(set(t)) > 1 for t in triples)


def resolve_channels(rule: str, paths: Iterable[str | Path], spatial_dims: int) -> str:
    """The concrete rule for ``auto``: ``rgb`` when any of ``paths`` is colour (:func:`is_colour_file`), else
    ``grey``; ``grey`` and ``rgb`` are returned unchanged. A 3D config resolves to ``grey`` without reading."""
    if rule != "auto":
        return rule
    if spatial_dims == 3:
        return "grey"
    return "rgb" if any(is_colour_file(p) for p in paths) else "grey"


__all__ = ["LUMA", "ImageChannelsd", "is_colour_file", "resolve_channels", "to_channels"]
