"""``radpipe preview``: a montage of what the model sees, before and after augmentation.

One column per case: the top row is the eval chain's output (no augmentation), the bottom
row the same case through the random part of the train chain. 3D inputs show their middle
axial slice (last spatial axis); several channels (multi-window, slabs, image columns) are
tiled in a grid (at most :data:`MAX_CHANNELS`, first channel top left). Tiles show the first
spatial axis left to right. The second runs bottom to top when the config reorients
(``transforms.orientation``, e.g. ``RAS``), so slices have anterior up and the patient's right on the viewer's
right; without reorientation (pictures, ``import-medmnist`` images: row 0 is the top row) it runs top to bottom,
so a picture looks as it does in an image viewer. Both rows of a case share one grey scale (the eval
image's range), so intensity augmentation is visible.

Titles name the case by its pseudonymised patient key (a patient column value that is not
already a radpipe key is pseudonymised here) or, without a patient column, by the image file
name, plus the label as written in the manifest. Patient names never appear.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.config import Config
from pipeline.errors import ManifestError
from pipeline.files import atomic_path
from pipeline.manifest.reading import load_manifest
from pipeline.pseudonym import Pseudonymiser
from transforms.chains import infer_chain, pipeline_error_in, random_part

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("radpipe")

TILE_PX = 160
ROW_PX = 200  # a tile plus room for its title
DPI = 100
MAX_CHANNELS = 4
_PATIENT_KEY = re.compile(r"^P-[0-9a-f]{16}$")


def figure_size_px(n_cases: int) -> tuple[int, int]:
    """The (width, height) in pixels of a preview of ``n_cases`` cases."""
    return n_cases * TILE_PX, 2 * ROW_PX


def _select_rows(df: pd.DataFrame, split: str, n: int, seed: int) -> pd.DataFrame:
    if split != "all" and "split" in df.columns:
        df = df[df["split"].str.lower() == split]
    if df.empty:
        raise ManifestError(
            f"manifest {df.attrs.get('manifest', '')} has no rows in split '{split}'; choose another --split "
            "(train, val, test or all)"
        )
    if len(df) > n:
        rows = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
        df = df.iloc[rows]
    return df


def _case_names(df: pd.DataFrame, cfg: Config) -> list[str]:
    column = cfg.data.patient_column if cfg.data.patient_column in df.columns else None
    if column is None and "patient_key" in df.columns:
        column = "patient_key"
    if column is None:
        first = cfg.data.image_columns[0]
        return [Path(str(v)).name for v in df[first]]
    pseudonymiser: Pseudonymiser | None = None
    names = []
    for value in df[column].astype(str):
        if not _PATIENT_KEY.match(value):
            pseudonymiser = pseudonymiser or Pseudonymiser()
            value = pseudonymiser.key(value, "patient")
        names.append(value)
    return names


def _label_text(row: pd.Series, cfg: Config) -> str:
    cols = [c for c in cfg.data.label_columns if c in row.index]
    if len(cols) == 1:
        return str(row[cols[0]])
    return " ".join(f"{c}={row[c]}" for c in cols)


def _tile(img: Any, y_up: bool = True) -> np.ndarray:
    """A 2D array to draw from a channel-first 2D or 3D image (``y_up``: drawn with ``origin="lower"``)."""
    a = np.asarray(img.detach().cpu().float() if hasattr(img, "detach") else img, dtype=np.float32)
    if a.ndim == 4:
        a = a[..., a.shape[-1] // 2]
    channels = [a[c].T for c in range(min(a.shape[0], MAX_CHANNELS))]
    if len(channels) == 1:
        return channels[0]
    per_row = math.ceil(math.sqrt(len(channels)))
    h, w = channels[0].shape
    rows = math.ceil(len(channels) / per_row)
    grid = np.full((rows * (h + 1) - 1, per_row * (w + 1) - 1), np.nan, np.float32)
    for k, c in enumerate(channels):
        first = (rows - 1 - k // per_row if y_up else k // per_row) * (h + 1)  # channel 0 at the top left
        left = (k % per_row) * (w + 1)
        grid[first : first + h, left : left + w] = c
    return grid


def _one(sample: Any) -> dict[str, Any]:
    """A chain output as one sample: the middle one when ``slice_mode: all`` gave a list."""
    if isinstance(sample, list):
        return sample[len(sample) // 2]
    return sample


def write_preview(cfg: Config, manifest: str | Path, out: str | Path, n: int = 16, split: str = "train",
                  seed: int = 0) -> Path:
    """Write the preview PNG of up to ``n`` cases of ``split`` (``all``: every row).

    Args:
        cfg: the run configuration (its chains are previewed).
        manifest: CSV manifest; relative image paths resolve against its folder.
        out: PNG path to write.
        n: number of cases (drawn with ``seed`` when the split has more).
        split: manifest split, or ``all``.
        seed: seed of the case draw and of the augmentation.

    Returns:
        The written path.

    Raises:
        ManifestError: no rows in the split.
        PipelineError: an image cannot be read or does not fit the config (the first one met).
    """
    df = _select_rows(load_manifest(manifest, cfg.data), split, n, seed)
    names, cols = _case_names(df, cfg), list(cfg.data.image_columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ManifestError(
            f"manifest {manifest} has no column {missing}; its image columns are set by data.image_columns "
            f"({list(cols)}); rename the columns or fix the config"
        )
    before_chain, after_chain = infer_chain(cfg.transforms, cfg.data.image_columns), random_part(cfg.transforms, device="cpu")
    after_chain.set_random_state(seed=seed)
    y_up = bool(cfg.transforms.orientation)
    width, height = figure_size_px(len(df))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    for i, (name, (_, row)) in enumerate(zip(names, df.iterrows())):
        try:
            before = _one(before_chain({c: row[c] for c in cols}))
            after = _one(after_chain({**before, "image": before["image"].clone()}))
        except RuntimeError as e:
            cause = pipeline_error_in(e)
            if cause is None:
                raise
            raise type(cause)(f"manifest row {row.get('row', i)}: {cause}") from e
        tiles = _tile(before["image"], y_up), _tile(after["image"], y_up)
        low, high = float(np.nanmin(tiles[0])), float(np.nanmax(tiles[0]))
        for r, tile in enumerate(tiles):
            ax = fig.add_axes((i / len(df), (1 - r) / 2, 1 / len(df), TILE_PX / height))
            ax.imshow(tile, cmap="gray", vmin=low, vmax=high if high > low else low + 1,
                      origin="lower" if y_up else "upper")
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{name}\n{_label_text(row, cfg)}" if r == 0 else "augmented"
            ax.set_title(title, fontsize=7)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return Path(out)
