"""The one mixed-precision rule of training and inference, so a model is predicted in the precision it was trained in."""
from __future__ import annotations

from typing import Any

import torch

from pipeline.config import Config


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mixed precision on ``device``: bf16 where supported, else fp16; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def amp_settings(cfg: Config, device: torch.device) -> tuple[bool, dict[str, Any]]:
    """Whether AMP is on and its ``torch.autocast`` kwargs (see :func:`amp_dtype`)."""
    dtype = amp_dtype(device) if cfg.train.amp else None
    return (False, {}) if dtype is None else (True, {"dtype": dtype})
