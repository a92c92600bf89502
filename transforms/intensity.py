"""Intensity presets a radiologist recognises: CT windows, MR normalisation, X-ray scaling.

Each preset is a named factory of MONAI dictionary transforms registered in :data:`PRESETS`
(``radpipe`` config key ``transforms.intensity``). Every preset except ``none`` maps the
image to roughly unit range, and 0 is the background value of every preset (bottom of a CT
window, lower percentile, minimum, or the untouched zero background of ``mr-zscore``), so
padding with 0 later never invents tissue.

CT windows (level / width in HU; the window [L - W/2, L + W/2] maps linearly onto [0, 1],
values outside are clipped):

=================  =======  ======  ====================
preset             level    width   HU range
=================  =======  ======  ====================
``ct-lung``        -600     1500    [-1350, 150]
``ct-mediastinum`` 50       350     [-125, 225]
``ct-abdomen``     40       400     [-160, 240]
``ct-brain``       40       80      [0, 80]
``ct-bone``        400      1800    [-500, 1300]
``ct-custom``      ``transforms.window: [level, width]``
=================  =======  ======  ====================

``transforms.windows: [ct-lung, ct-mediastinum, ...]`` stacks several windows of the same
image as channels (one channel per window, see :class:`MultiWindowd`).

MR: ``mr-zscore`` subtracts the mean and divides by the standard deviation of the
foreground (nonzero) voxels of each channel, background stays 0; ``mr-percentile`` maps
the 0.5th..99.5th percentiles onto [0, 1] and clips. X-ray: ``xray-percentile`` maps the
1st..99th percentiles onto [0, 1] and clips (collimator edges and burned-in text sit in
the tails); MONOCHROME1 inversion is done by the loader, not here. ``minmax`` maps the
image's minimum..maximum onto [0, 1]; ``none`` leaves values as read.

Pictures: ``imagenet`` is the normalisation of torchvision's ImageNet models (``ToTensor`` then
``Normalize(mean, std)``): values divided by 255 (by 65535 for a 16-bit picture or an image holding values
above 255), then per channel ``(x - mean) / std`` with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` for RGB
and their averages (0.449 / 0.226) for a grey channel. Its background is negative, not 0: padding with 0
after it adds mid-grey (use ``resize: resize``, the default, which never pads). It maps each value on its
own, linearly (:data:`PIXELWISE_LINEAR`), so the chain runs it after the resize, on 5x fewer pixels.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    NormalizeIntensityd,
    ScaleIntensity,
    ScaleIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from transforms.config import TransformsConfig

#: CT windows as (level, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "ct-lung": (-600.0, 1500.0),
    "ct-mediastinum": (50.0, 350.0),
    "ct-abdomen": (40.0, 400.0),
    "ct-brain": (40.0, 80.0),
    "ct-bone": (400.0, 1800.0),
}

#: Voxels above this HU value count as body when cropping CT to the foreground (air is about -1000).
CT_BODY_HU = -500.0

#: Presets that map each value on its own, linearly: the chain runs them after resizing (same result, fewer pixels).
PIXELWISE_LINEAR = ("imagenet",)
#: torchvision's ImageNet normalisation (RGB), and the grey value used for one channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GREY = (0.449, 0.226)

MR_PERCENTILES = (0.5, 99.5)
XRAY_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class Preset:
    """One intensity preset.

    Attributes:
        name: the config value, e.g. ``ct-lung``.
        modality: ``ct``, ``mr``, ``xray`` or ``any``: selects the foreground rule and modality-specific augmentation.
        description: one line for listings and error messages.
        factory: ``factory(keys, transforms_config)`` returns the dictionary transforms.
    """

    name: str
    modality: str
    description: str
    factory: Callable[[KeysCollection, TransformsConfig], list[MapTransform]]


def window_range(level: float, width: float) -> tuple[float, float]:
    """The HU interval ``[level - width/2, level + width/2]`` of a CT window.

    Raises:
        ConfigError: ``width`` is not positive.
    """
    if width <= 0:
        raise ConfigError(f"CT window width must be > 0 HU, found {width}; fix transforms.window: [level, width]")
    return level - width / 2.0, level + width / 2.0


def _ct_window(level: float, width: float) -> Callable[[KeysCollection, TransformsConfig], list[MapTransform]]:
    def factory(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
        low, high = window_range(level, width)
        return [ScaleIntensityRanged(keys, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)]

    return factory


def custom_window(cfg: TransformsConfig) -> tuple[float, float]:
    """The ``(level, width)`` of ``transforms.window`` for ``ct-custom``.

    Raises:
        ConfigError: ``transforms.window`` is not ``[level, width]``.
    """
    if len(cfg.window) != 2:
        raise ConfigError(
            f"config key 'transforms.window': intensity 'ct-custom' needs [level, width] in HU, found "
            f"{list(cfg.window)}; e.g. window: [40, 400]"
        )
    return float(cfg.window[0]), float(cfg.window[1])


def _ct_custom(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    return _ct_window(*custom_window(cfg))(keys, cfg)


def _mr_zscore(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    return [NormalizeIntensityd(keys, nonzero=True, channel_wise=True)]


def _percentile(lower: float, upper: float) -> Callable[[KeysCollection, TransformsConfig], list[MapTransform]]:
    def factory(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
        return [ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)]

    return factory


def _minmax(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    return [ScaleIntensityd(keys, minv=0.0, maxv=1.0)]


def _none(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    return []


class ImageNetNormalised(MapTransform):
    """torchvision's ``ToTensor`` + ``Normalize`` for ImageNet weights (see the module docstring).

    The divisor is 65535 for a 16-bit picture (the reader's ``photometric_original`` mode ``I;16``) or any image
    holding values above 255, else 255.
    """

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key].float() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key]).float()
            mode = str((getattr(d[key], "meta", None) or {}).get("photometric_original", ""))
            scale = 65535.0 if mode.startswith("I;16") or float(x.max()) > 255.0 else 255.0
            shape = (-1, *([1] * (x.ndim - 1)))
            if x.shape[0] == 3:
                mean, std = torch.tensor(IMAGENET_MEAN).reshape(shape), torch.tensor(IMAGENET_STD).reshape(shape)
            else:
                mean, std = torch.tensor(IMAGENET_GREY[0]), torch.tensor(IMAGENET_GREY[1])
            # (x / scale - mean) / std in two passes over the image; x itself is never modified
            d[key] = x.mul((1.0 / (scale * std)).to(x.device)).sub_((mean / std).to(x.device))
        return d


def _imagenet(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    return [ImageNetNormalised(keys)]


class UnwindowedMinMaxd(MapTransform):
    """Min-max onto [0, 1] for the images the reader did not show through a DICOM display window."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if "display_window" not in (getattr(d[key], "meta", None) or {}):
                d[key] = ScaleIntensity(minv=0.0, maxv=1.0)(d[key])
        return d


def _dicom_window(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    return [UnwindowedMinMaxd(keys)]  # the window itself is applied by the reader (uses_display_window)


def uses_display_window(cfg: TransformsConfig) -> bool:
    """True when the reader must show DICOM images through their own VOI LUT or window (``dicom-window``)."""
    return cfg.intensity == "dicom-window"


PRESETS: dict[str, Preset] = {
    **{
        name: Preset(name, "ct", f"CT window L{level:g}/W{width:g} HU -> [0, 1], clipped", _ct_window(level, width))
        for name, (level, width) in CT_WINDOWS.items()
    },
    "ct-custom": Preset("ct-custom", "ct", "CT window transforms.window: [level, width] HU -> [0, 1]", _ct_custom),
    "mr-zscore": Preset("mr-zscore", "mr", "z-score over foreground (nonzero) voxels per channel", _mr_zscore),
    "mr-percentile": Preset(
        "mr-percentile", "mr", "percentiles 0.5..99.5 -> [0, 1], clipped", _percentile(*MR_PERCENTILES)
    ),
    "xray-percentile": Preset(
        "xray-percentile", "xray", "percentiles 1..99 -> [0, 1], clipped", _percentile(*XRAY_PERCENTILES)
    ),
    "minmax": Preset("minmax", "any", "image minimum..maximum -> [0, 1]", _minmax),
    "dicom-window": Preset("dicom-window", "xray", "the DICOM file's own VOI LUT or WindowCenter/Width -> [0, 1] "
                           "(radiographs as a viewer shows them; MONOCHROME1 inverted); other files min..max",
                           _dicom_window),
    "imagenet": Preset("imagenet", "any", "/255 (16-bit: /65535), then ImageNet mean/std per channel", _imagenet),
    "none": Preset("none", "any", "values as read (HU for CT)", _none),
}


def get_preset(name: str, key: str = "transforms.intensity") -> Preset:
    """The preset called ``name``.

    Raises:
        ConfigError: no preset has that name; the message lists the known ones and a close match.
    """
    if name in PRESETS:
        return PRESETS[name]
    match = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.5)
    hint = f" Did you mean '{match[0]}'?" if match else ""
    raise ConfigError(f"config key '{key}': unknown intensity preset '{name}'; known: {', '.join(PRESETS)}.{hint}")


def window_of(name: str, cfg: TransformsConfig, key: str = "transforms.windows") -> tuple[float, float]:
    """The ``(level, width)`` of a CT window preset (``ct-custom`` reads ``transforms.window``).

    Raises:
        ConfigError: ``name`` is not a CT window preset.
    """
    if name == "ct-custom":
        return custom_window(cfg)
    if name in CT_WINDOWS:
        return CT_WINDOWS[name]
    ct_names = [*CT_WINDOWS, "ct-custom"]
    match = difflib.get_close_matches(name, ct_names, n=1, cutoff=0.5)
    hint = f" Did you mean '{match[0]}'?" if match else ""
    raise ConfigError(f"config key '{key}': '{name}' is not a CT window preset; known: {', '.join(ct_names)}.{hint}")


class MultiWindowd(MapTransform):
    """Stack several CT windows of each image as channels.

    An image of C channels becomes C * len(windows) channels, ordered window by window
    (all channels under the first window, then under the second ...). Each window maps
    ``[level - width/2, level + width/2]`` HU linearly onto [0, 1] and clips.

    Args:
        keys: image keys.
        windows: ``(level, width)`` pairs in HU.
    """

    def __init__(self, keys: KeysCollection, windows: Sequence[tuple[float, float]]) -> None:
        super().__init__(keys)
        if not windows:
            raise ConfigError("config key 'transforms.windows': expected at least one CT window preset, found none")
        self.ranges = [window_range(level, width) for level, width in windows]

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            x = img if isinstance(img, torch.Tensor) else torch.as_tensor(img)
            x = x.float()
            d[key] = torch.cat([((x - low) / (high - low)).clamp(0.0, 1.0) for low, high in self.ranges], dim=0)
        return d


def intensity_transforms(keys: KeysCollection, cfg: TransformsConfig) -> list[MapTransform]:
    """The intensity transforms of ``cfg``: the multi-window stack when ``windows`` is set, else the preset.

    Raises:
        ConfigError: unknown preset or window, or both ``intensity`` and ``windows`` set.
    """
    if cfg.windows:
        if cfg.intensity != "none":
            raise ConfigError(
                f"config keys 'transforms.intensity' ({cfg.intensity}) and 'transforms.windows' "
                f"({list(cfg.windows)}) are both set; multi-window input replaces the preset: set intensity: none"
            )
        return [MultiWindowd(keys, [window_of(name, cfg) for name in cfg.windows])]
    return get_preset(cfg.intensity).factory(keys, cfg)


def modality_of(cfg: TransformsConfig) -> str:
    """``ct``, ``mr``, ``xray`` or ``any``: the modality implied by the intensity settings."""
    if cfg.windows:
        return "ct"
    return PRESETS[cfg.intensity].modality if cfg.intensity in PRESETS else "any"


def foreground_threshold(cfg: TransformsConfig) -> float:
    """Raw-intensity value above which a voxel is foreground: ``CT_BODY_HU`` for CT, else 0."""
    return CT_BODY_HU if modality_of(cfg) == "ct" else 0.0


def describe_presets() -> str:
    """One line per preset: name and description."""
    return "\n".join(f"{p.name:<16} {p.description}" for p in PRESETS.values())
