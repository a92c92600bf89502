"""``radpipe evaluate``: predictions of a trained run on one split of a manifest.

The run's best checkpoint runs over the rows of the chosen split (every row when the manifest
has no ``split`` column) with the run's eval chain (its deterministic preprocessing; the label
is not needed to predict). The output has one row per case in manifest order: every manifest
column as written (relative image paths stay relative), then ``pred``, ``threshold`` (binary) and
``prob_<class>`` (see :mod:`pipeline.infer.batching` for the conventions). Evaluating the ``val`` split of
a binary run fixes its operating point on these predictions (``eval.threshold``) and records it in
``RUN_DIR/operating_point.json`` (:mod:`pipeline.operating_point`); a binary ``pred`` applies the run's
operating point (``--threshold X|argmax`` overrides it). With ``--tta`` probabilities are averaged over
the image and its flips along each spatial axis. The file is written atomically, after every
case has been predicted; a case that cannot be read stops the command with every failing row
listed (an evaluation must cover the whole split).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ImageReadError, ManifestError, format_problems
from pipeline.infer.batching import (
    PROB_DECIMALS,
    Case,
    CaseDataset,
    Predictor,
    default_workers,
    device_for_run,
    expected_input_shape,
    inference_threads,
    iterate_predictions,
    make_case_loader,
    prediction_columns,
    prediction_fields,
    resolve_tta,
)
from pipeline.infer.prediction_file import write_csv_atomic
from pipeline.manifest.labels import normalise_label
from pipeline.manifest.reading import load_manifest, read_manifest_csv
from pipeline.manifest.schema import SPLIT_SYNONYMS
from pipeline.operating_point import (
    OperatingPoint,
    fix_operating_point,
    resolve_threshold,
    write_operating_point,
)
from pipeline.progress import progress
from pipeline.train.run_dir import load_run

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import Config

log = logging.getLogger("radpipe")


@dataclass(frozen=True)
class EvaluateSummary:
    """What :func:`evaluate` wrote: the output path, cases predicted, split, whether TTA was on, the threshold
    applied (None: argmax) and the operating point fixed (``val`` split of a binary run)."""

    out: Path
    n_cases: int
    split: str
    tta: bool
    threshold: float | None = None
    operating_point: OperatingPoint | None = None


def split_rows(raw: pd.DataFrame, split: str | None) -> tuple[np.ndarray, str]:
    """Rows of ``split`` (split names normalised as in validation); every row without a ``split`` column.

    Raises:
        ManifestError: no row has the split.
    """
    if "split" not in raw.columns or not split:
        return np.arange(len(raw)), "all"
    values = [SPLIT_SYNONYMS.get(str(v).strip().lower(), str(v).strip().lower()) for v in raw["split"]]
    wanted = SPLIT_SYNONYMS.get(split.lower(), split.lower())
    index = np.array([i for i, v in enumerate(values) if v == wanted], dtype=int)
    if index.size == 0:
        found = sorted(set(values))
        raise ManifestError(
            f"manifest has no row of split '{split}' (column 'split' holds {found}); choose one with --split"
        )
    return index, wanted


def evaluate(run_dir: str | Path, manifest: str | Path, out: str | Path, split: str | None = None,
             tta: bool | None = None, batch_size: int | None = None, workers: int | None = None,
             device: str | None = None, threshold: float | str | None = None,
             tta_views: str | None = None) -> EvaluateSummary:
    """Predict every case of one split of a manifest with a trained run.

    Args:
        run_dir: the run directory.
        manifest: the manifest CSV.
        out: the predictions CSV (written atomically).
        split: the split to evaluate; None: the run's ``eval.split``.
        tta: test-time augmentation; None: the run's ``eval.tta``.
        tta_views: ``flips`` or ``dihedral`` (:func:`~pipeline.infer.batching.tta_views`); None: the run's
            ``eval.tta_views``.
        batch_size: cases per batch; None: the run's ``train.batch_size``.
        workers: loader processes; None: :func:`~pipeline.infer.batching.default_workers`.
        device: ``auto``, ``cpu`` or ``cuda``; None: the run's ``train.device``.
        threshold: binary: a probability applied for ``pred``, or ``argmax``; None: the run's operating point
            (the one fixed now when the split is ``val``).

    Raises:
        RunError: the run is incomplete or inconsistent.
        ManifestError: the manifest lacks columns or the split.
        ImageReadError: some cases cannot be read or preprocessed (all listed).
    """
    run = load_run(run_dir, device=device_for_run(run_dir, device))
    cfg, labels = run.cfg, run.label_map
    raw = read_manifest_csv(manifest)
    df = load_manifest(manifest, cfg.data)
    missing = [c for c in cfg.data.image_columns if c not in df.columns]
    if missing:
        raise ManifestError(
            f"manifest {manifest} has no image column(s) {missing} the run takes; found {list(raw.columns)}"
        )
    clashes = [c for c in raw.columns if c in ("pred", "threshold") or c.startswith("prob_")]
    if clashes:
        raise ManifestError(f"manifest {manifest}: columns {clashes} clash with the output columns; rename them")
    index, split_name = split_rows(raw, split if split is not None else cfg.eval.split)
    cases = [_case(i, {c: str(df.iloc[i][c]) for c in cfg.data.image_columns}) for i in index]
    views = resolve_tta(cfg.eval, tta, tta_views)
    predictor = Predictor.for_run(run, views)
    dataset = CaseDataset(cases, run.infer_transform, expected_input_shape(run.model, cfg.transforms.size))
    size = batch_size or cfg.train.batch_size
    loader = make_case_loader(dataset, size, default_workers() if workers is None else workers,
                              pin_memory=run.device.type == "cuda")
    probs: dict[int, np.ndarray] = {}
    problems: list[str] = []
    total = -(-len(cases) // size)
    with inference_threads(run.device, loader.num_workers):
        for batch, batch_probs in progress(iterate_predictions(loader, predictor), total=total, desc="evaluate"):
            probs.update((int(case_id), p) for case_id, p in zip(batch.ids, batch_probs))
            problems += [f"row {int(case_id) + 2}: {error}" for case_id, error in batch.errors]
    if problems:
        raise ImageReadError(
            f"{len(problems)} of {len(cases)} case(s) of {manifest} could not be predicted; fix or remove them "
            f"(radpipe validate-manifest lists unreadable files): {format_problems(sorted(problems))}"
        )
    point = None
    if split_name == "val" and labels.task == "binary" and len(labels.classes) == 2:
        point = _fix_on_validation(run_dir, cfg, labels.classes, df, index, probs)
    cut, why = resolve_threshold(run_dir, labels.task, labels.classes, threshold)
    log.info("evaluate: %s", why)
    columns = list(raw.columns) + prediction_columns(labels.task, labels.classes)
    rows = [{**raw.iloc[i].to_dict(), **prediction_fields(labels.task, labels.classes, probs[int(i)], cut)}
            for i in index]
    write_csv_atomic(out, columns, rows)
    log.info("evaluate: %d case(s) of split %s -> %s%s", len(rows), split_name, out,
             f" (TTA: {views})" if views else "")
    return EvaluateSummary(Path(out), len(rows), split_name, bool(views), cut, point)


def _case(row: int, inputs: dict[str, str]) -> Case:
    """The case of manifest row index ``row``; a missing image file is its error (read by nobody)."""
    missing = [path for path in inputs.values() if path and not Path(path).exists()]
    return Case(str(row), inputs, f"file not found: {missing[0]}" if missing else "")


def _fix_on_validation(run_dir: str | Path, cfg: Config, classes: tuple[str, ...], df: pd.DataFrame,
                       index: np.ndarray, probs: dict[int, np.ndarray]) -> OperatingPoint | None:
    """Fix the run's operating point on the labelled validation cases (probabilities as written) and record it."""
    column = cfg.data.label_columns[0]
    wanted = {normalise_label(c): k for k, c in enumerate(classes)}
    pairs = [(wanted[normalise_label(df.iloc[i][column])], round(float(probs[int(i)][1]), PROB_DECIMALS))
             for i in index if normalise_label(df.iloc[i][column]) in wanted]
    y = np.array([t for t, _ in pairs], dtype=int)
    try:
        point = fix_operating_point(y, np.array([p for _, p in pairs]), cfg.eval.threshold,
                                    cfg.eval.target_sensitivity, positive_class=classes[1],
                                    source="evaluate --split val", split="val")
    except ValueError as e:
        log.warning("evaluate: no operating point fixed on the val split (%s); %s keeps its earlier one, if any",
                    e, run_dir)
        return None
    try:
        path = write_operating_point(run_dir, point)
    except OSError as e:  # a run folder shared read-only: the predictions still count
        log.warning("evaluate: cannot record the operating point in %s (%s); give --threshold %g to predict",
                    run_dir, e.strerror or e, point.threshold)
        return None
    log.info("evaluate: operating point %s -> %s", point.describe(), path)
    return point
