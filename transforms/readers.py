"""One MONAI ``ImageReader`` for everything radpipe reads: DICOM, series references, NIfTI, NRRD, MHA, pictures.

``LoadImage(reader=RadpipeReader())`` / ``LoadImaged(keys, reader=RadpipeReader())`` accept:

* a DICOM file (read alone: a 2D radiograph, a multi-frame file, a single slice);
* a folder holding one DICOM series (any file names, nested folders, non-DICOM files ignored);
  a folder with several series is refused with the list of series and how to pick one;
* a series reference ``*.series.json`` written by ``radpipe scan`` (:mod:`transforms.dicom.reference`);
* NIfTI (``.nii``, ``.nii.gz``) through nibabel, NRRD/MHA/MHD through SimpleITK;
* PNG, JPEG, TIFF and BMP pictures through Pillow (:mod:`transforms.image_files`: grey (x, y), colour (x, y, 3)).

Headers are checked before any voxel is decoded (:mod:`transforms.limits`): a claimed size over
``RADPIPE_MAX_VOXELS``, or an uncompressed file shorter than its header says, is refused naming the
file, the claimed shape and the limit.

Every input gives the same metadata shape: array in (x, y, z[, t]) order ((x, y) for 2D images),
a 4x4 RAS ``affine`` (= ``original_affine``), ``spatial_shape``, ``pixdim``, ``dim``, ``space``,
``original_channel_dim`` (-1 for 4D: time becomes MONAI's channel, as with NibabelReader),
``time_axis`` (-1 unless 4D), ``temporal_spacing`` (NaN unless 4D), ``problems``, ``status`` and
``filename_or_obj``. No value is None, so MONAI's collate works with metadata tracking on.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from pipeline.errors import DicomReadError, ImageReadError
from transforms.dicom.reference import SERIES_REF_SUFFIX, read_series_ref, ref_part
from transforms.dicom.series import LPS_TO_RAS
from transforms.dicom.volume import load_series
from transforms.image_files import PICTURE_SUFFIXES, is_picture, load_picture
from transforms.limits import ImageRefusedError, itk_header, nifti_header

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")
_META_FIELDS = ("modality", "series_description", "manufacturer", "model", "body_part", "orientation_label",
                "series_kind", "status", "problems", "photometric_original")


@dataclass
class LoadedImage:
    """An image read by :class:`RadpipeReader`: array (x, y, z[, t]), RAS affine and metadata."""

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any]


@dataclass
class _Refused:
    """What :meth:`RadpipeReader.read` returns for an input refused before decoding (or a picture it refused)."""

    error: ImageReadError


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (SERIES_REF_SUFFIX, ".nii.gz"):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _common_meta(array: np.ndarray, affine: np.ndarray, spatial_rank: int, filename: str,
                 spacing: Sequence[float], temporal: float | None) -> dict[str, Any]:
    pixdim = np.ones(8, dtype=np.float32)
    pixdim[1:1 + len(spacing)] = spacing
    dim = np.ones(8, dtype=np.int16)
    dim[0] = array.ndim
    dim[1:1 + array.ndim] = array.shape
    is_4d = array.ndim > spatial_rank
    meta = {
        "affine": affine.copy(), "original_affine": affine.copy(),
        "spatial_shape": np.asarray(array.shape[:spatial_rank]),
        "pixdim": pixdim, "dim": dim, "space": "RAS", "original_channel_dim": -1 if is_4d else float("nan"),
        "filename_or_obj": filename, "time_axis": spatial_rank if is_4d else -1,
        "temporal_spacing": float("nan") if temporal is None else float(temporal), "n_timepoints": int(array.shape[spatial_rank]) if is_4d else 1,
    }
    meta.update({k: "" for k in _META_FIELDS})
    meta.update({"status": "ok", "series_number": -1})
    return meta


def _load_nifti(path: Path) -> LoadedImage:
    import nibabel as nib

    claim = nifti_header(path)  # header and extensions checked (limit, file size) before nibabel reads them
    try:
        img = nib.load(str(path))
        if img.header.get_data_shape() != claim.shape or str(img.header.get_data_dtype()) != claim.dtype:
            raise ValueError(f"the header changed while being read ({claim.shape} {claim.dtype} before)")
        slope, inter = img.header.get_slope_inter()
        scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
        array = img.get_fdata(dtype=np.float32) if scaled else np.asanyarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise ImageReadError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e}); check the file is complete") from e
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    spatial = min(array.ndim, 3)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    temporal = None
    if array.ndim > 3 and len(zooms) > 3:
        unit = img.header.get_xyzt_units()[1]
        temporal = zooms[3] * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    affine = np.asarray(img.affine, dtype=np.float64)
    return LoadedImage(array, affine, _common_meta(array, affine, spatial, str(path), zooms, temporal))


def _load_itk(path: Path) -> LoadedImage:
    import SimpleITK as sitk

    reader, _ = itk_header(path)  # size checked before the pixels are read
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise ImageReadError(f"{path}: cannot read with SimpleITK ({' '.join(str(e).split())[:300]}); check the "
                             "file and, for .mhd/.nhdr, that its data file sits beside it") from e
    array = sitk.GetArrayViewFromImage(img).copy()  # (z, y, x[, c]) for 3D, (y, x[, c]) for 2D
    rank = img.GetDimension()
    components = img.GetNumberOfComponentsPerPixel()
    order = tuple(range(rank - 1, -1, -1)) + ((rank,) if components > 1 else ())
    array = array.transpose(order)
    spatial = min(rank, 3)
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(rank, rank)[:spatial, :spatial]
    spacing = np.asarray(img.GetSpacing(), dtype=float)
    lps = np.eye(4)
    lps[:spatial, :spatial] = direction @ np.diag(spacing[:spatial])
    lps[:spatial, 3] = np.asarray(img.GetOrigin(), dtype=float)[:spatial]
    affine = LPS_TO_RAS @ lps
    temporal = float(spacing[3]) if rank > 3 else None
    meta = _common_meta(array, affine, spatial, str(path), tuple(spacing), temporal)
    if components > 1:
        meta["original_channel_dim"] = -1
    return LoadedImage(array, affine, meta)


def _dicom_files_under(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and _suffix(p) not in (SERIES_REF_SUFFIX, *NIFTI_SUFFIXES, *ITK_SUFFIXES, ".json", ".txt", ".csv"))
    if not files:
        raise DicomReadError(f"{folder}: folder holds no files; expected the DICOM files of one series")
    return files


def _load_dicom(files: Sequence[Path], *, part: str | None = None, skip_non_dicom: bool = False,
                where: str, display_window: bool = False) -> LoadedImage:
    array, affine, meta = load_series(list(files), part=part, skip_non_dicom=skip_non_dicom,
                                      display_window=display_window)
    meta["filename_or_obj"] = where
    return LoadedImage(array, affine, meta)


def load_volume(path: str | Path, display_window: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read any input :class:`RadpipeReader` accepts.

    Args:
        path: DICOM file or series folder, ``*.series.json``, NIfTI, NRRD, MHA, MHD, PNG, JPEG, TIFF or BMP.
        display_window: DICOM through its own VOI LUT or window onto [0, 1] (see
            :func:`transforms.dicom.volume.load_series`); other formats unchanged.

    Returns:
        ``(array, affine, meta)``: array (x, y, z[, t]) or (x, y), 4x4 RAS affine, metadata (module docstring).

    Raises:
        DicomReadError: DICOM input unreadable or holding several series.
        ImageReadError: other formats unreadable, or the path does not exist.
        ImageRefusedError: a header claims more voxels than the limit (``ImageTooLargeError``) or sizes its
            file does not hold; refused before decoding (:mod:`transforms.limits`).
    """
    image = _read_one(Path(path), display_window)
    return image.array, image.affine, image.meta


