"""The ``transforms`` section of a run config: what a chain needs, and the values each setting allows.

This module imports neither MONAI nor torch, so a config loads fast; the chains
(:mod:`transforms.chains`) are built from a :class:`TransformsConfig` and the image keys alone, without a
run config. The allowed values of each setting are owned here and used by the modules implementing them
(:data:`AUGMENT_SETS` by :mod:`transforms.augment`, :data:`SLICE_MODES` and :data:`RESIZE_MODES` by
:mod:`transforms.spatial`, :data:`CHANNEL_RULES` by :mod:`transforms.channels`).

Example:
    >>> TransformsConfig(spatial_dims=2, size=(224, 224)).size
    (224, 224)
    >>> TransformsConfig(spatial_dims=2)
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: config key 'transforms.size': [64, 64, 32] has 3 values but transforms.spatial_dims is 2; give 2 values
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import ConfigError

SPATIAL_DIMS = (2, 3)
RESIZE_MODES = ("resize", "crop-pad")
SLICE_MODES = ("middle", "slab", "all")
#: Where random augmentation runs.
AUGMENT_DEVICES = ("auto", "cpu", "cuda")
#: How the colour channels of each image become the model's: name -> what it does.
CHANNEL_RULES: dict[str, str] = {
    "auto": "resolved by radpipe train from the training images: rgb when any is colour, else grey",
    "grey": "one channel: colour images become their luminance (0.299 R + 0.587 G + 0.114 B)",
    "rgb": "three channels: a grey image is repeated in R, G and B; alpha is dropped",
}
#: Augmentation sets: name -> what it does.
AUGMENT_SETS: dict[str, str] = {
    "none": "no augmentation",
    "light": "flips along transforms.flip_axes and 90-degree in-plane turns (transforms.turns)",
    "medium": "light + small affine, Gaussian noise, gamma and intensity scaling",
    "heavy": "light + strong affine, noise, gamma, bias field (MR), smoothing or sharpening",
}


@dataclass(frozen=True)
class TransformsConfig:
    """The deterministic preprocessing and the random augmentation.

    Field metadata ``choices`` and ``range`` are the allowed values, checked by the config loader
    (:func:`pipeline.config.load_config`); the consistency of the fields together is checked on construction.

    Attributes:
        spatial_dims: 2 or 3: what the model sees.
        orientation: axis codes to reorient to (e.g. ``RAS``); empty keeps the file's.
        spacing: target voxel spacing in mm; empty keeps the file's.
        channels: ``auto``, ``grey`` or ``rgb`` (:data:`CHANNEL_RULES`): every image of a run is brought
            to one channel count, so grey and colour files can share a manifest.
        intensity: preset name (see ``transforms.intensity.PRESETS``), e.g. ``ct-abdomen``, ``mr-zscore``.
        window: custom CT window ``(level, width)`` in HU, used with ``intensity: ct-custom``.
        windows: several CT window presets stacked as channels (multi-window input).
        crop_foreground: crop to the bounding box of the body before resizing.
        size: spatial size the model sees (2 or 3 values).
        resize: ``resize`` (interpolate) or ``crop-pad`` (centre crop / pad).
        slice_mode: from a 3D volume to a 2D model: ``middle``, ``slab`` (2.5D channels) or ``all``.
        slab: number of slices of a slab (odd).
        augment: augmentation set: ``none``, ``light``, ``medium`` or ``heavy``.
        augment_prob: probability of each random transform of the set.
        flip_axes: the spatial axes the augmentation flips (each with ``augment_prob``): ``[0, 1]`` (both
            in-plane axes) suits images with no up or down (microscopy, dermoscopy); an oriented image (a
            radiograph, an ultrasound or an axial slice: anatomy mirrors left-right only) flips only its
            left-right axis, ``[0]`` (x: a picture's columns; DICOM and NIfTI in ``RAS``); ``[]`` flips nothing.
        turns: 90-degree turns in the plane of axes 0 and 1 (square planes only); ``false`` for oriented images.
        device: where random augmentation runs: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.

    Raises:
        ConfigError: on construction, when fields disagree (size vs spatial_dims, an even slab, ...).
    """

    spatial_dims: int = field(default=3, metadata={"choices": SPATIAL_DIMS})
    orientation: str = "RAS"
    spacing: tuple[float, ...] = ()
    channels: str = field(default="auto", metadata={"choices": tuple(CHANNEL_RULES)})
    intensity: str = "none"
    window: tuple[float, ...] = ()
    windows: tuple[str, ...] = ()
    crop_foreground: bool = False
    size: tuple[int, ...] = (64, 64, 32)
    resize: str = field(default="resize", metadata={"choices": RESIZE_MODES})
    slice_mode: str = field(default="middle", metadata={"choices": SLICE_MODES})
    slab: int = field(default=3, metadata={"range": (1, None)})
    augment: str = field(default="light", metadata={"choices": tuple(AUGMENT_SETS)})
    augment_prob: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    flip_axes: tuple[int, ...] = (0, 1)
    turns: bool = True
    device: str = field(default="auto", metadata={"choices": AUGMENT_DEVICES})

    def __post_init__(self) -> None:
        if any(s < 1 for s in self.size):
            raise ConfigError(f"config key 'transforms.size': every size must be at least 1 voxel, found "
                              f"{list(self.size)}; give the size the model sees, e.g. [224, 224] or [96, 96, 64]")
        if any(s <= 0 for s in self.spacing):
            raise ConfigError(f"config key 'transforms.spacing': every spacing must be above 0 mm, found "
                              f"{list(self.spacing)}; give mm per voxel, e.g. [1.5, 1.5, 3], or [] to keep the file's")
        if self.size and len(self.size) != self.spatial_dims:
            raise ConfigError(
                f"config key 'transforms.size': {list(self.size)} has {len(self.size)} values but "
                f"transforms.spatial_dims is {self.spatial_dims}; give {self.spatial_dims} values"
            )
        if len(set(self.flip_axes)) != len(self.flip_axes) or any(
                not 0 <= a < self.spatial_dims for a in self.flip_axes):
            raise ConfigError(
                f"config key 'transforms.flip_axes': {list(self.flip_axes)} is not a list of distinct spatial axes "
                f"of a {self.spatial_dims}D image; give axes from 0 to {self.spatial_dims - 1}, e.g. [0] for the "
                "left-right axis (x) of a picture, or [] for no flips")
        if self.spacing and len(self.spacing) not in (2, 3):
            raise ConfigError(f"config key 'transforms.spacing': expected 2 or 3 values, found {list(self.spacing)}")
        if self.window and len(self.window) != 2:
            raise ConfigError(f"config key 'transforms.window': expected [level, width], found {list(self.window)}")
        if self.slice_mode == "slab" and self.slab % 2 == 0:
            raise ConfigError(f"config key 'transforms.slab': expected an odd number of slices, found {self.slab}")
