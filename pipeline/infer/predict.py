"""``radpipe predict``: batch inference over new scans, one row per series, resumable.

Output ``PREDICTIONS.csv``: ``series_id`` (the stable id of a series; see
:mod:`pipeline.infer.inputs`), the input's key columns, ``pred``, ``threshold`` (binary: the run's
operating point, see :mod:`pipeline.operating_point`, or ``--threshold``), ``prob_<class>``, ``status``
(``ok`` / ``error``) and ``error`` (why). An input holding no image at all stops the command (exit 2). A
series that cannot be read, fails a check or fails in the transform chain gets a row with status ``error`` and
never stops the batch. Input files and series that are not predicted at all (non-image objects, unreadable or
non-DICOM files, series the run's selection rule leaves out) are listed with the reason in
``<out stem>.skipped.csv``, so every input file is accounted for.

Rows are appended and fsync'ed batch by batch; a re-run after a kill repairs a half-written last
line and skips the ids already written. When every case is done the file is rewritten sorted by
``series_id`` and ``<out stem>.done.json`` is written. ``--shard i/n`` (or torchrun's
``RANK``/``WORLD_SIZE``) predicts the ids whose hash falls in shard ``i`` into
``<out stem>.part-i-of-n.csv``; ``radpipe predict-merge`` joins the parts into a file equal to an
unsharded run's.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Config
from pipeline.errors import ImageReadError
from pipeline.files import file_digest, remove_stale_temporaries
from pipeline.infer.batching import (
    CaseDataset,
    Predictor,
    default_workers,
    describe_error,
    device_for_run,
    expected_input_shape,
    inference_threads,
    iterate_predictions,
    make_case_loader,
    prediction_columns,
    prediction_fields,
    resolve_tta,
)
from pipeline.infer.cam import CamMaker, cam_class_index, save_cam
from pipeline.infer.dicom_inputs import discover_dicom
from pipeline.infer.inputs import (
    SKIPPED_COLUMNS,
    PredictInput,
    discover_manifest,
    discover_nifti,
    input_kind,
)
from pipeline.infer.prediction_file import (
    ResumableCsvWriter,
    finalize,
    in_shard,
    part_path,
    read_rows,
    shard_from_env,
    sibling,
    write_skipped,
)
from pipeline.locks import output_lock
from pipeline.manifest.labels import LabelMap
from pipeline.operating_point import resolve_threshold
from pipeline.progress import progress_of
from pipeline.train.run_dir import load_run
from transforms.limits import max_voxels

log = logging.getLogger("radpipe")


@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict` did.

    Attributes:
        out: the predictions file written (a part file when sharded).
        skipped_file: the list of inputs not predicted.
        n_rows: rows in ``out``.
        n_ok: rows with status ok.
        n_error: rows with status error.
        n_skipped: entries of the skipped list.
        n_resumed: rows already in ``out`` from an earlier, interrupted run.
        shard: ``(i, n)`` or None.
        seconds_inputs: time spent finding the cases (the scan of a DICOM export included).
        seconds_inference: time spent reading, preprocessing and predicting them.
    """

    out: Path
    skipped_file: Path
    n_rows: int
    n_ok: int
    n_error: int
    n_skipped: int
    n_resumed: int
    shard: tuple[int, int] | None
    seconds_inputs: float = 0.0
    seconds_inference: float = 0.0


def discover(input_path: str | Path, cfg: Config, work_dir: str | Path, workers: int = 0,
             modality: str | None = None, rule: str | None = None, run_dir: str | Path | None = None
             ) -> PredictInput:
    """The cases of a predict input of any kind (see the module docstring).

    Args:
        input_path: DICOM export folder, NIfTI folder or manifest CSV.
        cfg: the run's config.
        work_dir: where a DICOM scan writes its index (kept, so a re-run rescans incrementally).
        workers: scan worker processes.
        modality: DICOM only: override the selection's modalities (comma-separated, ``any`` for all).
        rule: DICOM only: override the selection rule (``all``, ``largest-series``, ``first``, ``description:RE``).
        run_dir: the run (for its ``selection.json``).
    """
    kind = input_kind(input_path)
    if kind == "manifest":
        return discover_manifest(input_path, cfg)
    if kind == "nifti":
        return discover_nifti(input_path, cfg)
    return discover_dicom(input_path, cfg, work_dir, workers, modality=modality, rule=rule, run_dir=run_dir)


