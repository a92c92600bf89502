"""Diffusion series: the derived trace (isotropic) or ADC volume Philips appends to a DWI series.

Philips DWI series end with a volume computed from the others, with the same ImageType as the
diffusion volumes: a b-value above 0 and no gradient direction. dcm2niix removes it ("N volumes appear
to be ADC or trace images that will be removed"), and so does :func:`drop_derived_volumes`, with the
same rule and the same exceptions: a series that would keep fewer than two volumes keeps them all.
"""
from __future__ import annotations

import dataclasses

from transforms.dicom.geometry import Plane, SeriesInfo
from transforms.dicom.slice_header import SliceHeader

_ZERO = 1e-6


def _is_derived(h: SliceHeader) -> bool:
    """b > 0 and no gradient direction (absent or all zero): a trace or ADC image."""
    b = h.diffusion_b_value
    if b is None or b <= 0:
        return False
    return h.diffusion_gradient is None or all(abs(g) < _ZERO for g in h.diffusion_gradient)


def drop_derived_volumes(info: SeriesInfo) -> SeriesInfo:
    """``info`` without the time points that are Philips trace/ADC volumes (see the module docstring).

    Unchanged unless the series is Philips', has at least three time points, and at least two volumes
    remain after the drop.
    """
    if info.n_timepoints < 3 or "PHILIPS" not in info.header.manufacturer.upper():
        return info
    first_of: dict[int, Plane] = {}
    for plane in sorted(info.planes, key=lambda p: (p.t, p.z)):
        first_of.setdefault(plane.t, plane)
    headers = {h.path: h for h in info.headers}
    derived = {t for t, plane in first_of.items() if _is_derived(headers[plane.path])}
    kept = [t for t in range(info.n_timepoints) if t not in derived]
    if not derived or len(kept) < 2:
        return info
    new_t = {t: k for k, t in enumerate(kept)}
    planes = tuple(dataclasses.replace(p, t=new_t[p.t]) for p in info.planes if p.t in new_t)
    paths = {p.path for p in planes}
    n_t = len(kept)
    shape = info.shape[:3] + ((n_t,) if n_t > 1 else ())
    spacing = info.spacing[:3] + (info.spacing[3:4] if n_t > 1 else ())
    problem = (f"{len(derived)} volume(s) are derived trace/ADC images (b-value > 0 without a gradient "
               "direction) and were removed, as dcm2niix does")
    return dataclasses.replace(info, planes=planes, headers=tuple(h for h in info.headers if h.path in paths),
                               shape=shape, spacing=spacing, n_timepoints=n_t, problems=(*info.problems, problem))
