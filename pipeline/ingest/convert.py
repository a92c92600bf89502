"""``radpipe convert``: one NIfTI (``.nii.gz``) plus a BIDS-style JSON sidecar per DICOM series.

Like dcm2niix, but named by pseudonymised keys (``<patient_key>_<series_key>.nii.gz``) and with
the series assembly of :mod:`transforms.dicom.series` (slices sorted by position, missing slices
and tilt reported). Series are converted in parallel worker processes; a series that fails is
listed in ``OUT_DIR/index.csv`` with its reason and never stops the batch.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import __version__
from pipeline.files import atomic_open, atomic_path, write_atomic
from pipeline.locks import output_lock
from pipeline.progress import progress
from pipeline.pseudonym import Pseudonymiser
from pipeline.ingest.scan import collect_headers, default_workers
from pipeline.ingest.rows import patient_key, series_problems
from transforms.dicom.series import SeriesInfo, assemble_series
from transforms.nifti_write import save_nifti

log = logging.getLogger("radpipe")

CONVERT_COLUMNS = ("patient_key", "study_key", "series_key", "accession_key", "modality", "series_description",
                   "status", "nifti", "sidecar", "shape", "spacing", "orientation", "problems", "error")
CACHE_NAME = ".convert-scan-cache.json"


@dataclass
class ConvertSummary:
    """What :func:`convert_export` wrote.

    Attributes:
        out_dir: the output folder.
        index_csv: ``out_dir/index.csv``, one row per series (written or failed).
        n_series: series found.
        n_written: NIfTI files written.
        n_failed: series that could not be converted (see their ``error``).
        seconds: wall time.
        rows: the rows of ``index.csv``.
    """

    out_dir: Path
    index_csv: Path
    n_series: int
    n_written: int
    n_failed: int
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def lines(self) -> list[str]:
        """The summary as printed by ``radpipe convert``."""
        return [f"series: {self.n_series}, written: {self.n_written}, failed: {self.n_failed}",
                f"time: {self.seconds:.1f} s", f"index: {self.index_csv}"]


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 6)


def sidecar(info: SeriesInfo, keys: dict[str, str], problems: list[str],
            philips_fp: bool | None = None) -> dict[str, Any]:
    """BIDS-style sidecar of a series (times in seconds, as BIDS wants); no identifiers but keys.

    ``philips_fp``: for a Philips series with a private scale slope, whether its values are Philips'
    floating-point ones (dcm2niix's ``UsePhilipsFloatNotDisplayScaling``); ``None`` for any other series.
    """
    h = info.header
    data: dict[str, Any] = {
        "Modality": h.modality, "Manufacturer": h.manufacturer, "ManufacturersModelName": h.model,
        "InstitutionName": h.institution, "BodyPartExamined": h.body_part, "SeriesDescription": h.series_description,
        "ProtocolName": h.protocol_name, "SeriesNumber": h.series_number, "ImageType": list(h.image_type),
        "SliceThickness": h.slice_thickness, "SpacingBetweenSlices": round(float(np.linalg.norm(info.slice_step)), 6),
        "EchoTime": _seconds(h.echo_time), "RepetitionTime": _seconds(h.repetition_time),
        "InversionTime": _seconds(h.inversion_time), "FlipAngle": h.flip_angle,
        "MagneticFieldStrength": h.field_strength, "KVP": h.kvp, "ConvolutionKernel": h.convolution_kernel,
        "ImageOrientationPatientDICOM": [round(v, 8) for v in (*info.row_cosines, *info.column_cosines)],
        "VoxelSpacing": [round(float(v), 6) for v in info.spacing], "Shape": list(info.shape),
        "Orientation": info.orientation_label, "TransferSyntaxUID": h.transfer_syntax,
        "ConversionSoftware": "radpipe", "ConversionSoftwareVersion": __version__,
        "PatientKey": keys["patient_key"], "StudyKey": keys["study_key"], "SeriesKey": keys["series_key"],
        "Status": keys["status"], "Problems": problems,
    }
    if info.n_timepoints > 1 and info.temporal_spacing:
        data["TemporalSpacing"] = info.temporal_spacing
    if h.gantry_tilt:
        data["GantryDetectorTilt"] = h.gantry_tilt
    if philips_fp is not None:
        data["UsePhilipsFloatNotDisplayScaling"] = int(philips_fp)
    return {k: v for k, v in data.items() if v not in (None, "")}


def write_nifti(volume: np.ndarray, affine: np.ndarray, path: Path, temporal_spacing: float | None = None) -> None:
    """Save ``volume`` (x, y, z[, t]) with its RAS ``affine`` as NIfTI-1 (sform and qform: scanner).

    Written by :func:`transforms.nifti_write.save_nifti`, the bytes nibabel writes, without nibabel's 0.2 s
    import in every worker process.
    """
    with atomic_path(path, durable=False) as tmp:  # per series, like dcm2niix; convert's index.csv is durable
        save_nifti(volume, affine, tmp, temporal_spacing)


def _convert_one(info: SeriesInfo, row: dict[str, Any], out_dir: str, problems: list[str],
                 philips_scaling: str = "display") -> dict[str, Any]:
    """Load one series, write its NIfTI and sidecar (worker process); failures fill ``error``."""
    from transforms.dicom.rescale import uses_philips_scale
    from transforms.dicom.volume import load_series

    stem = f"{row['patient_key']}_{row['series_key']}"
    nifti, side = Path(out_dir) / f"{stem}.nii.gz", Path(out_dir) / f"{stem}.json"
    try:
        volume, affine, _ = load_series(info, philips_scaling=philips_scaling)
        write_nifti(volume, affine, nifti, info.temporal_spacing)
        philips_fp = philips_scaling == "fp" if uses_philips_scale(info) else None
        write_atomic(side, json.dumps(sidecar(info, row, problems, philips_fp), indent=2), durable=False)
    except Exception as e:  # noqa: BLE001 - one failing series never aborts the batch
        for partial in (nifti, side):
            partial.unlink(missing_ok=True)
        message = " ".join(str(e).split())
        return {**row, "status": "failed", "error": f"{type(e).__name__}: {message}"}
    return {**row, "nifti": nifti.name, "sidecar": side.name, "shape": "x".join(map(str, volume.shape))}


def _run(jobs: list[tuple[SeriesInfo, dict[str, Any], list[str]]], out_dir: Path,
         workers: int, philips_scaling: str) -> Iterator[dict[str, Any]]:
    if workers <= 1 or len(jobs) < 2:
        for info, row, problems in progress(jobs, desc="converting"):
            yield _convert_one(info, row, str(out_dir), problems, philips_scaling)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_convert_one, info, row, str(out_dir), problems, philips_scaling)
                   for info, row, problems in jobs]
        for future in progress(futures, desc="converting"):
            yield future.result()


def convert_export(export_dir: str | Path, out_dir: str | Path, *, workers: int | None = None,
                   keep_identifiers: bool = False, pseudonymiser: Pseudonymiser | None = None,
                   follow_links: bool = False, philips_scaling: str = "display") -> ConvertSummary:
    """Convert every image series under ``export_dir`` to ``out_dir/<patient_key>_<series_key>.nii.gz`` + ``.json``.

    Args:
        export_dir: the DICOM export folder.
        out_dir: output folder (created); also gets ``index.csv`` and a header cache.
        workers: processes reading headers and converting series (default :func:`~pipeline.ingest.scan.default_workers`).
        keep_identifiers: name files by identifiers in clear (an explicit, logged opt-out).
        pseudonymiser: the key maker (default: the secret of ``$RADPIPE_SECRET_FILE``).
        follow_links: read files and walk folders that links in the export point to outside it.
        philips_scaling: ``"display"`` (DICOM's values) or ``"fp"`` (Philips' floating-point values, as
            dcm2niix's default ``-p y``); see :func:`transforms.dicom.volume.load_series`.

    Returns:
        A :class:`ConvertSummary`.

    Raises:
        DicomReadError: ``export_dir`` is not a folder.
        OutputLockedError: another convert is writing ``out_dir``.
    """
    start = time.monotonic()
    workers = workers or default_workers()
    if pseudonymiser is None:
        pseudonymiser = Pseudonymiser(keep_identifiers=keep_identifiers)
    if pseudonymiser.keep_identifiers:
        log.warning("convert: --keep-identifiers: file names and the index hold identifiers IN CLEAR")
    out = Path(out_dir)
    with output_lock(out / "index.csv", "convert"):
        return _convert(export_dir, out, workers, pseudonymiser, start, follow_links, philips_scaling)


def _convert(export_dir: str | Path, out: Path, workers: int, pseudonymiser: Pseudonymiser,
             start: float, follow_links: bool, philips_scaling: str) -> ConvertSummary:
    _, entries, _ = collect_headers(export_dir, workers=workers, pseudonymiser=pseudonymiser,
                                    cache_path=out / CACHE_NAME, exclude=[out], follow_links=follow_links)
    series = assemble_series(e.header for e in entries.values() if e.header is not None)
    jobs = []
    for info in series:
        h = info.header
        status, problems = series_problems(info)
        row = {"patient_key": patient_key(h, pseudonymiser), "study_key": pseudonymiser.key(h.study_uid, "study"),
               "series_key": pseudonymiser.key(info.uid, "series"), "accession_key": h.accession_number,
               "modality": h.modality, "series_description": h.series_description, "status": status,
               "nifti": "", "sidecar": "", "shape": "", "spacing": "x".join(f"{v:.3f}" for v in info.spacing),
               "orientation": info.orientation_label, "problems": "; ".join(problems), "error": ""}
        jobs.append((info, row, problems))
    rows = list(_run(jobs, out, workers, philips_scaling))
    rows.sort(key=lambda r: (r["patient_key"], r["study_key"], r["series_key"]))
    index = out / "index.csv"
    with atomic_open(index, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CONVERT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    n_failed = sum(r["status"] == "failed" for r in rows)
    return ConvertSummary(out_dir=out, index_csv=index, n_series=len(rows), n_written=len(rows) - n_failed,
                          n_failed=n_failed, seconds=time.monotonic() - start, rows=rows)
