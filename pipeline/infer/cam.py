"""Grad-CAM heat maps of predictions, saved as NIfTI and as a PNG (image, map and prediction side by side).

Maps explain the predicted class's logit (binary: the positive class), one case at a time, in float32.

Layer: ``model.cam_layer`` of the run's config when set; otherwise chosen by **feature-map size**
(:func:`choose_cam_layer`): the deepest layer whose feature map keeps at least :data:`MIN_CAM_VOXELS` voxels
along every axis. The last stage of a ResNet sees a 32x32x24 input as 1x1x1, a map that cannot point
anywhere; its stem (16x16x12) can. When no layer qualifies (token models), the backbone's own ``cam_layer``.

Method: HiResCAM by default (see :class:`CamMaker`), the element-wise form of Grad-CAM.

Grid: a map lies on the **preprocessed image grid**, the voxels the model saw (after the run's
orientation, spacing, crop and resize), upsampled from the layer's resolution with linear
interpolation and scaled to [0, 1]. The NIfTI file has that grid's shape and the preprocessed
image's affine (world coordinates in mm, RAS as MONAI keeps it), so world-aware viewers (3D
Slicer, ITK-SNAP, FSLeyes) overlay it on the original scan. The PNG shows, side by side, the slice through
the map's maximum (along the last axis; the image itself for 2D models) of the preprocessed image's first
channel, the map over it with its maximum marked, and the prediction.
"""
from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import RunError
from pipeline.files import atomic_path

#: Voxels a CAM layer's feature map keeps along every axis (fewer when the input itself is small).
MIN_CAM_VOXELS = 8


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch to [0, 1]; a constant map becomes zeros.

    "Constant" allows rounding: a 1x1x1 map upsampled by interpolation varies by about 1e-7 of its value, which
    scaling alone would blow up into a spurious full-range blob.
    """
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    high = flat.max(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    span = high - low
    flat_map = span <= 1e-5 * torch.maximum(high.abs(), low.abs()).clamp_min(1e-12)
    return torch.where(flat_map, torch.zeros_like(maps), (maps - low) / span.clamp_min(1e-12))


def cam_layer_of(model: nn.Module, layer: str | None = None) -> str:
    """The layer named ``layer`` (default: the model's ``cam_layer`` attribute), checked to exist.

    Raises:
        RunError: no layer is named, or the model has no layer of that name.
    """
    layer = layer or getattr(model, "cam_layer", None)
    names = dict(model.named_modules())
    if layer and layer not in names and hasattr(model, "member_layers"):  # an ensemble: a member's own layer name
        layer = model.member_layers(layer)[0]
    if not layer or layer not in names:
        convs = [n for n, m in names.items() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        raise RunError(
            f"the CAM layer {layer!r} is not one of the model's layers; set model.cam_layer to the name of a "
            f"convolutional stage (e.g. {convs[-1] if convs else 'none'}) or leave it empty to choose by size"
        )
    return str(layer)


def feature_map_sizes(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Spatial size of every named layer's output on a zero input ``(C, *spatial)``, in the order layers finish.

    Only outputs that are feature maps (a tensor ``(1, channels, *spatial)`` with the input's number of
    spatial axes) are listed.
    """
    spatial = len(input_shape) - 1
    sizes: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == spatial + 2:
                sizes.append((name, tuple(int(d) for d in out.shape[2:])))

        hooks.append(module.register_forward_hook(record))
    try:
        parameter = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), device=parameter.device if parameter is not None else "cpu")
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def choose_cam_layer(model: nn.Module, input_shape: Sequence[int], min_voxels: int = MIN_CAM_VOXELS) -> str:
    """The deepest layer whose feature map has at least ``min(min_voxels, n)`` voxels along each axis.

    ``n`` is the input's size along that axis (an input thinner than ``min_voxels`` keeps its own size).
    "Deepest" is the layer that finishes last in the forward pass (a stage finishes after its blocks).
    When no layer keeps that much (a very thin input), the deepest of those keeping the largest share of it;
    when no layer outputs a feature map at all (token models), the model's ``cam_layer``.

    Args:
        model: the network (in eval mode; one forward pass on zeros is run).
        input_shape: ``(C, *spatial)`` of one preprocessed image.
        min_voxels: voxels needed along an axis of 32 or more.
    """
    need = [min(min_voxels, int(n)) for n in input_shape[1:]]
    # how much of the needed size a map keeps along its worst axis (1 = enough); the deepest of the best wins
    scored = [(min(1.0, *(d / k for d, k in zip(size, need))), name)
              for name, size in feature_map_sizes(model, input_shape)]
    if not scored:
        return cam_layer_of(model)
    best = max(score for score, _ in scored)
    return [name for score, name in scored if score == best][-1]


