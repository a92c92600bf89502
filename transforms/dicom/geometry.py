"""Slice geometry: how the planes of one volume become a regular (x, y, z[, t]) grid.

:func:`stack_planes` sorts planes by their position projected on the slice normal, clusters equal
positions, tells time points apart (temporal position, trigger time, acquisition number or time,
instance number, in that order), derives the slice step from the positions themselves, fills gaps of
whole missing slices, and keeps a gantry tilt as a sheared step. :class:`SeriesInfo` is the result.
Geometry is kept in DICOM patient space (LPS); :attr:`SeriesInfo.affine` is the RAS affine MONAI and
nibabel use.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from transforms.dicom.slice_header import SliceHeader
from transforms.limits import gap_fill_problem

POSITION_TOLERANCE_MM = 0.01  # positions closer than this along the normal are the same slice
OBLIQUE_DEGREES = 5.0  # slice normal further than this from every axis: "oblique"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_LEVELS = {"info": 0, "warning": 1, "error": 2}
_STATUS = {0: "ok", 1: "warning", 2: "error"}


@dataclass(frozen=True)
class Plane:
    """One 2D image of a series and where it goes: ``frame`` is the frame index in a multi-frame
    file (``None`` for single-frame files); ``z``/``t`` its slice and time index in the volume.
    A Siemens mosaic plane holds a whole volume (``z`` is 0)."""

    path: str
    frame: int | None
    z: int
    t: int


@dataclass(frozen=True)
class SeriesInfo:
    """One volume (3D, 4D, or a 2D projection image) assembled from DICOM headers.

    ``shape`` and ``spacing`` are in array order x (columns), y (rows), z (slices) [, t]; ``spacing``
    holds mm, plus seconds for t. ``origin``, ``row_cosines`` (direction of increasing x),
    ``column_cosines`` (increasing y) and ``slice_step`` (mm vector from one z to the next, sheared
    under gantry tilt) are in DICOM LPS. ``status`` is ``"ok"``, ``"warning"`` (loadable, see
    ``problems``) or ``"error"`` (refused by the loader).
    """

    uid: str
    series_uid: str
    kind: str  # "slices", "multiframe", "mosaic" or "single2d"
    planes: tuple[Plane, ...]
    headers: tuple[SliceHeader, ...]
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, float, float]
    row_cosines: tuple[float, float, float]
    column_cosines: tuple[float, float, float]
    slice_step: tuple[float, float, float]
    orientation_label: str
    obliquity_deg: float
    n_slices: int
    n_timepoints: int
    temporal_spacing: float | None
    problems: tuple[str, ...]
    status: str
    filled_slices: tuple[int, ...] = field(default=())

    @property
    def header(self) -> SliceHeader:
        """The header of the first file (series-level fields: modality, description, ...)."""
        return self.headers[0]

    @property
    def files(self) -> tuple[str, ...]:
        """Distinct file paths, in volume order."""
        return tuple(dict.fromkeys(p.path for p in self.planes))

    @property
    def modality(self) -> str:
        """Modality of the first file (``CT``, ``MR``, ...)."""
        return self.header.modality

    @property
    def description(self) -> str:
        """SeriesDescription of the first file."""
        return self.header.series_description

    @property
    def series_number(self) -> int | None:
        """SeriesNumber of the first file."""
        return self.header.series_number

    @property
    def study_uid(self) -> str:
        """StudyInstanceUID of the first file."""
        return self.header.study_uid

    @property
    def is_4d(self) -> bool:
        """True when the volume has more than one time point."""
        return self.n_timepoints > 1

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 voxel (x, y, z) -> DICOM patient (LPS) mm."""
        aff = np.eye(4)
        aff[:3, 0] = np.asarray(self.row_cosines) * self.spacing[0]
        aff[:3, 1] = np.asarray(self.column_cosines) * self.spacing[1]
        aff[:3, 2] = self.slice_step
        aff[:3, 3] = self.origin
        return aff

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel (x, y, z) -> RAS mm, the convention of nibabel and MONAI."""
        return LPS_TO_RAS @ self.affine_lps


@dataclass(frozen=True)
class SliceItem:
    """A plane candidate: one single-frame file or one frame of a multi-frame file."""

    header: SliceHeader
    frame: int | None
    position: Sequence[float]  # ImagePositionPatient (LPS mm)
    temporal: int | None
    trigger: float | None
    acquisition: int | None
    time_s: float | None
    instance: int


class Problems:
    """Problems found while assembling, each with a level (info, warning, error) that sets the status."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []

    def add(self, level: str, text: str) -> None:
        """Record ``text`` at ``level`` (``"info"``, ``"warning"`` or ``"error"``)."""
        self.items.append((_LEVELS[level], text))

    def extend(self, other: Problems) -> None:
        """Record every problem of ``other`` too."""
        self.items.extend(other.items)

    def status(self) -> str:
        """``"ok"``, ``"warning"`` or ``"error"``: the name of the highest level recorded."""
        return _STATUS[max((lvl for lvl, _ in self.items), default=0)]

    def texts(self) -> tuple[str, ...]:
        """The texts of the problems, in the order recorded."""
        return tuple(text for _, text in self.items)


