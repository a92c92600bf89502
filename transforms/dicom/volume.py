"""DICOM pixels to ``(array, affine, meta)``: the volume of one assembled series.

The array is in x (columns), y (rows), z (slices) [, t] order, as nibabel and MONAI's NibabelReader
return NIfTI data, and the affine maps those indices to RAS millimetres. RescaleSlope/Intercept
(or a modality LUT) are applied, MONOCHROME1 is inverted so that bright means high, Siemens
mosaics are cut into slices, enhanced multi-frame files are read through their functional groups,
and every file is read exactly once.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.display import apply_display_window, stored_range
from transforms.dicom.rescale import philips_floating_point, plane_rescale, rescale_planes
from transforms.dicom.fields import header_from_values
from transforms.dicom.native import native_pixels, stored_array
from transforms.dicom.raw import UNCOMPRESSED_LE, NotFast, parse_file
from transforms.dicom.series import SeriesInfo, assemble_series
from transforms.dicom.slice_header import SliceHeader
from transforms.limits import check_claimed_size, max_voxels

if TYPE_CHECKING:  # pydicom is imported only for the files the byte reader cannot read: 0.15 s per process
    from pydicom.dataset import Dataset
    from pydicom.uid import UID

FileData = tuple["Mapping[str, Any] | Dataset", np.ndarray | None]  # header values, stored pixels (None: decode later)

_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg-libjpeg",  # JPEG baseline / extended / lossless
    "1.2.840.10008.1.2.4.8": "pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.4.9": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.20": "pylibjpeg-openjpeg>=2.4 (HTJ2K)",
}


def _decoder_hint(uid: UID) -> str:
    for prefix, hint in _DECODER_HINTS.items():
        if str(uid).startswith(prefix):
            return hint
    return "gdcm (python-gdcm), or decompress first with gdcmconv --raw or dcmdjpeg"


def _check_decodable(ds: Dataset, path: str) -> None:
    from pydicom.uid import UID

    uid = UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ""))
    if not uid or not uid.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError as e:
        raise DicomReadError(f"{path}: transfer syntax {uid.name} ({uid}) has no pixel decoder in pydicom; "
                             f"install {_decoder_hint(uid)}") from e
    if not decoder.is_available:
        raise DicomReadError(f"{path}: transfer syntax {uid.name} ({uid}) cannot be decoded here; install "
                             f"{_decoder_hint(uid)} (pydicom: {'; '.join(decoder.missing_dependencies)})")


def _check_pixel_length(ds: Dataset, path: str) -> None:
    """Refuse uncompressed pixel data shorter than Rows x Columns x frames x samples x BitsAllocated say."""
    from pydicom.uid import UID

    uid = UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ""))
    if (uid and uid.is_compressed) or "PixelData" not in ds:
        return
    try:
        dims = [int(ds.get(k) or d) for k, d in (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1),
                                                  ("SamplesPerPixel", 1), ("BitsAllocated", 0))]
    except (TypeError, ValueError):
        return  # malformed values: pydicom says what is wrong
    needed, have = (int(np.prod(dims, dtype=object)) + 7) // 8, len(ds.PixelData)
    if have < needed:
        raise DicomReadError(f"{path}: pixel data truncated: {have:,} bytes where Rows x Columns x frames x samples x "
                             f"BitsAllocated ({'x'.join(map(str, dims))} bits) need {needed:,}; the file is cut short "
                             "or its header is wrong; re-export the file")


def _pixels(ds: Dataset, path: str) -> np.ndarray:
    """Stored pixel values, frames first: (frames, rows, cols[, samples]); colour converted to RGB."""
    _check_decodable(ds, path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NotAnImageError(f"{path}: no pixel data; not an image")
    _check_pixel_length(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as e:
        text = " ".join(str(e).split())[:300]
        reason = "truncated pixel data" if "length" in text or "expected" in text else f"{type(e).__name__}: {text}"
        raise DicomReadError(f"{path}: cannot decode pixel data ({reason}); re-export the file") from e
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr, samples = apply_color_lut(arr, ds), 3
    single_frame_ndim = 2 if samples == 1 else 3
    if arr.ndim == single_frame_ndim:
        arr = arr[None]
    return arr


def _invert_monochrome1(stored: np.ndarray, ds: Mapping[str, Any] | Dataset) -> np.ndarray:
    """Map MONOCHROME1 stored values onto MONOCHROME2 over the range BitsStored allows."""
    lo, hi = stored_range(ds, default_bits=8 * stored.dtype.itemsize)
    return (lo + hi - stored.astype(np.int64)).astype(stored.dtype)


def _mosaic_slices(arr: np.ndarray, series: SeriesInfo) -> np.ndarray:
    n = series.shape[2]
    tiles = int(np.ceil(np.sqrt(n)))
    tile_cols, tile_rows = series.shape[0], series.shape[1]
    image = arr[0][: tiles * tile_rows, : tiles * tile_cols]
    blocks = image.reshape(tiles, tile_rows, tiles, tile_cols).transpose(0, 2, 1, 3)
    return blocks.reshape(tiles * tiles, tile_rows, tile_cols)[:n]


def _values_and_pixels(path: str, memo: dict[Any, Any]) -> tuple[Mapping[str, Any] | Dataset, np.ndarray | None]:
    """:func:`read_slice_file` without building the header (the series' assembly has it)."""
    try:
        parsed, buf, _ = parse_file(path, whole=True, memo=memo)
        values = parsed.values
        frames = int(values.get("NumberOfFrames") or 1)
        return values, native_pixels(parsed, buf, int(values["Rows"]), int(values["Columns"]), frames)
    except (NotFast, OSError, TypeError, KeyError, ValueError):
        from transforms.dicom.headers import read_dataset

        return read_dataset(Path(path), header_only=False), None


def _pixels_at_offset(header: SliceHeader) -> FileData | None:
    """The stored pixels of a file at the offset its scan recorded (``header.pixel_offset``), header not parsed again.

    For native little-endian greyscale files only; the values the loader looks up come from the header (the byte
    reader refuses modality LUTs and dose scaling, so slope, intercept and photometry are all there is). None when
    the file cannot be read this way (the caller parses it).
    """
    h = header
    if (h.pixel_offset is None or h.transfer_syntax not in UNCOMPRESSED_LE or h.samples_per_pixel != 1
            or h.photometric not in ("MONOCHROME1", "MONOCHROME2") or h.is_mosaic or h.frames):
        return None
    shape = (h.number_of_frames, h.rows, h.cols)
    needed = shape[0] * shape[1] * shape[2] * (h.bits_allocated // 8)
    try:
        fd = os.open(h.path, os.O_RDONLY)
        try:
            data = os.pread(fd, needed, h.pixel_offset)
        finally:
            os.close(fd)
        pixels = stored_array(data, 0, len(data), shape, h.bits_allocated, h.pixel_representation, h.bits_stored)
    except (OSError, NotFast):
        return None
    values = {"Rows": h.rows, "Columns": h.cols, "NumberOfFrames": h.number_of_frames, "SamplesPerPixel": 1,
              "PhotometricInterpretation": h.photometric, "BitsAllocated": h.bits_allocated,
              "BitsStored": h.bits_stored, "PixelRepresentation": h.pixel_representation,
              "RescaleSlope": h.slope, "RescaleIntercept": h.intercept}
    return values, pixels


def read_slice_file(path: str | Path) -> tuple[SliceHeader, Mapping[str, Any] | Dataset, np.ndarray | None]:
    """Read one file completely, once: its header, its header values and its stored pixels.

    Uncompressed little-endian greyscale files are read straight from their bytes
    (:mod:`transforms.dicom.raw`); everything else through pydicom, whose pixels are decoded later.

    Returns:
        ``(header, values, pixels)``: ``values`` is a keyword -> value mapping or the pydicom
        ``Dataset`` (both answer ``get`` and ``in``); ``pixels`` (frames, rows, cols) as pydicom's
        ``pixel_array`` gives them, or ``None`` when they are to be decoded from the dataset.

    Raises:
        NotAnImageError, DicomReadError: as :func:`~transforms.dicom.headers.read_dataset` and
            :func:`~transforms.dicom.headers.header_from_dataset`.
    """
    try:
        parsed, buf, _ = parse_file(str(path), whole=True)
        header = header_from_values(parsed.values, path, transfer_syntax=parsed.transfer_syntax,
                                    media_sop_class=parsed.media_sop_class)
        pixels = native_pixels(parsed, buf, header.rows, header.cols, header.number_of_frames)
        return header, parsed.values, pixels
    except (NotFast, OSError, AttributeError, TypeError, KeyError, ValueError):
        from transforms.dicom.headers import header_from_dataset, read_dataset

        ds = read_dataset(Path(path), header_only=False)
        return header_from_dataset(ds, path), ds, None


def assemble_from_files(paths: Sequence[str | Path], *, part: str | None = None,
                        skip_non_dicom: bool = False) -> tuple[SeriesInfo, dict[str, FileData]]:
    """Read ``paths`` completely (each once), assemble them, and return the one series they hold.

    Args:
        paths: DICOM files.
        part: split tokens (the uid suffix after the SeriesInstanceUID, e.g. ``"e2"``) choosing one
            volume when the files assemble into several.
        skip_non_dicom: leave out files that are not DICOM (a README in a series folder); damaged
            DICOM files still raise.

    Returns:
        The series and, by path, each file's header values and stored pixels (see :func:`read_slice_file`).

    Raises:
        NotAnImageError: no file holds an image.
        DicomReadError: unreadable files, or several series and ``part`` does not pick one.
    """
    datasets: dict[str, FileData] = {}
    headers = []
    skipped: list[DicomReadError] = []
    for p in paths:
        try:
            header, values, stored = read_slice_file(p)
            headers.append(header)
        except NotAnImageError as e:
            skipped.append(e)
            continue
        except DicomReadError as e:
            if skip_non_dicom and "not a DICOM file" in str(e):
                skipped.append(e)
                continue
            raise
        datasets[str(p)] = (values, stored)
    if not headers:
        if len(skipped) == 1:
            raise skipped[0]
        raise NotAnImageError(f"none of the {len(skipped)} files holds a DICOM image (first: {skipped[0]})"
                              if skipped else "no DICOM files given")
    found = assemble_series(headers)
    if len(found) > 1 and part:
        chosen = [s for s in found if s.uid.endswith("_" + part)]
        found = chosen or found
    if len(found) > 1:
        where = os.path.commonpath([str(p) for p in paths]) if len(paths) > 1 else str(paths[0])
        raise DicomReadError(describe_several(found, where=where))
    return found[0], datasets


def describe_several(found: Sequence[SeriesInfo], where: str) -> str:
    """Error text for input holding several series: each uid with its description, and how to pick one."""
    listed = "; ".join(f"{s.uid} ({s.modality} #{s.series_number} '{s.description}', "
                       f"{'x'.join(map(str, s.shape))})" for s in found[:20])
    return (f"{where}: holds {len(found)} series, expected one: {listed}. Pick one: run `radpipe scan` and use "
            "its .series.json file for that series, or pass the files of one series only")


def load_series(series: SeriesInfo | Sequence[str | Path], *, part: str | None = None,
                skip_non_dicom: bool = False, philips_scaling: str = "display", display_window: bool = False,
                ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read the pixels of one series into an array with its RAS affine and MONAI-style metadata.

    Every file is read once: given paths, the complete datasets read for assembly give the pixels too.

    Args:
        series: a :class:`SeriesInfo` from :func:`assemble_series`, or the files of exactly one series.
        part, skip_non_dicom: for paths, as in :func:`assemble_from_files`.
        philips_scaling: ``"display"`` (the default): values as DICOM defines them, stored x
            RescaleSlope + RescaleIntercept; ``"fp"``: Philips' floating-point values, those divided by
            RescaleSlope x the private scale slope (2005,100E), as dcm2niix writes them by default (``-p y``).
            Only files whose Manufacturer is Philips and that hold a scale slope change.
        display_window: map the values through the header's VOI LUT or WindowCenter/Width onto [0, 1]
            (:func:`transforms.dicom.display.apply_display_window`: radiographs as a viewer shows them);
            ``meta["display_window"]`` says what was applied.

    Returns:
        ``(array, affine, meta)``: array in (x, y, z[, t]) order ((x, y) for a 2D projection image),
        rescaled (integer dtype when the rescale is integral, float32 otherwise); 4x4 RAS affine;
        metadata with ``affine``, ``original_affine``, ``spatial_shape``, ``pixdim``, ``dim``,
        ``original_channel_dim``, ``space``, ``filename_or_obj``, ``time_axis``, ``temporal_spacing``,
        ``problems`` and series fields (modality, description, ...). No patient identifiers.

    Raises:
        DicomReadError: files unreadable, undecodable or truncated, several series, or a series with status error.
        ImageTooLargeError: the headers claim more voxels than ``RADPIPE_MAX_VOXELS`` (checked before any
            pixel is decoded or the volume allocated; :func:`check_series_size`).
    """
    files: dict[str, FileData] = {}
    if not isinstance(series, SeriesInfo):
        series, files = assemble_from_files(list(series), part=part, skip_non_dicom=skip_non_dicom)
    if series.status == "error":
        paths = series.files
        where = paths[0] if len(paths) == 1 else os.path.commonpath(paths)
        raise DicomReadError(f"{where}: series {series.uid} ('{series.description}') cannot be assembled: "
                             + "; ".join(series.problems))
    check_series_size(series)
    memo: dict[Any, Any] = {}  # the files of a series repeat most of their header: decode each value once
    scanned = {h.path: h for h in series.headers} if not display_window else {}  # the window needs every value
    for path in series.files:
        if path not in files:
            known = _pixels_at_offset(scanned[path]) if path in scanned else None
            files[path] = known if known is not None else _values_and_pixels(path, memo)
    datasets = {path: files[path][0] for path in series.files}
    pixels = {path: _pixels(values, path) if stored is None else stored
              for path, (values, stored) in ((p, files[p]) for p in series.files)}
    first = pixels[series.planes[0].path]
    channels = first.shape[3:] if series.kind != "mosaic" else ()
    n_t = series.n_timepoints
    tile = (series.shape[1], series.shape[0])
    stored = np.zeros((n_t, series.n_slices, *tile, *channels), dtype=first.dtype.newbyteorder("="))
    slopes = np.ones((n_t, series.n_slices))
    intercepts = np.zeros((n_t, series.n_slices))
    written = np.zeros((n_t, series.n_slices), dtype=bool)
    headers = {h.path: h for h in series.headers}
    for plane in series.planes:
        ds, arr = datasets[plane.path], pixels[plane.path]
        if arr.shape[1:3] != (series.header.rows, series.header.cols):
            raise DicomReadError(f"{plane.path}: matrix {arr.shape[1]}x{arr.shape[2]} differs from the series' "
                                 f"{series.header.rows}x{series.header.cols}")
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            arr = _invert_monochrome1(arr, ds)
        if series.kind == "mosaic":
            stored[plane.t] = _mosaic_slices(arr, series)
            slopes[plane.t], intercepts[plane.t] = plane_rescale(ds, headers.get(plane.path), None)
            if philips_scaling == "fp":
                slopes[plane.t], intercepts[plane.t] = philips_floating_point(
                    (slopes[plane.t, 0], intercepts[plane.t, 0]), headers.get(plane.path))
            written[plane.t] = True
            continue
        index = plane.frame if plane.frame is not None else 0
        if index >= arr.shape[0]:
            raise DicomReadError(f"{plane.path}: frame {index + 1} requested but the file holds {arr.shape[0]}")
        stored[plane.t, plane.z] = arr[index]
        rescale = plane_rescale(ds, headers.get(plane.path), plane.frame)
        if philips_scaling == "fp":
            rescale = philips_floating_point(rescale, headers.get(plane.path))
        slopes[plane.t, plane.z], intercepts[plane.t, plane.z] = rescale
        written[plane.t, plane.z] = True
    volume = rescale_planes(stored, slopes, intercepts, written, datasets, series)
    shown = ""
    if display_window:
        volume, shown = apply_display_window(volume, datasets[series.planes[0].path])
    order = (3, 2, 1, 0) + tuple(range(4, volume.ndim))
    volume = volume.transpose(order)  # (t, z, y, x[, c]) -> (x, y, z, t[, c])
    if n_t == 1:
        volume = volume[:, :, :, 0]
    if series.kind == "single2d":
        volume = volume[:, :, 0]
    meta = _meta(series, volume)
    if display_window:
        meta["display_window"] = shown
    return volume, series.affine, meta


def check_series_size(series: SeriesInfo) -> int:
    """Refuse a series whose headers claim more voxels than the limit, before any pixel is decoded.

    Two claims are checked, the larger named: the frames its files decode to (Rows x Columns x
    frames x samples, summed over the files: a multi-frame file decodes whole) and the volume
    assembled from them (x, y, z[, t] with filled gaps, x samples).

    Returns:
        The larger claim's decoded size in bytes (stored type).

    Raises:
        ImageTooLargeError: over ``RADPIPE_MAX_VOXELS`` (see :mod:`transforms.limits`); also a
            :class:`~pipeline.errors.DicomReadError`.
    """
    rows = cols = frames = bits = 0
    samples = 1
    signed = False
    for h in series.headers:  # one per file, in volume order
        rows, cols, bits = max(rows, h.rows), max(cols, h.cols), max(bits, h.bits_allocated)
        frames += max(h.number_of_frames, 1)
        samples = max(samples, 3 if h.photometric.upper() == "PALETTE COLOR" else h.samples_per_pixel)
        signed = signed or h.pixel_representation == 1
    decoded, volume = (cols, rows, frames, samples), (*series.shape, samples)
    shape, axes = ((decoded, "Columns x Rows x frames x samples") if math.prod(decoded) >= math.prod(volume)
                   else (volume, "x y z [t] samples of the assembled volume"))
    itemsize = max(1, (bits + 7) // 8)
    if math.prod(shape) <= max_voxels():
        return math.prod(shape) * itemsize
    files = series.files
    where = files[0] if len(files) == 1 else os.path.commonpath(files)
    return check_claimed_size(where, shape, itemsize, f"{'' if signed else 'u'}int{max(bits, 8)}", axes=axes)


def _meta(series: SeriesInfo, volume: np.ndarray) -> dict[str, Any]:
    h = series.header
    spatial = volume.shape[:2] if series.kind == "single2d" else volume.shape[:3]
    is_4d = series.n_timepoints > 1
    pixdim = np.ones(8, dtype=np.float32)
    pixdim[1:1 + len(series.spacing)] = series.spacing
    dim = np.ones(8, dtype=np.int16)
    dim[0] = volume.ndim
    dim[1:1 + volume.ndim] = volume.shape
    files = series.files
    return {
        "affine": series.affine.copy(),
        "original_affine": series.affine.copy(),
        "spatial_shape": np.asarray(spatial),
        "pixdim": pixdim,
        "dim": dim,
        "space": "RAS",
        "original_channel_dim": -1 if is_4d or volume.ndim > len(spatial) else float("nan"),
        "filename_or_obj": files[0] if len(files) == 1 else os.path.commonpath(files),
        "time_axis": 3 if is_4d else -1,
        "temporal_spacing": float("nan") if series.temporal_spacing is None else float(series.temporal_spacing),
        "n_timepoints": series.n_timepoints,
        "problems": "; ".join(series.problems),
        "status": series.status,
        "series_kind": series.kind,
        "orientation_label": series.orientation_label,
        "modality": h.modality,
        "series_description": h.series_description,
        "series_number": h.series_number if h.series_number is not None else -1,
        "manufacturer": h.manufacturer,
        "model": h.model,
        "body_part": h.body_part,
        "photometric_original": h.photometric,
    }