def _read_one(path: Path, display_window: bool = False, channel_first: bool = False) -> LoadedImage:
    if path.is_dir():
        return _load_dicom(_dicom_files_under(path), skip_non_dicom=True, where=str(path),
                           display_window=display_window)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder; check the path (relative paths are resolved "
                             f"from {Path.cwd()})")
    suffix = _suffix(path)
    if suffix == SERIES_REF_SUFFIX:
        return _load_dicom(read_series_ref(path), part=ref_part(path) or None, where=str(path),
                           display_window=display_window)
    if suffix in NIFTI_SUFFIXES:
        return _load_nifti(path)
    if suffix in ITK_SUFFIXES:
        return _load_itk(path)
    if is_picture(path):
        return LoadedImage(*load_picture(path, channel_first))  # colour as (3, x, y): no copy in EnsureChannelFirst
    return _load_dicom([path], where=str(path), display_window=display_window)


class RadpipeReader(ImageReader):
    """MONAI reader for DICOM (file, series folder, ``*.series.json``), NIfTI, NRRD, MHA, MHD and pictures.

    A list of DICOM files is read as the slices of one series; any other list (e.g. two NIfTI
    modalities) is read image by image and stacked as channels, as MONAI's readers do.

    Args:
        display_window: show DICOM images through their own VOI LUT or WindowCenter/Width on [0, 1]
            (the ``dicom-window`` intensity preset); other formats are read unchanged.
    """

    def __init__(self, display_window: bool = False) -> None:
        super().__init__()
        self.display_window = display_window

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True when every name is a folder or has a suffix this reader handles (DICOM may have none)."""
        known = (SERIES_REF_SUFFIX, *NIFTI_SUFFIXES, *ITK_SUFFIXES, *PICTURE_SUFFIXES, *DICOM_SUFFIXES)
        return all(Path(f).is_dir() or _suffix(Path(f)) in known for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Read one input, or a list (DICOM slices of one series, or several images to stack).

        An input refused before decoding (:class:`~transforms.limits.ImageRefusedError`: over the
        voxel limit, or a header lying about sizes) is returned as a refusal that :meth:`get_data`
        raises: MONAI's ``LoadImage`` tries its other readers (nibabel, ITK, ...) after any exception
        from ``read``, and they would decode the bomb. A picture refused for any reason (several frames, damaged)
        is kept the same way: MONAI's PIL and ITK readers would read the first page of a multi-page TIFF.
        """
        paths = [Path(p) for p in ensure_tuple(data)]
        try:
            if len(paths) > 1 and all(p.is_file() and _suffix(p) in DICOM_SUFFIXES for p in paths):
                return _load_dicom(paths, where=os.path.commonpath([str(p) for p in paths]),
                                   display_window=self.display_window)
            images = [_read_one(p, self.display_window, channel_first=len(paths) == 1) for p in paths]
        except ImageRefusedError as e:
            return _Refused(e)
        except ImageReadError as e:  # a picture: MONAI's PIL / ITK readers would read a multi-page file's first page
            if any(is_picture(p) for p in paths):
                return _Refused(e)
            raise
        return images[0] if len(images) == 1 else images

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The array and metadata of what :meth:`read` returned; a list is stacked on a new first (channel) dim.

        Raises:
            ImageRefusedError: :meth:`read` refused the input (over the voxel limit, lying header).
            ImageReadError: :meth:`read` refused a picture (several frames, damaged).
            ImageReadError: listed images differ in spatial shape or affine.
        """
        if isinstance(img, _Refused):
            raise img.error
        images = list(ensure_tuple(img))
        meta = dict(images[0].meta)
        if len(images) == 1:
            return images[0].array, meta
        for other in images[1:]:
            if other.array.shape != images[0].array.shape or not np.allclose(other.affine, images[0].affine,
                                                                              atol=1e-3):
                raise ImageReadError(f"{other.meta['filename_or_obj']}: shape {other.array.shape} / affine differ "
                                     f"from {meta['filename_or_obj']} {images[0].array.shape}; images stacked as "
                                     "channels must share one grid (resample them first)")
        meta["original_channel_dim"] = 0
        return np.stack([i.array for i in images]), meta