def dicom_seconds(dicom_time: str) -> float | None:
    """Seconds since midnight of a DICOM TM value (``HHMMSS.ffffff``), or None when unparsable."""
    text = dicom_time.strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hours, minutes = int(text[0:2]), int(text[2:4] or 0)
        return hours * 3600 + minutes * 60 + float(text[4:] or 0)
    except ValueError:
        return None


def median(values: np.ndarray) -> float:
    """``np.median`` of finite values, without its import of ``numpy.ma`` (7 ms in every scanning process)."""
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    m = len(ordered) // 2
    return float(ordered[m]) if len(ordered) % 2 else float((ordered[m - 1] + ordered[m]) / 2)


def unit(v: Sequence[float]) -> np.ndarray:
    """``v`` scaled to length 1 (unchanged when zero)."""
    v = np.asarray(v, dtype=float)
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def orientation_label(normal: Sequence[float]) -> tuple[str, float]:
    """Name the plane of a slice normal (LPS): ``axial``/``coronal``/``sagittal`` or ``oblique``.

    Returns:
        The label and the angle (degrees) between the normal and the nearest patient axis.
    """
    n = np.abs(unit(normal))
    axis = int(np.argmax(n))
    angle = float(np.degrees(np.arccos(np.clip(n[axis], -1.0, 1.0))))
    if angle > OBLIQUE_DEGREES:
        return "oblique", angle
    return ("sagittal", "coronal", "axial")[axis], angle


def series_uid_with(series_uid: str, tokens: Sequence[str]) -> str:
    """The uid of one volume of a split series: ``<SeriesInstanceUID>_<token>_<token>``."""
    return "_".join([series_uid, *tokens]) if tokens else series_uid


def _time_index(items: list[SliceItem], cluster: np.ndarray, k: int, problems: Problems) -> np.ndarray | None:
    """Rank of each item among those at its position, by the first key that tells them apart."""
    keys = [("TemporalPositionIdentifier", lambda it: it.temporal), ("TriggerTime", lambda it: it.trigger),
            ("AcquisitionNumber", lambda it: it.acquisition), ("AcquisitionTime", lambda it: it.time_s),
            ("InstanceNumber", lambda it: it.instance)]
    for name, get in keys:
        values = [get(it) for it in items]
        if any(v is None for v in values):
            continue
        by_pos: dict[int, list[float]] = defaultdict(list)
        for c, v in zip(cluster, values):
            by_pos[int(c)].append(v)
        if all(len(set(vs)) == k for vs in by_pos.values()):
            ranks = np.empty(len(items), dtype=int)
            for c in by_pos:
                idx = np.flatnonzero(cluster == c)
                order = sorted(idx, key=lambda i: values[i])
                ranks[order] = np.arange(k)
            if name == "AcquisitionTime":
                problems.add("info", f"{k} images at every position without temporal or acquisition ids; "
                                     f"taken as {k} time points ordered by AcquisitionTime")
            elif name == "InstanceNumber":
                regular = _numbered_regularly(values, cluster, ranks)
                problems.add("info" if regular else "warning",
                             f"{k} images at every position without temporal or acquisition ids; taken as {k} "
                             "time points ordered by InstanceNumber"
                             + (f" ({regular})" if regular else
                                " (the numbers follow no regular pattern: check the time order)"))
            return ranks
    return None


