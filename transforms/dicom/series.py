"""Series assembly from DICOM headers, the way dcm2niix does it.

:func:`assemble_series` groups headers by SeriesInstanceUID, splits a series where its images
cannot form one volume (localizers mixed in, matrix size, orientation, echo, phase/magnitude, and
acquisitions covering different positions), sorts slices by their position projected on the
slice normal (never by InstanceNumber or file name), takes the slice spacing from those
positions (never SliceThickness), and turns positions that repeat over time points or
acquisitions into a 4D (x, y, z, t) series. Missing slices, uneven spacing, gantry tilt and
duplicate positions are reported per series in :attr:`SeriesInfo.problems`.

Sorting, spacing and time points are :mod:`transforms.dicom.geometry`'s work; this module decides
which files (or frames) belong to one volume.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

from transforms.dicom.geometry import (
    LPS_TO_RAS,
    Plane,
    Problems,
    SeriesInfo,
    SliceItem,
    dicom_seconds,
    orientation_label,
    series_info,
    stack_planes,
    temporal_spacing,
    unit,
)
from transforms.dicom.content import pixel_digest
from transforms.dicom.diffusion import drop_derived_volumes
from transforms.dicom.multiframe import cluster_orientations, multiframe_file, stack_multiframe_files
from transforms.dicom.slice_header import SliceHeader

__all__ = ["LPS_TO_RAS", "Plane", "SeriesInfo", "assemble_series", "orientation_label", "series_key", "sort_series"]

# Splits that say the files were not written as one series (one SeriesInstanceUID reused): a warning.
_MIXED = {"study": "studies", "series": "series numbers", "modality": "modalities", "vendor": "manufacturers",
          "matrix": "matrix sizes", "orient": "orientations"}


def _complex_part(image_type: tuple[str, ...]) -> str:
    for token, name in (("P", "ph"), ("PHASE", "ph"), ("R", "real"), ("REAL", "real"), ("I", "imag"),
                        ("IMAGINARY", "imag")):
        if token in image_type[2:]:
            return name
    return ""


def _kind(h: SliceHeader) -> str:
    if h.is_mosaic:
        return "mosaic"
    if h.frames or h.number_of_frames > 1:
        return "multiframe"
    if h.orientation is None or h.position is None:
        return "single2d"
    return "slices"


def _split_keys(headers: list[SliceHeader]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Per-header tuple of split tokens; a dimension adds a token only when it varies within the series."""
    orient_ids = cluster_orientations([h.orientation or (0.0,) * 6 for h in headers])
    vendors = {v: k for k, v in enumerate(dict.fromkeys(h.manufacturer.strip().upper() for h in headers))}
    studies = {v: k for k, v in enumerate(dict.fromkeys(h.study_uid for h in headers))}
    dims = {
        "study": [f"st{studies[h.study_uid] + 1}" for h in headers],
        "series": [f"s{h.series_number}" if h.series_number is not None else "" for h in headers],
        "modality": [h.modality.strip().lower() for h in headers],
        "vendor": [f"v{vendors[h.manufacturer.strip().upper()] + 1}" for h in headers],
        "derived": ["derived" if h.image_type[:1] == ("DERIVED",) else "" for h in headers],
        "bits": [f"b{h.bits_allocated}" for h in headers],
        "loc": ["loc" if h.is_localizer else "" for h in headers],
        "kind": [_kind(h) for h in headers],
        "matrix": [f"{h.rows}x{h.cols}" for h in headers],
        "orient": [f"o{k + 1}" for k in orient_ids],
        "echo": [f"e{h.echo_number}" if h.echo_number is not None else
                 (f"te{h.echo_time:g}" if h.echo_time is not None else "") for h in headers],
        "complex": [_complex_part(h.image_type) for h in headers],
    }
    varying = [name for name, values in dims.items() if len(set(values)) > 1]
    return [tuple(dims[name][i] for name in varying if dims[name][i]) for i in range(len(headers))], varying