def predict(run_dir: str | Path, input_path: str | Path, out: str | Path, *, batch_size: int | None = None,
            workers: int | None = None, shard: tuple[int, int] | None = None, cam_dir: str | Path | None = None,
            device: str | None = None, modality: str | None = None, rule: str | None = None,
            threshold: float | str | None = None, tta: bool | None = None,
            tta_views: str | None = None) -> PredictSummary:
    """Predict every series of an input with a trained run (see the module docstring).

    Args:
        run_dir: the run directory (``radpipe train --out``).
        input_path: DICOM export folder, NIfTI folder or manifest CSV.
        out: the predictions CSV (``<stem>.part-i-of-n.csv`` is written instead when sharded).
        batch_size: series per batch; None: the run's ``train.batch_size``.
        workers: loader processes reading and preprocessing; None: :func:`default_workers`.
        shard: ``(i, n)``: predict only shard ``i`` of ``n``; None: all (or torchrun's rank).
        cam_dir: write Grad-CAM maps (NIfTI + PNG) per series there.
        device: ``auto``, ``cpu`` or ``cuda``; None: the run's ``train.device``.
        modality: DICOM input: modalities to predict, comma-separated or ``any`` (overrides the run's selection).
        rule: DICOM input: ``all``, ``largest-series``, ``first`` or ``description:REGEX`` (overrides the run's
            selection).
        threshold: binary: a probability applied for ``pred``, or ``argmax``; None: the run's operating point.
        tta, tta_views: test-time augmentation as ``evaluate`` has it; None: the run's ``eval.tta`` and
            ``eval.tta_views``, so a case gets the probability ``evaluate`` gives it (and the operating point,
            fixed on ``evaluate --split val``, applies to the same kind of probability).

    Raises:
        RunError: the run's files are missing or inconsistent.
        PredictionFileError: ``out`` exists with other columns or holds rows of another run, checkpoint or input.
        OutputLockedError: another predict is writing ``out``.
        ImageReadError: the input holds no image.
    """
    max_voxels()  # a bad RADPIPE_MAX_VOXELS stops the command here, not as an error on every case
    run = load_run(run_dir, device=device_for_run(run_dir, device))
    cut, why = resolve_threshold(run_dir, run.label_map.task, run.label_map.classes, threshold)
    log.info("predict: %s", why)
    shard = shard or shard_from_env()
    target = part_path(out, *shard) if shard else Path(out)
    n_workers = default_workers() if workers is None else workers
    views = resolve_tta(run.cfg.eval, tta, tta_views)
    with output_lock(target, "predict"):
        return _predict_into(target, run, run_dir, input_path, shard, n_workers, batch_size, cam_dir, modality, rule,
                             cut, views)


