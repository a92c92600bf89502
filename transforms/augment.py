"""Augmentation sets: MONAI random dictionary transforms for 2D and 3D, each with probability ``augment_prob``.

=========  ==================================================================================
set        transforms (each applied with probability ``transforms.augment_prob``)
=========  ==================================================================================
``none``   nothing
``light``  flips along each axis of ``transforms.flip_axes`` (default: the two in-plane axes),
           90-degree in-plane rotations with ``transforms.turns`` (square in-plane size only:
           otherwise the shape would change; the two flips already give the 180-degree turn)
``medium`` light + affine (in-plane rotation +-15 deg, +-5 deg out of plane in 3D, scale +-10 %),
           Gaussian noise (std up to 0.03), gamma 0.8..1.25, intensity scale +-10 %
``heavy``  light + affine (in-plane +-30 deg, +-10 deg out of plane in 3D, scale +-20 %, shift +-5 %),
           Gaussian noise (std up to 0.06), gamma 0.7..1.5, intensity scale +-20 %, bias field
           (MR presets only), and one of Gaussian smoothing (sigma 0.25..1 voxel) or sharpening
=========  ==================================================================================

In-plane means the first two spatial axes (x, y); in 3D after ``RAS`` reorientation that is
the axial plane and no flip or 90-degree turn crosses the superior-inferior axis. An oriented image (a
radiograph, an ultrasound: anatomy mirrors left-right, but up is up) can take ``flip_axes`` of its left-right
axis alone (x, axis 0: a picture's columns; DICOM and NIfTI in ``RAS``) and ``turns: false``,
so that no training image is one a scanner could not produce (on BreastMNIST this measured no gain: README). Intensity
magnitudes assume the unit range the intensity presets produce. Affine resampling fills with 0,
the background value of every preset. All transforms accept tensors on a CUDA device.

The ``light`` flips and 90-degree turns are MONAI's ``RandFlipd`` / ``RandRotate90d`` with the same random draws
and the same output (values, and the affine MONAI computes), without MONAI's per-call bookkeeping for
inversion (``applied_operations``, which radpipe never inverts): that bookkeeping cost more than the flip
itself: 0.2-0.5 ms of the ~6 ms a 224 x 224 RGB picture costs the data path (``benchmarks/loader.py --cases jpeg``).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta
from monai.data.utils import affine_to_spacing, to_affine_nd
from monai.transforms import (
    MapTransform,
    OneOf,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
)
from monai.transforms.utils import create_rotate, create_translate, map_spatial_axes
from monai.utils import convert_to_dst_type, convert_to_tensor

from pipeline.errors import ConfigError
from transforms.config import AUGMENT_SETS

_STRENGTH = {
    # in-plane deg, out-of-plane deg, scale, shift fraction, noise std, gamma, intensity factor
    "medium": (15.0, 5.0, 0.10, 0.0, 0.03, (0.8, 1.25), 0.10),
    "heavy": (30.0, 10.0, 0.20, 0.05, 0.06, (0.7, 1.5), 0.20),
}


def _moved(img: torch.Tensor, out: torch.Tensor, xform: Any) -> torch.Tensor:
    """``out`` with the affine of ``img`` composed with ``xform``, as MONAI's eager ``track_transform_meta``."""
    if not isinstance(out, MetaTensor):
        return out
    orig = convert_to_dst_type(img.affine, xform, dtype=torch.float64)[0]
    affine = convert_to_tensor(orig @ to_affine_nd(orig.shape[-1] - 1, xform, dtype=torch.float64),
                               device=torch.device("cpu"), dtype=torch.float64)
    out.meta = {**out.meta, "affine": affine}
    if "pixdim" in out.meta:
        pixdim = np.array(out.meta["pixdim"], copy=True)
        spacing = affine_to_spacing(affine)
        pixdim[1:1 + len(spacing)] = spacing
        out.meta["pixdim"] = pixdim
    return out


def _eager(transform: Any, data: Mapping[Hashable, Any], lazy: bool | None) -> bool:
    return not (transform.lazy if lazy is None else lazy) and all(
        isinstance(data[k], torch.Tensor) for k in transform.key_iterator(data))


class LightFlipd(RandFlipd):
    """MONAI's ``RandFlipd`` (same draws, values and affine) without recording ``applied_operations``."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, Any]:
        if not _eager(self, data, lazy):
            return super().__call__(data, lazy)
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            img = convert_to_tensor(d[key], track_meta=get_track_meta())
            if self._do_transform:
                axes = map_spatial_axes(img.ndim, self.flipper.spatial_axis)
                xform = torch.eye(int(img.affine.shape[-1]) if isinstance(img, MetaTensor) else 4, dtype=torch.double)
                for axis in axes:
                    xform[axis - 1, axis - 1], xform[axis - 1, -1] = -1.0, img.shape[axis] - 1
                img = _moved(img, torch.flip(img, axes), xform)
            d[key] = img
        return d


class LightRotate90d(RandRotate90d):
    """MONAI's ``RandRotate90d`` (same draws, values and affine) without recording ``applied_operations``."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, Any]:
        if not _eager(self, data, lazy):
            return super().__call__(data, lazy)
        self.randomize()
        d = dict(data)
        k, axes = self._rand_k, tuple(a + 1 for a in self.spatial_axes)
        for key in self.key_iterator(d):
            img = convert_to_tensor(d[key], track_meta=get_track_meta())
            if self._do_transform:
                img = _moved(img, torch.rot90(img, k, axes), _rot90_xform(img, axes, k))
            d[key] = img
        return d