def _dedupe(headers: list[SliceHeader], problems: Problems) -> list[SliceHeader]:
    """Drop copies: files that share a SOPInstanceUID *and* their pixel data (dcm2niix compares content too).

    Files that share a SOPInstanceUID but not their pixels are different images and all stay, unless
    some of them cannot be read back (damaged copies of an original): those are dropped.
    """
    by_uid: dict[str, list[SliceHeader]] = defaultdict(list)
    for h in headers:
        by_uid[h.sop_instance_uid or h.path].append(h)
    if all(len(same) == 1 for same in by_uid.values()):
        return headers
    drop: set[str] = set()
    copies = damaged = different = 0
    for same in by_uid.values():
        if len(same) < 2:
            continue
        digests = {h.path: pixel_digest(h) for h in same}
        readable = [h for h in same if digests[h.path] is not None]
        unreadable = [h for h in same if digests[h.path] is None]
        if readable:
            drop.update(h.path for h in unreadable)
            damaged += len(unreadable)
        first_of: dict[str | None, str] = {}
        for h in readable or same[:1]:
            kept = first_of.setdefault(digests[h.path], h.path)
            if kept != h.path:
                drop.add(h.path)
                copies += 1
        different += len(first_of) - 1
    if copies:
        problems.add("info", f"{copies} file(s) are copies of an image already seen (same SOPInstanceUID and "
                             "pixel data); kept one of each")
    if damaged:
        problems.add("warning", f"{damaged} file(s) share a SOPInstanceUID with a readable file but their pixel "
                                "data cannot be read; kept the readable one")
    if different:
        problems.add("warning", f"{different} file(s) share a SOPInstanceUID with another but hold different "
                                "pixel data; kept as different images")
    return [h for h in headers if h.path not in drop]


def assemble_series(headers: Iterable[SliceHeader]) -> list[SeriesInfo]:
    """Group slice headers into volumes, the way dcm2niix would.

    Args:
        headers: headers of image files (from :func:`transforms.dicom.headers.read_header`), any order,
            any number of series.

    Returns:
        One :class:`SeriesInfo` per volume, sorted by study, series number and uid. A series that had
        to be split gets uids ``<SeriesInstanceUID>_<tokens>`` (e.g. ``_e2`` for echo 2, ``_loc`` for
        localizers, ``_o2`` for a second orientation, ``_a3`` for acquisition 3).
    """
    by_series: dict[str, list[SliceHeader]] = defaultdict(list)
    for h in headers:
        by_series[series_key(h)].append(h)
    out: list[SeriesInfo] = []
    for series_uid, group in by_series.items():
        group.sort(key=lambda h: (h.instance_number if h.instance_number is not None else 1 << 30, h.path))
        common = Problems()
        keys, varying = _split_keys(group)
        parts: dict[tuple[str, ...], list[SliceHeader]] = defaultdict(list)
        for key, h in zip(keys, group):
            parts[key].append(h)
        if len(parts) > 1:
            mixed = [_MIXED[d] for d in varying if d in _MIXED]
            common.add("warning" if mixed else "info",
                       f"series split into {len(parts)} volumes by {', '.join(varying)}"
                       + (f" (mixed {' and '.join(mixed)})" if mixed else "")
                       + f": {', '.join('_'.join(k) or '(rest)' for k in parts)}")
        for key, part in parts.items():
            part_problems = Problems()
            part_problems.extend(common)
            part = _dedupe(part, part_problems)
            out.extend(_build_part(series_uid, key, part, part_problems))
    return sort_series(out)


def series_key(h: SliceHeader) -> str:
    """The group a header is assembled in: its SeriesInstanceUID (study and number without one).

    Groups are assembled independently, so the series of headers that hold every member of a group
    are the series :func:`assemble_series` makes of that group among any other headers.
    """
    return h.series_uid or f"no-series-uid.{h.study_uid}.{h.series_number}"


def sort_series(series: Iterable[SeriesInfo]) -> list[SeriesInfo]:
    """Series in :func:`assemble_series` order: study, series number, uid."""
    return sorted(series, key=lambda s: (s.study_uid, s.series_number if s.series_number is not None else -1, s.uid))


def _image_tokens(headers: list[SliceHeader]) -> list[tuple[str, ...]]:
    """The uid token of each file of a series whose files are volumes of their own: ``i<InstanceNumber>``.

    Files that share an InstanceNumber (distinct instances numbered alike) get ``i<n>-1``, ``i<n>-2``, ...
    in their order, so every volume keeps a uid (and a series reference) of its own. One file: no token.
    """
    if len(headers) < 2:
        return [()] * len(headers)
    numbers = [h.instance_number if h.instance_number is not None else k + 1 for k, h in enumerate(headers)]
    shared = {n for n, count in Counter(numbers).items() if count > 1}
    seen: Counter[int] = Counter()
    tokens = []
    for n in numbers:
        seen[n] += 1
        tokens.append((f"i{n}-{seen[n]}" if n in shared else f"i{n}",))
    return tokens