#: How a map is computed from a layer's activations ``A`` and the gradients ``G`` of the explained output.
CAM_METHODS = ("hirescam", "gradcam")


class CamMaker:
    """Computes class activation maps with a private copy of the model (hooks never touch the inference model).

    ``hirescam`` (default; Draelos & Carin 2020): ``relu(sum_c G_c * A_c)``, Grad-CAM with the gradient kept
    per voxel instead of averaged over the map. At a high-resolution layer the averaged gradients of Grad-CAM
    weight generic channels (brightness, edges) alike everywhere, so its maximum lands on the brightest
    structure (in the demo the spine: 9 of 30 lesion maxima inside the lesion); the element-wise product keeps
    only what moves the output (29 of 30). ``gradcam``: MONAI's :class:`monai.visualize.GradCAM`.
    Either way the map is upsampled (linear) to the image grid and scaled by :func:`_unit_range`.

    Args:
        model: the trained network.
        device: where to compute.
        layer: layer name (the config's ``model.cam_layer``); empty or None chooses it by feature-map size
            (:func:`choose_cam_layer`) on the first image.
        method: one of :data:`CAM_METHODS`.

    Raises:
        RunError: ``layer`` is not one of the model's layers.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", layer: str | None = None,
                 method: str = "hirescam") -> None:
        if method not in CAM_METHODS:
            raise ValueError(f"CAM method {method!r} unknown; expected one of {CAM_METHODS}")
        self.device = torch.device(device)
        self.layer = cam_layer_of(model, layer) if layer else ""
        self.method = method
        self.model = copy.deepcopy(model).float().to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self._gradcam: list[Any] | None = None

    def __call__(self, image: torch.Tensor, class_index: int) -> np.ndarray:
        """The map of one preprocessed image ``(C, *spatial)`` for output ``class_index``: shape ``spatial``."""
        self.layer = self.layer or choose_cam_layer(self.model, tuple(image.shape))
        x = image.detach().float().unsqueeze(0).to(self.device).requires_grad_(True)
        with torch.enable_grad():
            cam = self._hirescam(x, int(class_index)) if self.method == "hirescam" else self._monai(x, class_index)
        return cam[0, 0].detach().cpu().numpy().astype(np.float32)

    def _layers(self) -> list[str]:
        """The hooked layers: ``self.layer``, or that layer in every member of an ensemble."""
        expand = getattr(self.model, "member_layers", None)
        return expand(self.layer) if expand is not None else [self.layer]

    def _monai(self, x: torch.Tensor, class_index: int) -> torch.Tensor:
        """MONAI's Grad-CAM; for an ensemble the mean of its members' maps."""
        from monai.visualize import GradCAM

        if self._gradcam is None:
            self._gradcam = [GradCAM(nn_module=self.model, target_layers=layer, postprocessing=_unit_range)
                             for layer in self._layers()]
        maps = [cam(x, class_idx=int(class_index)) for cam in self._gradcam]
        return maps[0] if len(maps) == 1 else _unit_range(torch.stack(maps).mean(dim=0))

    def _hirescam(self, x: torch.Tensor, class_index: int) -> torch.Tensor:
        """HiResCAM; for an ensemble (mean of the members' logits) the members' ``G * A`` terms add up."""
        seen: dict[str, torch.Tensor] = {}
        hooks = [self.model.get_submodule(layer).register_forward_hook(
            lambda _m, _i, out, layer=layer: seen.__setitem__(layer, out)) for layer in self._layers()]
        try:
            logits = self.model(x)
        finally:
            for hook in hooks:
                hook.remove()
        activations = list(seen.values())
        gradients = torch.autograd.grad(logits[0, class_index], activations)
        cam = torch.relu(sum((g * a).sum(dim=1, keepdim=True) for g, a in zip(gradients, activations))).detach()
        mode = ("linear", "bilinear", "trilinear")[x.ndim - 3]
        return _unit_range(nn.functional.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False))


def cam_class_index(task: str, probs: Sequence[float]) -> int:
    """The output explained: the positive class (binary), the most probable class or output otherwise."""
    if task == "binary" and len(probs) == 2:
        return 1
    if task == "regression" or len(probs) == 0:
        return 0
    return int(np.argmax(probs))


def cam_stem(case_id: str) -> str:
    """A file-name-safe stem for a case id (a short hash keeps distinct ids distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._") or "case"
    if safe != case_id or len(safe) > 80:
        safe = f"{safe[:80]}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"
    return safe


def _affine4(affine: torch.Tensor | np.ndarray | None, spatial: int) -> np.ndarray:
    if affine is None:
        return np.eye(4)
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a
    out = np.eye(4)
    if a.shape == (3, 3) and spatial == 2:
        out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
    return out


def cam_peak(cam: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the map's maximum (the first one in C order when several voxels tie)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(cam)), cam.shape))


def most_salient_slice(cam: np.ndarray) -> int:
    """Index along the last axis of the slice holding the map's maximum (0 for 2D maps)."""
    if cam.ndim < 3:
        return 0
    return cam_peak(cam)[-1]


def _display(plane: np.ndarray, orientation: str) -> np.ndarray:
    # RAS arrays shown in radiological view: patient right on the left, anterior at the top
    if orientation.upper().startswith("RA"):
        return plane[::-1, ::-1].T
    return plane.T


def save_cam(cam_dir: str | Path, case_id: str, image: torch.Tensor, cam: np.ndarray,
             affine: torch.Tensor | np.ndarray | None, title: str = "", orientation: str = "RAS",
             layer: str = "") -> tuple[Path, Path]:
    """Write ``<stem>.cam.nii.gz`` (map on the preprocessed grid) and ``<stem>.cam.png`` (three panels).

    The PNG shows the image slice through the map's maximum, the map over it (maximum marked with a cross)
    and the prediction (``title``), the layer and the slice, side by side.

    Args:
        cam_dir: output folder.
        case_id: the case's id (file names come from :func:`cam_stem`).
        image: the preprocessed image ``(C, *spatial)``.
        cam: the map, shape ``spatial``.
        affine: the preprocessed image's affine (4x4, or 3x3 for 2D).
        title: the prediction as text (e.g. ``"P-1: lesion 0.91"``).
        orientation: the run's orientation (for the PNG's view only).
        layer: the layer the map comes from (shown in the PNG).

    Returns:
        The NIfTI and PNG paths.
    """
    import nibabel as nib

    folder = Path(cam_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = cam_stem(case_id)
    nifti = folder / f"{stem}.cam.nii.gz"
    png = folder / f"{stem}.cam.png"
    with atomic_path(nifti) as tmp:
        nib.save(nib.Nifti1Image(cam.astype(np.float32), _affine4(affine, cam.ndim)), tmp)
    with atomic_path(png) as tmp:
        _draw_panels(image[0].detach().cpu().numpy(), cam, title, orientation, layer).savefig(
            tmp, bbox_inches="tight", format="png")
    return nifti, png


def _draw_panels(base: np.ndarray, cam: np.ndarray, title: str, orientation: str, layer: str) -> object:
    """The PNG's figure: image slice | map over the image, maximum marked | prediction and where the map comes from."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    peak = cam_peak(cam)
    k = peak[-1] if cam.ndim == 3 else 0
    plane, heat = (base[..., k], cam[..., k]) if cam.ndim == 3 else (base, cam)
    mark = np.zeros(heat.shape, dtype=bool)
    mark[peak[:2]] = True
    shown = _display(mark, orientation)
    row, col = (int(v[0]) for v in np.nonzero(shown))
    fig = Figure(figsize=(10.5, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.9]})
    where = f"slice {k} of {cam.shape[-1]} (map maximum)" if cam.ndim == 3 else "image"
    axes[0].imshow(_display(plane, orientation), cmap="gray")
    axes[0].set_title(f"image, {where}", fontsize=10)
    axes[1].imshow(_display(plane, orientation), cmap="gray")
    overlay = axes[1].imshow(_display(heat, orientation), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    axes[1].plot(col, row, "+", color="white", ms=14, mew=2.5)
    axes[1].set_title("class activation map (+ = maximum)", fontsize=10)
    fig.colorbar(overlay, ax=axes[1], fraction=0.046, pad=0.03)
    for ax in axes:
        ax.axis("off")
    lines = [*title.split(": ", 1), f"layer: {layer}" if layer else "", f"map maximum at voxel {peak}",
             "view: patient right on the left" if orientation.upper().startswith("RA") else ""]
    axes[2].text(0.0, 0.95, "\n".join(x for x in lines if x), va="top", ha="left", fontsize=11, wrap=True,
                 transform=axes[2].transAxes)
    axes[2].set_title("prediction", fontsize=10)
    return fig
