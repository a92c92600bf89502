"""Whether an image cell of a manifest names a file radpipe can read: recognised first, then decoded.

A file is recognised by its name *and* its first bytes before any reader sees it: NIfTI by the
``sizeof_hdr`` / magic (``n+1``, ``ni1``, ``n+2``) of its header (read through gzip for ``.nii.gz``),
NRRD by ``NRRD000``, MHA / MHD by their ``NDims`` / ``ElementDataFile`` lines, DICOM by ``DICM`` at byte 128
or a first element of group 0000 / 0002 / 0008 (an old file without preamble, then parsed), a series
reference by its JSON. Anything else (``/etc/passwd``, a PDF named ``.dcm``) is "not an image file" and
is never handed to a reader.

A picture (PNG, JPEG, TIFF, BMP) is recognised by its signature and decoded whole after its header's size check.

Then, by default, each image is opened as far as its header and first slice: the voxel limit and size
claims of :func:`transforms.limits.check_image_header`, the data the header claims present in the file
(the gzip trailer's length, or the stream itself when the trailer disagrees), one slice decoded; for DICOM
every file's header read and the series assembled as the loader will, then one file's pixels decoded; NRRD and
MHA / MHD (rare here, and ITK reads a truncated file's first slice without complaint) are decoded whole.
``deep`` decodes everything with :func:`transforms.readers.load_volume` and checks every gzip CRC.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import re
import struct
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.errors import DicomReadError, NotAnImageError
from transforms.dicom.reference import SERIES_REF_FORMAT, SERIES_REF_SUFFIX, read_series_ref, ref_part
from transforms.image_files import is_picture

READABLE = ("DICOM, NIfTI (.nii, .nii.gz), NRRD, MHA/MHD, PNG, JPEG, TIFF, BMP or a radpipe series reference "
            "(.series.json)")
_PICTURE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
MAX_CHECKED_SLICE_BYTES = 1 << 30  # the default check never allocates more to decode one slice
_NOT_DICOM_SUFFIXES = (SERIES_REF_SUFFIX, ".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".json", ".txt",
                       ".csv")  # what the series-folder reader leaves out (transforms.readers)
_MAGIC = ((b"\x89PNG", "a PNG picture"), (b"\xff\xd8\xff", "a JPEG picture"), (b"GIF8", "a GIF picture"),
          (b"II*\x00", "a TIFF picture"), (b"MM\x00*", "a TIFF picture"), (b"%PDF", "a PDF document"),
          (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip-compressed data"), (b"NRRD", "an NRRD image"))
_ITK_NOISE = re.compile(r"Exception thrown in SimpleITK \w+: \S+: ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")
MAX_SERIES_REF_BYTES = 64 << 20  # a reference to 100,000 files is about 10 MB
MAX_FOLDER_FILES = 100_000  # a series folder holding more is the wrong folder (an export root, "/")


def image_kind(path: Path) -> str:
    """The format a path names: ``dicom-folder``, ``series-ref``, ``nifti-gz``, ``nifti``, ``itk``, ``picture``
    or ``dicom``."""
    if path.is_dir():
        return "dicom-folder"
    name = path.name.lower()
    if is_picture(name):
        return "picture"
    for suffix, kind in ((SERIES_REF_SUFFIX, "series-ref"), (".nii.gz", "nifti-gz"), (".nii", "nifti"),
                         (".nrrd", "itk"), (".nhdr", "itk"), (".mha", "itk"), (".mhd", "itk")):
        if name.endswith(suffix):
            return kind
    return "dicom"  # the readers read any other file as DICOM (many exports name files 1.2.840....)


def _is_nifti(head: bytes) -> bool:
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348 and head[344:348] in (
                b"n+1\x00", b"ni1\x00"):
            return True
        if len(head) >= 12 and struct.unpack(endian + "i", head[:4])[0] == 540 and head[4:8] == b"n+2\x00":
            return True
    return False


def _looks_like_dicom(head: bytes) -> bool:
    if head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and (head[:2] in (b"\x00\x00", b"\x02\x00", b"\x08\x00") or head[:2] == b"\x00\x08")


def _what_it_holds(head: bytes) -> str:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if _is_nifti(head):
        return "a NIfTI header"
    if head[128:132] == b"DICM":
        return "DICOM"
    try:
        text = head[:1024].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text" if all(c.isprintable() or c in "\r\n\t" for c in text) else "unrecognised binary data"


def _not_an_image(path: Path, head: bytes, expected: str = "") -> str:
    named = f" (named like {expected})" if expected else ""
    return f"not an image file: {path}{named} holds {_what_it_holds(head)}; radpipe reads {READABLE}"


def _head(path: Path, n: int = 1024) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def content_problem(path: Path, kind: str) -> str | None:
    """Why a file's first bytes do not match the format its name claims (None when they do).

    Raises:
        OSError: the file cannot be opened (the caller reports it).
    """
    if kind == "dicom-folder":
        return None
    head = _head(path, 64 << 10 if kind == "itk" else 1024)
    if kind == "nifti":
        if head.startswith(b"\x1f\x8b"):
            return f"{path} is gzip-compressed NIfTI named .nii; rename it to {path.name}.gz"
        return None if _is_nifti(head) else _not_an_image(path, head, "NIfTI")
    if kind == "nifti-gz":
        if not head.startswith(b"\x1f\x8b"):
            if _is_nifti(head):
                return f"{path} is uncompressed NIfTI named .nii.gz; rename it to {path.name[:-3]}"
            return _not_an_image(path, head, "gzip-compressed NIfTI")
        try:
            with gzip.open(path, "rb") as f:
                inner = f.read(540)
        except (OSError, EOFError) as e:
            return f"NIfTI file {path} is damaged: its gzip stream cannot be read ({_reason(e, path)})"
        return None if _is_nifti(inner) else _not_an_image(path, inner, "gzip-compressed NIfTI")
    if kind == "itk":
        if head.startswith(b"NRRD") and path.name.lower().endswith((".nrrd", ".nhdr")):
            return None
        if re.search(rb"(?m)^\s*NDims\s*=", head) and re.search(rb"(?m)^\s*ElementDataFile\s*=", head):
            return None
        return _not_an_image(path, head, "NRRD" if path.name.lower().endswith((".nrrd", ".nhdr")) else "MHA/MHD")
    if kind == "picture":
        return None if head.startswith(_PICTURE_MAGIC) else _not_an_image(path, head, "a PNG, JPEG, TIFF or BMP picture")
    if kind == "series-ref":
        if path.stat().st_size > MAX_SERIES_REF_BYTES:
            return f"not an image file: {path} is {path.stat().st_size:,} bytes, too large for a series reference"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _not_an_image(path, head, "a series reference")
        if not isinstance(data, dict) or data.get("format", SERIES_REF_FORMAT) != SERIES_REF_FORMAT:
            return f"not an image file: {path} is JSON but not a radpipe series reference; re-run radpipe scan"
        return None
    return None if _looks_like_dicom(head) else _not_an_image(path, head)


def _reason(e: BaseException, path: Path | str) -> str:
    text = _ITK_NOISE.sub("", " ".join(str(e).split())) or type(e).__name__
    if str(path):
        text = text.removeprefix(f"{path}: ").removeprefix(f"{path} ")
    return text[:400]


def image_file_problem(path: str, deep: bool = False) -> str | None:
    """What is wrong with one image path (None when it reads).

    Args:
        path: the image cell, resolved (a file, a DICOM series folder or a ``*.series.json``).
        deep: decode every voxel (:func:`transforms.readers.load_volume`) instead of header + first slice.

    Returns:
        A one-line message naming the file and what is wrong, or None.
    """
    p = Path(path)
    if not p.exists():
        return f"file not found: {path}"
    kind = image_kind(p)
    if kind != "dicom-folder" and not p.is_file():
        return f"not an image file: {path} is not a regular file (a device, pipe or socket)"
    if kind != "dicom-folder" and p.stat().st_size == 0:
        return f"file is empty: {path}"
    what = {"dicom-folder": "DICOM series folder", "series-ref": "series reference", "itk": "image",
            "dicom": "DICOM file", "picture": "picture"}.get(kind, "NIfTI file")
    try:
        problem = content_problem(p, kind)
        if problem is None:
            problem = _decode_deep(p, kind) if deep else _decode_first_slice(p, kind)
    except MemoryError:
        return (f"{what} {path}: decoding it ran out of memory; lower RADPIPE_MAX_VOXELS to refuse images this "
                "large, or check it where more memory is free")
    except NotAnImageError as e:
        return f"{what} {path} holds no DICOM image: {_reason(e, p).replace('; not an image, skipped', '')}"
    except Exception as e:  # noqa: BLE001 - any failure of a user's file is reported, not raised
        if kind == "dicom" and "not a DICOM file" in str(e):
            return _not_an_image(p, _head(p))
        return f"{what} {path} cannot be read: {_reason(e, p)}"
    return problem


#: Files checked one after the other before :func:`image_file_problems` decides whether threads would pay.
PROBE_FILES = 32
#: Median seconds per probed file from which the remaining files are checked by a thread pool: a file that takes
#: longer waits on storage (a network share), not on the CPU; local NIfTI files take about 0.7 ms.
SLOW_FILE_S = 0.004


def image_file_problems(paths: Sequence[str], deep: bool = False, workers: int = 8) -> list[str | None]:
    """:func:`image_file_problem` of every path, in order.

    The first :data:`PROBE_FILES` are checked in this thread; the rest go to ``workers`` threads only when those
    took a median of :data:`SLOW_FILE_S` or more (the median: the first file also pays for importing its reader).
    Decoding local files is CPU work that holds the GIL, so threads cost more than they save there
    (PneumoniaMNIST's 5,232 files: 9.3 s wall and 11.2 s CPU with 8 threads, 3.9 s in one;
    ``benchmarks/file_check.py``); reading from a slow share is waiting, which threads overlap.
    """
    found: list[str | None] = []
    seconds = []
    for path in paths[:PROBE_FILES]:
        start = time.perf_counter()
        found.append(image_file_problem(path, deep))
        seconds.append(time.perf_counter() - start)
    rest = paths[PROBE_FILES:]
    slow = bool(seconds) and sorted(seconds)[len(seconds) // 2] >= SLOW_FILE_S
    if rest and slow and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found += list(pool.map(lambda path: image_file_problem(path, deep), rest))
    else:
        found += [image_file_problem(path, deep) for path in rest]
    return found


def _decode_first_slice(p: Path, kind: str) -> str | None:
    if kind in ("nifti", "nifti-gz"):
        return _nifti_first_slice(p, kind == "nifti-gz")
    if kind == "itk":
        return _itk_whole(p)
    if kind == "picture":  # header and voxel limit checked first; pictures are decoded whole (no slice to stop at)
        from transforms.image_files import load_picture

        load_picture(p)
        return None
    if kind == "dicom":
        from transforms.dicom.scan_fields import read_header_fast
        from transforms.dicom.volume import load_series

        read_header_fast(p)  # not DICOM, not an image, truncated pixel data
        load_series([p])
        return None
    files = read_series_ref(p) if kind == "series-ref" else _series_folder_files(p)
    if not files:
        return f"DICOM series folder is empty: {p}"
    _first_file_of_one_series(files, ref_part(p) if kind == "series-ref" else None, str(p),
                              skip_non_dicom=kind == "dicom-folder")
    return None


def _decode_deep(p: Path, kind: str) -> str | None:
    from transforms.readers import load_volume

    if kind == "nifti-gz":
        problem = _gzip_problem(p, None)[1]
        if problem:
            return f"NIfTI file {p} is {problem}; copy or export it again"
    load_volume(p)
    return None


def _gzip_problem(path: Path, stop_at: int | None) -> tuple[int, str | None]:
    """Decompress (up to ``stop_at`` bytes, or all, every CRC checked); the exact byte count and a problem or None.

    Input is fed 16 KiB at a time, so one step yields at most about 16 MiB (deflate expands at most ~1032x);
    members written one after another count as one stream, zero padding after the last is ignored.
    """
    import zlib

    total, stream = 0, None
    with open(path, "rb") as f:
        while pending := f.read(1 << 14):
            while pending:
                if stream is None:
                    if not pending.strip(b"\x00"):
                        break
                    stream = zlib.decompressobj(31)
                try:
                    total += len(stream.decompress(pending))
                except zlib.error as e:
                    return total, f"damaged: its gzip stream fails after {total:,} bytes ({e})"
                if stop_at is not None and total >= stop_at:
                    return total, None
                pending = b""
                if stream.eof:
                    pending, stream = stream.unused_data, None
    if stream is not None:
        return total, f"truncated: its gzip stream ends after {total:,} bytes, before its end marker"
    return total, None


def _nifti_first_slice(p: Path, compressed: bool) -> str | None:
    import nibabel as nib

    from transforms.limits import check_image_header

    claim = check_image_header(p)  # NIfTI header, extensions, voxel limit, size of an uncompressed file
    if claim is None:  # not reached: a .nii / .nii.gz name always gives a claim
        return None
    if 0 in claim.shape:
        return f"NIfTI file {p} holds no voxels (shape {'x'.join(map(str, claim.shape))})"
    img: Any = nib.load(str(p))
    needed = int(img.dataobj.offset) + claim.decoded_bytes  # nibabel's offset: vox_offset 0 means "after the header"
    if compressed:
        with open(p, "rb") as f:
            f.seek(-4, os.SEEK_END)
            trailer = struct.unpack("<I", f.read(4))[0]  # the uncompressed length, modulo 2**32
        if trailer != needed % (1 << 32):
            total, problem = _gzip_problem(p, needed)
            if problem and problem.startswith("damaged"):
                return f"NIfTI file {p} is {problem}; copy or export it again"
            if total < needed:
                shape = "x".join(map(str, claim.shape))
                return (f"NIfTI file {p} is truncated: its header claims {shape} {claim.dtype} ({needed:,} bytes "
                        f"with the header) but it decompresses to {total:,}; copy or export it again")
    if math.prod(claim.shape[:2]) * claim.itemsize > MAX_CHECKED_SLICE_BYTES:
        return None  # header and size hold; one slice this large is left to the readers (and --deep)
    img.dataobj[(slice(None), slice(None), *([0] * (len(claim.shape) - 2)))]
    return None


def _itk_whole(p: Path) -> str | None:
    """NRRD / MHA / MHD: header and voxel limit checked, then decoded whole.

    ITK reads the first slice of a truncated raw file without complaint (and streams no compressed one),
    so a first-slice read would pass files training cannot read; these formats are rare enough to decode.
    """
    from transforms.limits import itk_header

    reader, _ = itk_header(p)  # header, voxel limit
    size = list(reader.GetSize())
    if 0 in size:
        return f"image {p} holds no voxels (size {'x'.join(map(str, size))})"
    reader.Execute()
    return None


def _series_folder_files(folder: Path) -> list[Path]:
    """The files the series-folder reader considers: hidden files and known non-DICOM suffixes left out.

    Raises:
        DicomReadError: more than :data:`MAX_FOLDER_FILES` files (the folder of a whole export, not of a series).
    """
    found = []
    for f in folder.rglob("*"):
        if f.is_file() and not f.name.startswith(".") and not f.name.lower().endswith(_NOT_DICOM_SUFFIXES):
            found.append(f)
            if len(found) > MAX_FOLDER_FILES:
                raise DicomReadError(f"holds more than {MAX_FOLDER_FILES:,} files; a series folder holds the files "
                                     "of one series: run radpipe scan and use its .series.json files")
    return sorted(found)


def _first_file_of_one_series(files: list[Path], part: str | None, where: str, *, skip_non_dicom: bool) -> None:
    """Read every header, assemble the one series the loader would, check its size, decode its first file.

    Raises:
        NotAnImageError: no file holds an image (SR, presentation states, a README ...).
        DicomReadError: damaged files, several series, a series that cannot be assembled or is over the limit.
    """
    from transforms.dicom.scan_fields import read_header_fast
    from transforms.dicom.series import assemble_series
    from transforms.dicom.volume import check_series_size, describe_several, load_series

    headers, skipped = [], []
    for f in files:
        try:
            headers.append(read_header_fast(f))
        except NotAnImageError as e:
            skipped.append((f, e))
        except DicomReadError as e:
            if not (skip_non_dicom and "not a DICOM file" in str(e)):
                raise
            skipped.append((f, e))
    if not headers:
        first = f"{skipped[0][0].name}: {_reason(skipped[0][1], skipped[0][0])}" if skipped else "no files"
        raise NotAnImageError(f"{len(skipped)} file(s), none an image (first: {first}); point the cell at the "
                              "folder or .series.json of an image series")
    found = assemble_series(headers)
    if len(found) > 1 and part:
        found = [s for s in found if s.uid.endswith("_" + part)] or found
    if len(found) > 1:
        raise DicomReadError(describe_several(found, where=where))
    series = found[0]
    if series.status == "error":
        raise DicomReadError(f"the series cannot be assembled: {'; '.join(series.problems)}")
    check_series_size(series)
    load_series([series.planes[0].path])