def _build_part(series_uid: str, tokens: tuple[str, ...], headers: list[SliceHeader],
                common: Problems) -> list[SeriesInfo]:
    kind = _kind(headers[0])
    if kind == "multiframe":
        stacked = stack_multiframe_files(series_uid, tokens, headers, common)
        if stacked is not None:
            return stacked
    if kind in ("multiframe", "single2d"):
        out = []
        for h, extra in zip(headers, _image_tokens(headers)):
            if kind == "single2d":
                out.append(_single2d(series_uid, tokens + extra, h, common))
            else:
                out.extend(multiframe_file(series_uid, tokens + extra, h, common))
        return out
    if kind == "mosaic":
        return [_mosaic(series_uid, tokens, headers, common)]
    items = [SliceItem(h, None, h.position, h.temporal_position, h.trigger_time,
                   h.acquisition_number, dicom_seconds(h.acquisition_time), h.instance_number or 0) for h in headers]
    cos = np.mean([h.orientation for h in headers], axis=0)
    return [drop_derived_volumes(info) for info in stack_planes(series_uid, tokens, items, cos, "slices", common)]


def _single2d(series_uid: str, tokens: tuple[str, ...], h: SliceHeader, common: Problems) -> SeriesInfo:
    problems = Problems()
    problems.extend(common)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    info = series_info(series_uid, tokens, "single2d", [Plane(h.path, None, 0, 0)], (h,), (h.cols, h.rows), h,
                 np.zeros(3), row, col, np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0]), 1, 1, None, problems, [])
    return info


def _mosaic(series_uid: str, tokens: tuple[str, ...], headers: list[SliceHeader], common: Problems) -> SeriesInfo:
    """Siemens mosaic files: each file is one volume (tiles), several files are time points."""
    problems = Problems()
    problems.extend(common)
    headers = sorted(headers, key=lambda h: (h.acquisition_number or 0, h.instance_number or 0,
                                             dicom_seconds(h.acquisition_time) or 0.0, h.path))
    ref = headers[0]
    n = ref.mosaic_count or 1
    if not ref.mosaic_count:
        problems.add("error", "Siemens mosaic without NumberOfImagesInMosaic (0019,100A / CSA header)")
    tiles = int(np.ceil(np.sqrt(n)))
    tile_rows, tile_cols = ref.rows // tiles, ref.cols // tiles
    cos = np.asarray(ref.orientation or (1.0, 0, 0, 0, 1.0, 0), dtype=float)
    row, col = unit(cos[:3]), unit(cos[3:])
    normal = unit(ref.mosaic_normal) if ref.mosaic_normal is not None else unit(np.cross(row, col))
    row_sp, col_sp = ref.pixel_spacing or (1.0, 1.0)
    ipp = np.asarray(ref.position or (0.0, 0.0, 0.0), dtype=float)
    # IPP of a mosaic refers to the whole tiled image; shift it to the first tile (as nibabel/dcm2niix do)
    # (nibabel and dcm2niix use the fractional tile size here when the mosaic does not divide evenly)
    origin = ipp + col * row_sp * (ref.rows - ref.rows / tiles) / 2 + row * col_sp * (ref.cols - ref.cols / tiles) / 2
    step = normal * (ref.spacing_between_slices or ref.slice_thickness or 1.0)
    planes = [Plane(h.path, None, 0, t) for t, h in enumerate(headers)]
    n_t = len(headers)
    items = [SliceItem(h, None, ipp, None, None, h.acquisition_number, dicom_seconds(h.acquisition_time), 0)
             for h in headers]
    temporal = temporal_spacing(items, np.arange(n_t), np.ones(n_t, dtype=bool), n_t, ref)
    shape = (tile_cols, tile_rows, n) + ((n_t,) if n_t > 1 else ())
    return series_info(series_uid, tokens, "mosaic", planes, tuple(headers), shape, ref, origin, row, col, step, normal,
                 n, n_t, temporal, problems, [])
