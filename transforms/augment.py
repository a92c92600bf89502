"""Augmentation sets: MONAI random dictionary transforms for 2D and 3D, each with probability ``augment_prob``.

=========  ==================================================================================
set        transforms (each applied with probability ``transforms.augment_prob``)
=========  ==================================================================================
``none``   nothing
``light``  flips along each in-plane axis, 90-degree in-plane rotations (square in-plane size only:
           otherwise the shape would change; the two flips already give the 180-degree turn)
``medium`` light + affine (in-plane rotation +-15 deg, +-5 deg out of plane in 3D, scale +-10 %),
           Gaussian noise (std up to 0.03), gamma 0.8..1.25, intensity scale +-10 %
``heavy``  light + affine (in-plane +-30 deg, +-10 deg out of plane in 3D, scale +-20 %, shift +-5 %),
           Gaussian noise (std up to 0.06), gamma 0.7..1.5, intensity scale +-20 %, bias field
           (MR presets only), and one of Gaussian smoothing (sigma 0.25..1 voxel) or sharpening
=========  ==================================================================================

In-plane means the first two spatial axes (x, y); in 3D after ``RAS`` reorientation that is
the axial plane and no flip or 90-degree turn crosses the superior-inferior axis. Intensity
magnitudes assume the unit range the intensity presets produce. Affine resampling fills with 0,
the background value of every preset. All transforms accept tensors on a CUDA device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.config import KeysCollection
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

from pipeline.errors import ConfigError
from transforms.config import AUGMENT_SETS


_STRENGTH = {
    # in-plane deg, out-of-plane deg, scale, shift fraction, noise std, gamma, intensity factor
    "medium": (15.0, 5.0, 0.10, 0.0, 0.03, (0.8, 1.25), 0.10),
    "heavy": (30.0, 10.0, 0.20, 0.05, 0.06, (0.7, 1.5), 0.20),
}


def _light(keys: KeysCollection, prob: float, size: Sequence[int]) -> list[MapTransform]:
    transforms: list[MapTransform] = [
        RandFlipd(keys, prob=prob, spatial_axis=0),
        RandFlipd(keys, prob=prob, spatial_axis=1),
    ]
    if len(size) >= 2 and size[0] == size[1]:
        transforms.append(RandRotate90d(keys, prob=prob, max_k=3, spatial_axes=(0, 1)))
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
) -> list[MapTransform]:
    """The random transforms of augmentation set ``name``.

    Args:
        keys: image keys.
        name: ``none``, ``light``, ``medium`` or ``heavy``.
        prob: probability of each transform.
        size: spatial size of the images they receive (2 or 3 values: 2D or 3D).
        modality: ``mr`` adds the bias field to ``heavy``.
        device: where the affine grids are made (the images' device).

    Raises:
        ConfigError: unknown set name or a size that is neither 2D nor 3D.
    """
    if name not in AUGMENT_SETS:
        raise ConfigError(f"config key 'transforms.augment': unknown set '{name}'; known: {', '.join(AUGMENT_SETS)}")
    if name == "none":
        return []
    if len(size) not in (2, 3):
        raise ConfigError(f"config key 'transforms.size': augmentation needs 2 or 3 values, found {list(size)}")
    transforms = _light(keys, prob, size)
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
