"""Enhanced and legacy multi-frame files: the volumes one file holds, and files that are time points of one volume.

:func:`multiframe_file` assembles one file (frames split by orientation and echo when they vary, stacked
by their per-frame positions, or evenly spaced along the normal for legacy files without them).
:func:`stack_multiframe_files` stacks several files of one series that each hold the same single volume
(newer Siemens (XA) scanners write an fMRI or DWI run as one enhanced file per time point) into 4D.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from transforms.dicom.geometry import (
    POSITION_TOLERANCE_MM,
    Problems,
    SeriesInfo,
    SliceItem,
    dicom_seconds,
    stack_planes,
    unit,
)
from transforms.dicom.slice_header import SliceHeader

ORIENTATION_TOLERANCE = 1e-3  # max abs difference of direction cosines within one volume
# Modalities whose images are projections or photographs: their frames are never slices of a volume.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "US", "IO", "PX", "ES", "XC", "OP", "SM"})


def cluster_orientations(cosines: list[tuple[float, ...]]) -> list[int]:
    """Orientation cluster of each plane (cosines within :data:`ORIENTATION_TOLERANCE` of a cluster's first)."""
    reps: list[np.ndarray] = []
    of_value: dict[tuple[float, ...], int] = {}
    for cos in dict.fromkeys(cosines):  # distinct values, in order of appearance: few per series
        c = np.asarray(cos)
        for k, rep in enumerate(reps):
            if np.max(np.abs(rep - c)) <= ORIENTATION_TOLERANCE:
                of_value[cos] = k
                break
        else:
            reps.append(c)
            of_value[cos] = len(reps) - 1
    return [of_value[cos] for cos in cosines]


def _frame_geometry(h: SliceHeader, problems: Problems) -> tuple[np.ndarray, np.ndarray] | None:
    """Where each frame of a file with one orientation and one echo lies: (positions (frames, 3), cosines).

    Frames without per-frame positions are evenly spaced along the normal (legacy multi-frame, RT Dose
    offsets); ``None`` for a file whose frames vary in orientation or echo (assembled on its own).
    """
    if h.frames and all(f.position is not None and (f.orientation or h.orientation) for f in h.frames):
        orients = [f.orientation or h.orientation for f in h.frames]
        if len(set(cluster_orientations(orients))) > 1 or len({f.echo_time for f in h.frames}) > 1:
            return None
        return np.array([f.position for f in h.frames], dtype=float), np.asarray(orients[0], dtype=float)
    if h.orientation is None or h.position is None:
        cos, position = np.array([1.0, 0, 0, 0, 1.0, 0]), np.zeros(3)
        if h.modality.strip().upper() in PROJECTION_MODALITIES:
            problems.add("error", f"multi-frame {h.modality.strip().upper()} image ({h.number_of_frames} frames, no "
                                  "ImagePositionPatient/ImageOrientationPatient): its frames are views or a cine, not "
                                  "slices of a volume; export the frame you need as a single-frame image")
        else:
            problems.add("warning", "multi-frame image without position/orientation; frames stacked as slices "
                                    "in an identity frame")
    else:
        cos, position = np.asarray(h.orientation, dtype=float), np.asarray(h.position, dtype=float)
    normal = np.cross(unit(cos[:3]), unit(cos[3:]))
    if h.frame_offsets is not None:  # RT Dose: GridFrameOffsetVector, offsets along the normal
        offsets = np.asarray(h.frame_offsets, dtype=float)
    else:
        spacing = h.spacing_between_slices or h.slice_thickness or 1.0
        offsets = np.arange(h.number_of_frames) * spacing
        problems.add("warning", f"multi-frame image without per-frame positions; frames taken as slices "
                                f"{spacing:g} mm apart (SpacingBetweenSlices/SliceThickness)")
    return position + offsets[:, None] * normal, cos


def stack_multiframe_files(series_uid: str, tokens: tuple[str, ...], headers: list[SliceHeader],
                           common: Problems) -> list[SeriesInfo] | None:
    """One 4D volume from multi-frame files that each hold the same single volume (same frame positions and
    orientation, no position repeated within a file), ordered by AcquisitionNumber, AcquisitionTime and
    InstanceNumber; ``None`` when the files are not such a set (each is then assembled on its own)."""
    if len(headers) < 2:
        return None
    problems = Problems()
    problems.extend(common)
    geometry = [_frame_geometry(h, Problems() if k else problems) for k, h in enumerate(headers)]
    if any(g is None for g in geometry):
        return None
    positions, cos = geometry[0]
    steps = np.round(positions @ np.cross(unit(cos[:3]), unit(cos[3:])) / POSITION_TOLERANCE_MM)
    if len(set(steps.tolist())) < len(positions):
        return None  # a file repeats positions: a 4D file of its own
    for other_positions, other_cos in geometry[1:]:
        if (other_positions.shape != positions.shape or np.abs(other_cos - cos).max() > ORIENTATION_TOLERANCE
                or np.abs(other_positions - positions).max() > POSITION_TOLERANCE_MM):
            return None
    order = sorted(range(len(headers)), key=lambda k: (
        headers[k].acquisition_number if headers[k].acquisition_number is not None else -1,
        dicom_seconds(headers[k].acquisition_time) or 0.0,
        headers[k].instance_number if headers[k].instance_number is not None else -1, headers[k].path))
    items = [SliceItem(headers[k], i, positions[i], rank + 1, None, headers[k].acquisition_number,
                       dicom_seconds(headers[k].acquisition_time), i)
             for rank, k in enumerate(order) for i in range(len(positions))]
    problems.add("info", f"{len(headers)} multi-frame files of one geometry stacked as {len(headers)} time points "
                         "(ordered by AcquisitionNumber, AcquisitionTime, InstanceNumber)")
    return stack_planes(series_uid, tokens, items, cos, "multiframe", problems)


def multiframe_file(series_uid: str, tokens: tuple[str, ...], h: SliceHeader, common: Problems) -> list[SeriesInfo]:
    """The volumes of one multi-frame file: one per orientation and echo its frames hold."""
    problems = Problems()
    if h.frames and all(f.position is not None and (f.orientation or h.orientation) for f in h.frames):
        orients = [f.orientation or h.orientation for f in h.frames]
        keys = [(f"o{o + 1}", f"te{f.echo_time:g}" if f.echo_time is not None else "")
                for o, f in zip(cluster_orientations(orients), h.frames)]
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[key].append(i)
        varying = [d for d in range(2) if len({k[d] for k in groups}) > 1]
        out = []
        for key, frame_ids in groups.items():
            items = [SliceItem(h, i, np.asarray(h.frames[i].position, dtype=float), h.frames[i].temporal_index, None,
                           None, None, i) for i in frame_ids]
            sub_tokens = tokens + tuple(key[d] for d in varying if key[d])
            out.extend(stack_planes(series_uid, sub_tokens, items, np.asarray(orients[frame_ids[0]]), "multiframe",
                              common))
        return out
    geometry = _frame_geometry(h, problems)
    assert geometry is not None  # varying orientations or echoes were handled above
    positions, cos = geometry
    items = [SliceItem(h, i, positions[i], None, None, None, None, i) for i in range(len(positions))]
    problems.extend(common)
    return stack_planes(series_uid, tokens, items, cos, "multiframe", problems)
