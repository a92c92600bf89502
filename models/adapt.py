"""Tensor adaptations that let pretrained weights start a model of another shape.

Two adaptations, each a pure function of one tensor:

* :func:`adapt_input_channels`: the stem kernel of an RGB (or any C-channel) model
  becomes a kernel for N input channels.
* :func:`inflate_kernel`: a 2D convolution kernel becomes a 3D one (I3D-style
  inflation), so ImageNet weights or a 2D run can start a 3D model.

BatchNorm and linear layers need no change between 2D and 3D and are copied as
they are by :func:`models.weights.load_pretrained`.
"""
from __future__ import annotations

import torch

from models.config import CHANNEL_MODES, INFLATE_MODES


def adapt_input_channels(weight: torch.Tensor, channels: int, mode: str = "sum") -> torch.Tensor:
    """Turn a stem kernel for C input channels into one for ``channels`` input channels.

    ``sum``: to 1 channel the C kernels are summed, so the new stem on ``x`` gives exactly
    what the old one gave on ``(x, x, x)``; to N channels the C kernels are repeated
    cyclically to N and scaled by C/N (so N a multiple of C keeps that equality).
    ``mean``: every new channel gets the mean of the C kernels (no rescaling), so the
    stem's response to a grey image is C times smaller than with ``sum``.

    Args:
        weight: kernel of shape ``(out, C, *kernel)``.
        channels: input channels wanted.
        mode: ``sum`` or ``mean``.

    Returns:
        The kernel of shape ``(out, channels, *kernel)``, same dtype.

    Raises:
        ValueError: ``mode`` is unknown or ``channels`` < 1.
    """
    if mode not in CHANNEL_MODES:
        raise ValueError(f"channel adaptation mode {mode!r} is unknown; allowed: {', '.join(CHANNEL_MODES)}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, found {channels}")
    source = weight.float()
    c = source.shape[1]
    if mode == "mean":
        result = source.mean(dim=1, keepdim=True).expand(-1, channels, *source.shape[2:]).clone()
    elif channels == 1:
        result = source.sum(dim=1, keepdim=True)
    else:
        repeats = -(-channels // c)
        result = source.repeat(1, repeats, *([1] * (source.ndim - 2)))[:, :channels] * (c / channels)
    return result.to(weight.dtype)


def describe_channel_adaptation(source_channels: int, channels: int, mode: str) -> str:
    """The report line of a stem adaptation, e.g. ``stem rgb->1 by sum``."""
    src = "rgb" if source_channels == 3 else str(source_channels)
    if mode == "mean":
        how = "mean of kernels"
    elif channels == 1:
        how = "sum"
    else:
        how = f"repeat and scale by {source_channels}/{channels}"
    return f"stem {src}->{channels} by {how}"


def inflate_kernel(weight: torch.Tensor, depth: int, mode: str = "mean") -> torch.Tensor:
    """Inflate a 2D convolution kernel ``(out, in, kh, kw)`` to 3D ``(out, in, depth, kh, kw)``.

    ``mean``: the 2D kernel repeated over depth and divided by ``depth``: on a volume whose
    slices all repeat one image, the 3D response equals the 2D one wherever the kernel
    does not reach past the volume's ends. ``centre``: the 2D kernel at the centre depth
    slice, zeros elsewhere: the 3D response equals the 2D one at every depth position.

    Args:
        weight: 2D kernel.
        depth: kernel depth of the 3D layer.
        mode: ``mean`` or ``centre``.

    Returns:
        The 3D kernel, same dtype.

    Raises:
        ValueError: ``weight`` is not a 4D tensor, ``depth`` < 1, or ``mode`` is unknown.
    """
    if mode not in INFLATE_MODES:
        raise ValueError(f"inflation mode {mode!r} is unknown; allowed: {', '.join(INFLATE_MODES)}")
    if weight.ndim != 4:
        raise ValueError(f"expected a 2D convolution kernel (out, in, kh, kw), found shape {tuple(weight.shape)}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, found {depth}")
    if mode == "mean":
        return (weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth).to(weight.dtype)
    result = torch.zeros(weight.shape[0], weight.shape[1], depth, *weight.shape[2:], dtype=weight.dtype)
    result[:, :, depth // 2] = weight
    return result