def _rot90_xform(img: torch.Tensor, axes: tuple[int, int], k: int) -> Any:
    """The affine of ``k`` turns in ``axes`` (channel axis counted), as MONAI's ``rotate90`` computes it."""
    ori_shape = list(img.shape[1:])
    sp_shape = list(ori_shape)
    if k in (1, 3):
        sp_shape[axes[0] - 1], sp_shape[axes[1] - 1] = ori_shape[axes[1] - 1], ori_shape[axes[0] - 1]
    r, sp_r = (int(img.affine.shape[-1]) - 1 if isinstance(img, MetaTensor) else 3), len(ori_shape)
    xform = to_affine_nd(r, create_translate(sp_r, [-float(d - 1) / 2 for d in sp_shape]))
    s = -1.0 if int(axes[0]) - int(axes[1]) in (-1, 2) else 1.0
    if sp_r == 2:
        rot90 = to_affine_nd(r, create_rotate(sp_r, [s * np.pi / 2]))
    else:
        angle: list[float] = [0, 0, 0]
        angle[({1, 2, 3} - set(axes)).pop() - 1] = s * np.pi / 2
        rot90 = to_affine_nd(r, create_rotate(sp_r, angle))
    for _ in range(k):
        xform = rot90 @ xform
    return to_affine_nd(r, create_translate(sp_r, [float(d - 1) / 2 for d in ori_shape])) @ xform


def _light(keys: KeysCollection, prob: float, size: Sequence[int], flip_axes: Sequence[int],
           turns: bool) -> list[MapTransform]:
    transforms: list[MapTransform] = [LightFlipd(keys, prob=prob, spatial_axis=a) for a in flip_axes]
    if turns and len(size) >= 2 and size[0] == size[1]:
        transforms.append(LightRotate90d(keys, prob=prob, max_k=3, spatial_axes=(0, 1)))
    return transforms


def _affine(
    keys: KeysCollection, prob: float, size: Sequence[int], strength: str, device: torch.device | None
) -> RandAffined:
    in_plane, out_plane, scale, shift, *_ = _STRENGTH[strength]
    dims = len(size)
    if dims == 2:
        rotate: tuple[float, ...] = (math.radians(in_plane),)
    else:
        rotate = (math.radians(out_plane), math.radians(out_plane), math.radians(in_plane))
    translate = tuple(shift * s for s in size) if shift else None
    return RandAffined(
        keys,
        spatial_size=tuple(size),
        prob=prob,
        rotate_range=rotate,
        scale_range=(scale,) * dims,
        translate_range=translate,
        mode="bilinear",
        padding_mode="zeros",
        cache_grid=True,
        device=device,
    )


def augment_transforms(
    keys: KeysCollection,
    name: str,
    prob: float,
    size: Sequence[int],
    modality: str = "any",
    device: torch.device | None = None,
    flip_axes: Sequence[int] = (0, 1),
    turns: bool = True,
) -> list[MapTransform]:
    """The random transforms of augmentation set ``name``.

    Args:
        keys: image keys.
        name: ``none``, ``light``, ``medium`` or ``heavy``.
        prob: probability of each transform.
        size: spatial size of the images they receive (2 or 3 values: 2D or 3D).
        modality: ``mr`` adds the bias field to ``heavy``.
        device: where the affine grids are made (the images' device).
        flip_axes: the spatial axes flipped (``transforms.flip_axes``).
        turns: 90-degree turns in the plane of axes 0 and 1 (``transforms.turns``).

    Raises:
        ConfigError: unknown set name or a size that is neither 2D nor 3D.
    """
    if name not in AUGMENT_SETS:
        raise ConfigError(f"config key 'transforms.augment': unknown set '{name}'; known: {', '.join(AUGMENT_SETS)}")
    if name == "none":
        return []
    if len(size) not in (2, 3):
        raise ConfigError(f"config key 'transforms.size': augmentation needs 2 or 3 values, found {list(size)}")
    transforms = _light(keys, prob, size, flip_axes, turns)
    if name == "light":
        return transforms
    _, _, _, _, noise, gamma, factor = _STRENGTH[name]
    transforms += [
        _affine(keys, prob, size, name, device),
        RandGaussianNoised(keys, prob=prob, mean=0.0, std=noise),
        RandAdjustContrastd(keys, prob=prob, gamma=gamma),
        RandScaleIntensityd(keys, prob=prob, factors=factor),
    ]
    if name == "heavy":
        if modality == "mr":
            transforms.append(RandBiasFieldd(keys, prob=prob, coeff_range=(0.0, 0.1)))
        transforms.append(
            OneOf(
                [
                    RandGaussianSmoothd(
                        keys, prob=prob, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0)
                    ),
                    RandGaussianSharpend(keys, prob=prob),
                ]
            )
        )
    return transforms
