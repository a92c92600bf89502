"""Spatial preprocessing: shape checks, reorientation, resampling, foreground crop, 2D slicing, final size.

Axes: images are channel-first ``(C, x, y[, z])`` as MONAI loads them. After reorientation
to ``RAS`` the last spatial axis runs inferior -> superior, so the 2D slices taken from a
3D volume (:class:`SliceTo2Dd`) are axial. Without reorientation (``orientation: ""``)
the last axis of the file is used, which for volumes converted from DICOM is the slice
axis of the acquisition.

2D from 3D (``spatial_dims: 2`` and a 3D image): ``middle`` keeps the middle slice,
``slab`` keeps ``slab`` consecutive slices centred on the middle one as channels (2.5D;
slices past the ends repeat the edge slice), ``all`` makes every slice a sample of its
own (the transform returns a list of dicts that MONAI's datasets and
``list_data_collate`` flatten, each with a ``slice_index`` key). A 2D image (X-ray,
MedMNIST 2D) passes through unchanged (``all`` gives it ``slice_index`` 0).
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    CropForegroundd,
    MapTransform,
    Orientation,
    ResizeWithPadOrCropd,
    Resized,
    Spacingd,
)

from pipeline.errors import ConfigError, ImageReadError
from transforms.config import SLICE_MODES

if TYPE_CHECKING:
    from transforms.config import TransformsConfig


def source_name(img: Any, key: Hashable) -> str:
    """The file an image was read from (from its MONAI metadata), or the key when unknown."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return str(name) if name else f"<{key}>"


class CheckImaged(MapTransform):
    """Reject images the chain would otherwise silently misread.

    Raises :class:`~pipeline.errors.ImageReadError` naming the file for a 4D image
    (x, y, z, t): after ``ensure_channel_first`` its time points would pass as channels.
    radpipe takes one 3D volume per image column; extract a frame (or list each frame in
    its own column). Raises :class:`~pipeline.errors.ConfigError` for a 2D image under a
    3D model, and for more than 3 spatial axes.

    Args:
        keys: image keys.
        spatial_dims: 2 or 3, the model's.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int) -> None:
        super().__init__(keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        for key in self.key_iterator(data):
            img = data[key]
            spatial = img.ndim - 1
            name = source_name(img, key)
            if spatial > 3 or (spatial == 3 and img.shape[0] > 1):
                raise ImageReadError(
                    f"{name} (column '{key}') is a 4D image with shape {tuple(img.shape)} (channels first); expected "
                    "one 3D volume per image column: extract one frame (e.g. the first) into its own file, or list "
                    "each frame as a separate image column"
                )
            if spatial < 2:
                raise ImageReadError(f"{name} (column '{key}') has shape {tuple(img.shape)}; expected a 2D or 3D image")
            if spatial == 2 and self.spatial_dims == 3:
                raise ConfigError(
                    f"{name} (column '{key}') is a 2D image but transforms.spatial_dims is 3; set spatial_dims: 2 "
                    "(with a 2-value size) for 2D images"
                )
        return data


class Reorientd(MapTransform):
    """Reorient to ``axcodes`` (e.g. ``RAS``); a 2D image uses the first two codes.

    Args:
        keys: image keys.
        axcodes: target orientation, 3 letters.
    """

    def __init__(self, keys: KeysCollection, axcodes: str) -> None:
        super().__init__(keys)
        self.axcodes = axcodes
        # labels=None: the axis labels follow the image's "space" metadata (RAS or LPS affines both work)
        self._by_rank = {rank: Orientation(axcodes=axcodes[:rank], labels=None) for rank in (2, 3)}

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._by_rank[d[key].ndim - 1](d[key])
        return d


class SameGridd(MapTransform):
    """Require the images of several columns to share one voxel grid (needed to crop them with one box)."""

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        keys = list(self.key_iterator(data))
        first = keys[0]
        for key in keys[1:]:
            if tuple(data[key].shape[1:]) != tuple(data[first].shape[1:]):
                raise ImageReadError(
                    f"{source_name(data[key], key)} (column '{key}', shape {tuple(data[key].shape[1:])}) is not on "
                    f"the grid of {source_name(data[first], first)} (column '{first}', shape "
                    f"{tuple(data[first].shape[1:])}); transforms.crop_foreground crops every column with the box of "
                    f"the first: register the images to one grid, or set crop_foreground: false"
                )
        return data


def foreground_mask(img: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Voxels above ``threshold``; every voxel when none is (an empty crop would lose the image)."""
    mask = img > threshold
    if not bool(mask.any()):
        return torch.ones_like(mask)
    return mask