def _numbered_regularly(numbers: list[int], cluster: np.ndarray, ranks: np.ndarray) -> str:
    """How InstanceNumbers run through a 4D series, when they follow one of the two patterns scanners
    write (GE's slice-based fMRI and DWI among them): every time point before the next (volume after
    volume), or every time point of a slice before the next slice. ``""`` when neither."""
    order = np.argsort(np.asarray(numbers), kind="stable")
    n_z = int(cluster.max()) + 1
    k = len(numbers) // n_z
    by_volume = ranks[order].reshape(k, n_z)
    if (by_volume == np.arange(k)[:, None]).all():
        return "numbered volume after volume"
    by_slice = cluster[order].reshape(n_z, k)
    if (by_slice == by_slice[:, :1]).all():
        return "numbered slice after slice"
    return ""


def stack_planes(series_uid: str, tokens: tuple[str, ...], items: list[SliceItem], cos: np.ndarray, kind: str,
                 common: Problems) -> list[SeriesInfo]:
    """Arrange the planes of one volume (same orientation and matrix) into a z[, t] grid.

    Args:
        series_uid, tokens: SeriesInstanceUID and split tokens so far (acquisitions may add one).
        items: the planes, any order.
        cos: the six direction cosines they share.
        kind: ``"slices"`` or ``"multiframe"``.
        common: problems found before (copied into every result).

    Returns:
        One series, or one per acquisition when acquisitions cover different positions.
    """
    problems = Problems()
    problems.extend(common)
    row, col = unit(cos[:3]), unit(cos[3:])
    normal = unit(np.cross(row, col))
    positions = np.array([it.position for it in items], dtype=float)
    dist = positions @ normal
    cluster, counts = _cluster_positions(dist)
    k = int(counts.max())
    t_index = np.zeros(len(items), dtype=int)
    keep = np.ones(len(items), dtype=bool)
    if k > 1:
        ranks = _time_index(items, cluster, k, problems) if (counts == k).all() else None
        if ranks is not None:
            t_index = ranks
        else:
            split = _split_acquisitions(series_uid, tokens, items, dist, cos, kind, common)
            if split is not None:
                return split
            problems.add("error", f"duplicate slice positions: {int((counts > 1).sum())} of {len(counts)} "
                                  f"positions hold more than one image (up to {k}) and no temporal/acquisition "
                                  "ids separate them evenly; the series cannot be assembled")
            keep = np.zeros(len(items), dtype=bool)
            keep[np.unique(cluster, return_index=True)[1]] = True
    n_t = int(t_index[keep].max()) + 1
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, cluster, positions)  # in item order, as a per-cluster mean would add them
    centres = sums / counts[:, None]
    ref = items[0].header
    z_of, n_z, step, filled = _slice_grid(centres, normal, ref, problems)
    planes, headers = _place_planes(items, z_of[cluster], t_index, keep, n_t, problems)
    temporal = temporal_spacing(items, t_index, keep, n_t, ref)
    shape = (ref.cols, ref.rows, n_z) + ((n_t,) if n_t > 1 else ())
    return [series_info(series_uid, tokens, kind, planes, headers, shape,
                        ref, centres[0], row, col, step, normal, n_z, n_t, temporal, problems, filled)]


