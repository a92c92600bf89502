"""The one mixed-precision rule of training and inference, so a model is predicted in the precision it was trained in.

On CUDA, ``train.amp`` autocasts to bf16 where the card supports it, else fp16. On a CPU, ``train.cpu_bf16`` (with
``train.amp``) autocasts to bf16 and uses the channels-last layout, only where the CPU computes bf16 natively
(AVX512-BF16 or AMX): there a 2D ResNet-10 step at 64 px ran 1.8x faster than in fp32; elsewhere bf16 is emulated and
slower, so the run stays in fp32. MONAI's engines autocast for CUDA only, so on a CPU the network is wrapped in
:class:`CpuAutocast` instead.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.config import Config


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def amp_dtype(device: torch.device, cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype of mixed precision on ``device``; None: full precision.

    CUDA: bf16 where supported, else fp16. CPU: bf16 when ``cpu_bf16`` and the CPU has it natively.
    """
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16 and cpu_bf16_native() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def amp_settings(cfg: Config, device: torch.device) -> tuple[bool, dict[str, Any]]:
    """Whether AMP is on and its ``torch.autocast`` kwargs (see :func:`amp_dtype`)."""
    dtype = amp_dtype(device, cfg.train.cpu_bf16) if cfg.train.amp else None
    return (False, {}) if dtype is None else (True, {"dtype": dtype})


def cpu_autocast_kwargs(cfg: Config, device: torch.device) -> dict[str, Any] | None:
    """``torch.autocast`` kwargs of a CPU run that autocasts (:class:`CpuAutocast`, precise BN); None otherwise."""
    amp, kwargs = amp_settings(cfg, device)
    return {"device_type": "cpu", **kwargs} if amp and device.type == "cpu" else None


def uses_channels_last(cfg: Config, device: torch.device) -> bool:
    """Channels-last layout for a 2D model: on CUDA with ``train.channels_last``, on a CPU with bf16 autocast."""
    if cfg.transforms.spatial_dims != 2 or not cfg.train.channels_last:
        return False
    return device.type == "cuda" or cpu_autocast_kwargs(cfg, device) is not None


class CpuAutocast(nn.Module):
    """``module``'s forward under CPU autocast, its output back in float32 (losses and metrics stay fp32)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out