def spacing_transforms(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    """Resample to ``cfg.spacing`` mm (bilinear); none when it is empty.

    Two values on a 3D volume resample in-plane only and keep the slice spacing.
    """
    if not cfg.spacing:
        return []
    pixdim = tuple(float(s) for s in cfg.spacing)
    if len(pixdim) == 2:
        pixdim = (*pixdim, 0.0)  # non-positive: MONAI keeps the image's own spacing on that axis
    return [Spacingd(keys, pixdim=pixdim, mode="bilinear", padding_mode="border")]


def crop_foreground_transforms(keys: Sequence[str], threshold: float) -> list[MapTransform]:
    """Crop every key to the bounding box of the first key's voxels above ``threshold`` (raw intensities)."""
    select = functools.partial(foreground_mask, threshold=threshold)
    transforms: list[MapTransform] = [SameGridd(keys)] if len(keys) > 1 else []
    transforms.append(
        CropForegroundd(
            keys, source_key=keys[0], select_fn=select, allow_smaller=True, start_coord_key=None, end_coord_key=None
        )
    )
    return transforms


class SliceTo2Dd(MapTransform):
    """From a 3D volume ``(C, x, y, z)`` to 2D input along the last spatial axis (see the module docstring).

    Args:
        keys: image keys; with ``all`` every key must have the same number of slices.
        mode: ``middle``, ``slab`` or ``all``.
        slab: slices of a slab (odd).
    """

    def __init__(self, keys: KeysCollection, mode: str, slab: int = 3) -> None:
        super().__init__(keys)
        if mode not in SLICE_MODES:
            raise ConfigError(f"config key 'transforms.slice_mode': '{mode}' unknown; allowed: {', '.join(SLICE_MODES)}")
        self.mode = mode
        self.slab = slab

    @staticmethod
    def _to_2d(img: torch.Tensor, index: int) -> torch.Tensor:
        """Move the affine's origin to slice ``index`` (kept 4x4, like the affine of a 2D file)."""
        if isinstance(img, MetaTensor) and tuple(img.affine.shape) == (4, 4):
            affine = img.affine.clone()
            affine[:3, 3] = affine[:3, 3] + index * affine[:3, 2]
            img.affine = affine
        return img

    def _slab(self, img: torch.Tensor) -> torch.Tensor:
        depth = img.shape[-1]
        middle = depth // 2
        half = self.slab // 2
        index = torch.arange(middle - half, middle + half + 1).clamp(0, depth - 1)
        chunk = img[..., index]  # (C, x, y, slab)
        out = chunk.movedim(-1, 1).reshape(img.shape[0] * self.slab, *img.shape[1:-1])
        return self._to_2d(out, middle)

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        keys = list(self.key_iterator(data))
        volumes = [k for k in keys if data[k].ndim == 4]
        if self.mode == "all":
            return self._all_slices(data, keys, volumes)
        d = dict(data)
        for key in volumes:
            img = d[key]
            middle = img.shape[-1] // 2
            d[key] = self._to_2d(img[..., middle], middle) if self.mode == "middle" else self._slab(img)
        return d

    def _all_slices(
        self, data: dict[Hashable, Any], keys: list[Hashable], volumes: list[Hashable]
    ) -> list[dict[Hashable, Any]]:
        if not volumes:
            return [{**data, "slice_index": 0}]
        depths = {data[k].shape[-1] for k in volumes}
        if len(depths) > 1 or len(volumes) != len(keys):
            shapes = ", ".join(f"{k}: {tuple(data[k].shape[1:])} ({source_name(data[k], k)})" for k in keys)
            raise ImageReadError(
                f"slice_mode 'all' pairs slices of every image column by index, but the columns differ in slices: "
                f"{shapes}; resample them to one grid (transforms.spacing) or use slice_mode: middle"
            )
        others = {k: v for k, v in data.items() if k not in keys}
        samples = []
        for i in range(depths.pop()):
            sample = copy.deepcopy(others)
            sample.update({k: self._to_2d(data[k][..., i], i) for k in keys})
            sample["slice_index"] = i
            samples.append(sample)
        return samples


class Resize2Dd(MapTransform):
    """Resize 2D images ``(C, x, y)`` with ``torch``'s anti-aliased bilinear filter (PIL's and torchvision's
    ``Resize(antialias=True)``), 5-10x faster than MONAI's Gaussian pre-smoothing on large radiographs; the
    affine is updated as MONAI's ``Resize`` updates it (pixel centres kept, ``align_corners=False``).

    Args:
        keys: image keys.
        size: the output ``(x, y)``.
    """

    def __init__(self, keys: KeysCollection, size: Sequence[int]) -> None:
        super().__init__(keys)
        self.size = tuple(int(s) for s in size)

    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if tuple(img.shape[1:]) == self.size:
                continue
            x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            out = torch.nn.functional.interpolate(x[None].float(), size=self.size, mode="bilinear",
                                                  align_corners=False, antialias=True)[0]
            if isinstance(img, MetaTensor):
                scale = torch.eye(4, dtype=torch.float64)
                for axis, (before, after) in enumerate(zip(img.shape[1:], self.size)):
                    scale[axis, axis] = before / after
                    scale[axis, 3] = (before / after - 1) / 2
                meta = {k: v for k, v in img.meta.items() if k != "affine"}
                out = MetaTensor(out, affine=img.affine.to(torch.float64) @ scale, meta=meta)
                out.meta["spatial_shape"] = torch.as_tensor(self.size)
            d[key] = out
        return d


def size_transforms(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    """Bring every image to ``cfg.size``: interpolate (``resize``, anti-aliased) or centre crop / zero-pad.

    2D uses :class:`Resize2Dd` (the filter torchvision's ImageNet recipe uses), 3D MONAI's ``Resized``
    (trilinear after Gaussian anti-aliasing).
    """
    if not cfg.size:
        return []
    size = tuple(int(s) for s in cfg.size)
    if cfg.resize == "crop-pad":
        return [ResizeWithPadOrCropd(keys, spatial_size=size, mode="constant")]
    if len(size) == 2:
        return [Resize2Dd(keys, size)]
    return [Resized(keys, spatial_size=size, mode="trilinear", anti_aliasing=True)]


def slicing_transforms(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    """The 2D slicing step when the model is 2D; none for a 3D model."""
    if cfg.spatial_dims != 2:
        return []
    return [SliceTo2Dd(keys, cfg.slice_mode, cfg.slab)]