def _cluster_positions(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position cluster of each plane (distances along the normal within :data:`POSITION_TOLERANCE_MM` of
    their neighbour), numbered along the normal, and the number of planes in each cluster."""
    order = np.argsort(dist, kind="stable")
    sorted_cluster = np.concatenate([[0], np.cumsum(np.diff(dist[order]) > POSITION_TOLERANCE_MM)])
    cluster = np.empty(len(dist), dtype=int)
    cluster[order] = sorted_cluster
    return cluster, np.bincount(cluster)


def _split_acquisitions(series_uid: str, tokens: tuple[str, ...], items: list[SliceItem], dist: np.ndarray,
                        cos: np.ndarray, kind: str, common: Problems) -> list[SeriesInfo] | None:
    """One volume per acquisition (see :func:`stack_planes`) when positions repeat only across acquisitions;
    ``None`` when some plane lacks an AcquisitionNumber, or an acquisition repeats a position itself."""
    acquisitions = {it.acquisition for it in items}
    if len(acquisitions) < 2 or None in acquisitions:
        return None
    split_ok = all(len({round(float(d) / POSITION_TOLERANCE_MM) for d, it in zip(dist, items)
                        if it.acquisition == a}) == sum(it.acquisition == a for it in items)
                   for a in acquisitions)
    if not split_ok:
        return None
    note = Problems()
    note.extend(common)
    note.add("info", f"positions repeat across {len(acquisitions)} acquisitions covering "
                     "different positions; split by AcquisitionNumber")
    out = []
    for a in sorted(acquisitions):
        sub = [it for it in items if it.acquisition == a]
        out.extend(stack_planes(series_uid, tokens + (f"a{a}",), sub, cos, kind, note))
    return out


def _slice_grid(centres: np.ndarray, normal: np.ndarray, ref: SliceHeader,
                problems: Problems) -> tuple[np.ndarray, int, np.ndarray, list[int]]:
    """Place the position clusters' ``centres`` (in order along ``normal``) on a regular z grid.

    Returns:
        ``(z_of, n_z, step, filled)``: the z index of each cluster, the number of slices, the vector
        from one slice to the next (sheared under gantry tilt) and the z indices of missing slices.
    """
    d = centres @ normal
    filled: list[int] = []
    if len(centres) == 1:
        return np.array([0]), 1, normal * (ref.spacing_between_slices or ref.slice_thickness or 1.0), filled
    gaps = np.diff(d)
    typical = median(gaps)
    steps = np.maximum(np.rint(gaps / typical), 1)  # float: a wild position must not overflow the sum below
    mult = steps.astype(int)
    integral = np.abs(gaps - mult * typical) <= max(POSITION_TOLERANCE_MM, 0.02 * typical)
    refused = integral.all() and gap_fill_problem(len(d), float(steps.sum()) + 1, ref.rows * ref.cols,
                                                  f"{d[0]:.2f} to {d[-1]:.2f} mm")
    if refused:  # a wild position: filling its gap would allocate without bound (a memory bomb)
        z_of = np.arange(len(centres))
        problems.add("error", refused)
    elif integral.all():
        z_of = np.concatenate([[0], np.cumsum(mult)])
        if (mult > 1).any():
            filled = sorted(set(range(int(z_of[-1]) + 1)) - set(z_of.tolist()))
            where = ", ".join(f"{d[i]:.2f}-{d[i + 1]:.2f} mm" for i in np.flatnonzero(mult > 1)[:5])
            problems.add("warning", f"{len(filled)} missing slice(s) (gaps at {where} along the normal, "
                                    f"spacing {typical:.3g} mm); filled with the minimum value so every "
                                    "other voxel keeps its true position")
    else:
        z_of = np.arange(len(centres))
        problems.add("warning", f"non-uniform slice spacing: {gaps.min():.3g} to {gaps.max():.3g} mm "
                                f"(median {typical:.3g}); the affine uses the mean spacing, so positions "
                                "of inner slices are approximate")
    n_z = int(z_of[-1]) + 1
    step = (centres[-1] - centres[0]) / (n_z - 1)
    off_line = np.linalg.norm(centres - (centres[0] + np.outer(z_of, step)), axis=1).max()
    if off_line > 0.1:
        problems.add("warning", f"slice positions are not on a straight line (up to {off_line:.2f} mm off)")
    along = float(step @ normal)
    lateral = float(np.linalg.norm(step - along * normal))
    tilt = float(np.degrees(np.arctan2(lateral, along)))
    if tilt > 0.01:
        problems.add("warning", f"gantry tilt {tilt:.2f} degrees (GantryDetectorTilt {ref.gantry_tilt:g}): "
                                "slices are sheared; the affine is non-orthogonal and keeps every voxel's "
                                "true position (resample, e.g. Spacingd, before assuming a square grid)")
    return z_of, n_z, step, filled


def _place_planes(items: list[SliceItem], z_index: np.ndarray, t_index: np.ndarray, keep: np.ndarray, n_t: int,
                  problems: Problems) -> tuple[list[Plane], tuple[SliceHeader, ...]]:
    """The kept planes in volume order (t, then z) and the headers of their files, in that order;
    time points holding different numbers of slices are reported as an error."""
    planes = [Plane(it.header.path, it.frame, z, t)
              for it, z, t, k in zip(items, z_index.tolist(), t_index.tolist(), keep.tolist()) if k]
    planes.sort(key=lambda p: (p.t, p.z))
    if n_t > 1:
        per_t = np.bincount([p.t for p in planes], minlength=n_t)
        if len(set(per_t.tolist())) > 1:
            problems.add("error", f"incomplete time series: time points hold {per_t.min()} to {per_t.max()} slices")
    seen = dict.fromkeys(p.path for p in planes)
    by_path = {it.header.path: it.header for it in items}
    return planes, tuple(by_path[p] for p in seen)


def temporal_spacing(items: list[SliceItem], t_index: np.ndarray, keep: np.ndarray, n_t: int,
                     ref: SliceHeader) -> float | None:
    """Seconds between time points: from acquisition times when regular, else RepetitionTime."""
    if n_t < 2:
        return None
    times = [it.time_s for it, k in zip(items, keep) if k]
    if None not in times:
        ts = np.asarray(times, dtype=float)
        t_kept = t_index[keep]
        per_t = np.array([ts[t_kept == t].min() for t in range(n_t)])
        diffs = np.diff(per_t)
        if (diffs > 0).all() and np.ptp(diffs) <= 0.05 * median(diffs) + 1e-3:
            return median(diffs)
    return ref.repetition_time / 1000.0 if ref.repetition_time else None


def _check_grid(shape: tuple[int, ...], spacing: tuple[float, ...], problems: Problems) -> None:
    """Refuse a volume with no voxels along an axis, or a spacing that is zero, negative or not a number."""
    if min(shape) < 1:
        problems.add("error", f"degenerate volume {'x'.join(map(str, shape))}: an axis holds no voxels "
                              "(Rows, Columns or the mosaic's tiles); the header is damaged")
    names = ("PixelSpacing (columns)", "PixelSpacing (rows)", "slice spacing (positions)")
    for name, value in zip(names, spacing):
        if not np.isfinite(value) or value <= 0:
            problems.add("error", f"{name} is {value:g}: a spacing must be a positive number; the header is damaged")


def series_info(series_uid: str, tokens: tuple[str, ...], kind: str, planes: list[Plane],
                headers: tuple[SliceHeader, ...], shape: tuple[int, ...], ref: SliceHeader, origin: np.ndarray,
                row: np.ndarray, col: np.ndarray, step: np.ndarray, normal: np.ndarray, n_z: int, n_t: int,
                temporal: float | None, problems: Problems, filled: list[int]) -> SeriesInfo:
    """Build the :class:`SeriesInfo` of an arranged volume (spacing, label and status derived here)."""
    row_sp, col_sp = ref.pixel_spacing or (1.0, 1.0)
    if ref.pixel_spacing is None:
        problems.add("warning", "no PixelSpacing; 1 mm assumed")
    spacing = (float(col_sp), float(row_sp), float(np.linalg.norm(step)))
    if n_t > 1:
        spacing += (float(temporal) if temporal else 1.0,)
    _check_grid(shape, spacing[:3] if kind != "single2d" else spacing[:2], problems)
    label, angle = orientation_label(normal)
    return SeriesInfo(
        uid=series_uid_with(series_uid, tokens), series_uid=series_uid, kind=kind, planes=tuple(planes),
        headers=headers,
        shape=shape, spacing=spacing, origin=tuple(float(v) for v in origin), row_cosines=tuple(float(v) for v in row),
        column_cosines=tuple(float(v) for v in col), slice_step=tuple(float(v) for v in step),
        orientation_label=label, obliquity_deg=round(angle, 3), n_slices=n_z, n_timepoints=n_t,
        temporal_spacing=temporal, problems=problems.texts(), status=problems.status(), filled_slices=tuple(filled))


