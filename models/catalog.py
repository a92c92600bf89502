"""``radpipe models``: the backbone registry as a table (or JSON).

Imports neither torch nor MONAI: the registry is plain data until a model is built.
"""
from __future__ import annotations

import argparse
import json

from models.registry import list_models
from models.sources import WEIGHT_SUFFIXES, weights_dir

SOURCE_HELP = (
    "weight sources (model.pretrained): torchvision:PATH|NAME (ImageNet, 2D; inflated for 3D), "
    "medicalnet:PATH|NAME (3D), bundle:DIR (MONAI bundle), run:RUN_DIR (a radpipe run), "
    f"file:PATH or a path ending in {'/'.join(WEIGHT_SUFFIXES)} (state dict of the model)"
)


def format_table(rows: list[list[str]]) -> str:
    """Rows of cells as a left-aligned text table, the first row as header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def models_command(args: argparse.Namespace) -> int:
    """Print every registered backbone: name, 2D/3D, weight sources, notes."""
    infos = list_models()
    if getattr(args, "json", False):
        print(json.dumps([{"name": i.name, "dims": list(i.dims), "sources": list(i.sources), "notes": i.notes}
                          for i in infos], indent=2))
        return 0
    rows = [["name", "dims", "weight sources", "notes"]]
    rows += [[i.name, "/".join(f"{d}D" for d in i.dims), ", ".join(i.sources), i.notes] for i in infos]
    print(format_table(rows))
    print()
    print(SOURCE_HELP)
    print(f"weights cache (for torchvision:NAME, medicalnet:NAME): {weights_dir()}")
    return 0
