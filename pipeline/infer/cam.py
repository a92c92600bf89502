"""Grad-CAM heat maps of predictions, saved as NIfTI and as a PNG overlay.

Maps are computed with MONAI's :class:`monai.visualize.GradCAM` on the model's ``cam_layer``
(the last convolutional stage), for the predicted class (binary: the positive class), one case
at a time (MONAI's batched class index is per batch, not per case), in float32.

Grid: a map lies on the **preprocessed image grid**, the voxels the model saw (after the run's
orientation, spacing, crop and resize), upsampled from the layer's resolution with linear
interpolation and scaled to [0, 1]. The NIfTI file has that grid's shape and the preprocessed
image's affine (world coordinates in mm, RAS as MONAI keeps it), so world-aware viewers (3D
Slicer, ITK-SNAP, FSLeyes) overlay it on the original scan. The PNG shows the most salient slice
(the slice along the last axis with the largest map sum; the image itself for 2D models) of the
preprocessed image's first channel with the map on top.
"""
from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import RunError
from pipeline.files import atomic_path


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch to [0, 1] (a constant map becomes zeros)."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    high = flat.max(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    span = high - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


def cam_layer_of(model: nn.Module) -> str:
    """The layer Grad-CAM hooks: the model's ``cam_layer`` attribute, checked to exist.

    Raises:
        RunError: the model names no layer, or a layer it does not have.
    """
    layer = getattr(model, "cam_layer", None)
    names = dict(model.named_modules())
    if not layer or layer not in names:
        convs = [n for n, m in names.items() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        raise RunError(
            f"the model's cam_layer is {layer!r}, which is not one of its layers; expected the name of its last "
            f"convolutional stage (last convolution found: {convs[-1] if convs else 'none'})"
        )
    return str(layer)


class CamMaker:
    """Computes Grad-CAM maps with a private copy of the model (hooks never touch the inference model).

    Args:
        model: the trained network.
        device: where to compute.
        layer: layer name; default :func:`cam_layer_of`.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", layer: str | None = None) -> None:
        from monai.visualize import GradCAM

        self.device = torch.device(device)
        self.layer = layer or cam_layer_of(model)
        self.model = copy.deepcopy(model).float().to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self._cam = GradCAM(nn_module=self.model, target_layers=self.layer, postprocessing=_unit_range)

    def __call__(self, image: torch.Tensor, class_index: int) -> np.ndarray:
        """The map of one preprocessed image ``(C, *spatial)`` for output ``class_index``: shape ``spatial``."""
        x = image.detach().float().unsqueeze(0).to(self.device).requires_grad_(True)
        with torch.enable_grad():
            cam = self._cam(x, class_idx=int(class_index))
        return cam[0, 0].detach().cpu().numpy().astype(np.float32)


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


def most_salient_slice(cam: np.ndarray) -> int:
    """Index along the last axis of the slice with the largest map sum (0 for 2D maps)."""
    if cam.ndim < 3:
        return 0
    return int(np.argmax(cam.reshape(-1, cam.shape[-1]).sum(axis=0)))


def _display(plane: np.ndarray, orientation: str) -> np.ndarray:
    # RAS arrays shown in radiological view: patient right on the left, anterior at the top
    if orientation.upper().startswith("RA"):
        return plane[::-1, ::-1].T
    return plane.T


def save_cam(cam_dir: str | Path, case_id: str, image: torch.Tensor, cam: np.ndarray,
             affine: torch.Tensor | np.ndarray | None, title: str = "", orientation: str = "RAS") -> tuple[Path, Path]:
    """Write ``<stem>.cam.nii.gz`` (map on the preprocessed grid) and ``<stem>.cam.png`` (overlay).

    Args:
        cam_dir: output folder.
        case_id: the case's id (file names come from :func:`cam_stem`).
        image: the preprocessed image ``(C, *spatial)``.
        cam: the map, shape ``spatial``.
        affine: the preprocessed image's affine (4x4, or 3x3 for 2D).
        title: PNG title (e.g. the prediction).
        orientation: the run's orientation (for the PNG's view only).

    Returns:
        The NIfTI and PNG paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    folder = Path(cam_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = cam_stem(case_id)
    nifti = folder / f"{stem}.cam.nii.gz"
    png = folder / f"{stem}.cam.png"
    with atomic_path(nifti) as tmp:
        nib.save(nib.Nifti1Image(cam.astype(np.float32), _affine4(affine, cam.ndim)), tmp)
    base = image[0].detach().cpu().numpy()
    k = most_salient_slice(cam)
    plane, heat = (base[..., k], cam[..., k]) if cam.ndim == 3 else (base, cam)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(_display(plane, orientation), cmap="gray")
    ax.imshow(_display(heat, orientation), cmap="jet", alpha=0.35, vmin=0.0, vmax=1.0)
    ax.set_title((title + (f"  slice {k}" if cam.ndim == 3 else "")).strip(), fontsize=8)
    ax.axis("off")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="png")
    plt.close(fig)
    return nifti, png