def _predict_into(target: Path, run: Any, run_dir: str | Path, input_path: str | Path, shard: tuple[int, int] | None,
                  n_workers: int, batch_size: int | None, cam_dir: str | Path | None, modality: str | None,
                  rule: str | None, threshold: float | None, views: str = "") -> PredictSummary:
    """The body of :func:`predict`, run while it holds the lock of ``target``."""
    cfg, labels = run.cfg, run.label_map
    start = time.perf_counter()
    source = discover(input_path, cfg, work_dir=target.with_name(f"{target.stem}.scan"), workers=max(1, n_workers),
                      modality=modality, rule=rule, run_dir=run_dir)
    seconds_inputs = time.perf_counter() - start
    if not source.cases:
        skipped = ""
        if source.skipped:
            write_skipped(sibling(target, "skipped"), SKIPPED_COLUMNS, source.skipped)
            skipped = f" ({len(source.skipped)} file(s) not predicted, why: {sibling(target, 'skipped')})"
        raise ImageReadError(f"no images found in {input_path}{skipped}; give a folder of scans or images, or a "
                             "manifest .csv")
    cases = [c for c in source.cases if not shard or in_shard(c.id, *shard)]
    columns = ["series_id", *source.key_columns, *prediction_columns(labels.task, labels.classes), "status", "error"]
    job = {"run": str(Path(run_dir).resolve()), "input": str(Path(input_path).resolve()),
           "checkpoint_sha1": file_digest(run.run_dir / "checkpoints" / "best.pt", "sha1"),
           "shard": list(shard) if shard else None, "threshold": "argmax" if threshold is None else threshold}
    if views:  # rows predicted with other TTA are not resumed into this file
        job["tta"] = views
    remove_stale_temporaries(target.parent)  # of a predict killed while writing its files
    writer = ResumableCsvWriter(target, columns, job=job)
    resumed = len(writer.done)
    todo = [c for c in cases if c.id not in writer.done]
    log.info("predict: %d series (%d already done), %d skipped input(s)", len(cases), len(cases) - len(todo),
             len(source.skipped))
    predictor = Predictor.for_run(run, views)
    cams = None
    if cam_dir is not None:
        cams = CamMaker(run.model, run.device, layer=cfg.model.cam_layer)
    size = batch_size or cfg.train.batch_size
    dataset = CaseDataset(todo, run.infer_transform, expected_input_shape(run.model, cfg.transforms.size),
                          scrub=source.scrub)
    loader = make_case_loader(dataset, size, n_workers, pin_memory=run.device.type == "cuda")
    started = time.perf_counter()
    with inference_threads(run.device, n_workers):
        try:
            _run_batches(loader, predictor, writer, source, labels, cams, cam_dir, cfg.transforms.orientation,
                         total=len(todo), threshold=threshold)
        finally:
            writer.close()
    seconds = time.perf_counter() - started
    skipped_file = sibling(target, "skipped")
    write_skipped(skipped_file, SKIPPED_COLUMNS, source.skipped)
    n_rows = finalize(target, summary={**job, "input_kind": source.kind, "skipped": len(source.skipped)},
                      keep={c.id for c in cases})
    _, rows, _ = read_rows(target)
    n_ok = sum(r["status"] == "ok" for r in rows)
    return PredictSummary(target, skipped_file, n_rows, n_ok, n_rows - n_ok, len(source.skipped), resumed, shard,
                          seconds_inputs, seconds)


def _run_batches(loader: torch.utils.data.DataLoader, predictor: Predictor, writer: ResumableCsvWriter,
                 source: PredictInput, labels: LabelMap, cams: CamMaker | None, cam_dir: str | Path | None,
                 orientation: str, total: int, threshold: float | None = None) -> None:
    """Predict every batch of ``loader`` and append its rows (good cases and errors) to ``writer``.

    ``total`` is the number of series; the progress counts series, not batches.
    """
    with progress_of(total, desc="predict") as advance:
        for batch, probs in iterate_predictions(loader, predictor):
            rows = []
            for i, case_id in enumerate(batch.ids):
                fields = prediction_fields(labels.task, labels.classes, probs[i], threshold)
                note = ""
                if cams is not None:
                    note = _write_cam(cams, cam_dir, case_id, batch.images[i], batch.affines[i], probs[i],
                                      labels.task, fields, orientation, source.scrub)
                rows.append({"series_id": case_id, **source.keys[case_id], **fields, "status": "ok", "error": note})
            for case_id, error in batch.errors:
                rows.append({"series_id": case_id, **source.keys[case_id], "status": "error", "error": error})
            writer.write_rows(rows)
            advance(len(batch.ids) + len(batch.errors))


def _write_cam(cams: CamMaker, cam_dir: str | Path | None, case_id: str, image: torch.Tensor,
               affine: torch.Tensor | None, probs: np.ndarray, task: str, fields: dict[str, str], orientation: str,
               scrub: Callable[[str], str] | None) -> str:
    """Write one series' Grad-CAM; a failure is noted in the row's error cell, the prediction stays."""
    try:
        index = cam_class_index(task, probs)
        cam = cams(image, index)
        prob = fields.get(f"prob_{fields['pred']}", "")
        save_cam(cam_dir, case_id, image, cam, affine, title=f"{case_id}: {fields['pred']} {prob}".strip(),
                 orientation=orientation, layer=cams.layer)
    except Exception as e:  # noqa: BLE001 - a heat map never costs the prediction
        return f"Grad-CAM failed: {describe_error(e, scrub)}"
    return ""
