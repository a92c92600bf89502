"""``radpipe report``: read the predictions (and optional validation, comparison and run) and write the report."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from pipeline.config import EvalConfig
from pipeline.errors import ConfigError
from pipeline.operating_point import fix_operating_point, write_operating_point
from pipeline.report.build import build_report
from pipeline.report.inputs import (
    RunInfo,
    parse_predictions,
    read_predictions_csv,
    read_run,
)

log = logging.getLogger("radpipe")


def report_command(args: argparse.Namespace) -> int:
    """Handler of ``radpipe report``; returns the exit status."""
    run = read_run(args.run) if args.run else None
    cfg = run.config.eval if run is not None and run.config is not None else EvalConfig()
    if args.target_sensitivity is not None:
        if not 0.0 < args.target_sensitivity <= 1.0:
            raise ConfigError(f"--target-sensitivity {args.target_sensitivity}: expected a value in (0, 1], e.g. 0.9")
        cfg = dataclasses.replace(cfg, threshold="sensitivity", target_sensitivity=args.target_sensitivity)
    if args.min_cases is not None:
        cfg = dataclasses.replace(cfg, min_cases=args.min_cases)
    if args.bootstrap is not None and args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap}: expected a number of resamples >= 0, e.g. 1000")
    cohorts = list(args.cohort or cfg.cohorts)
    predictions = Path(args.predictions)
    validation = Path(args.threshold_from) if args.threshold_from else None
    compare = Path(args.compare) if args.compare else None
    out = Path(args.out)
    report = build_report(
        read_predictions_csv(predictions),
        cohorts,
        out,
        source=predictions.name,
        validation=read_predictions_csv(validation) if validation else None,
        validation_source=validation.name if validation else "",
        compare=read_predictions_csv(compare) if compare else None,
        compare_source=compare.name if compare else "",
        id_column=args.id_column,
        eval_config=cfg,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        positive=args.positive,
        patient_column=args.patient_column,
        run=run,
    )
    if validation is not None and run is not None and report["task"] == "binary":
        _record_operating_point(run, validation, report, cfg)
    overall = report["overall"]
    if report["task"] == "regression":
        log.info("overall: n=%d MAE %.3f", overall["n"], overall["mae"])
    elif overall["auc"] is not None:
        log.info("overall: n=%d AUC %.3f (95%% CI %s-%s)", overall["n"], overall["auc"],
                 _short(overall["auc_ci_low"]), _short(overall["auc_ci_high"]))
    flagged = sum(bool(set(o["flags"]) - {"threshold_not_from_validation"})
                  for values in report["cohorts"].values() for o in values.values())
    if flagged:
        log.warning("%d cohort group(s) flagged; see report.html", flagged)
    print(f"report written to {out / 'report.html'} (also report.json, metrics.csv)")
    return 0


def _record_operating_point(run: RunInfo, validation: Path, report: dict[str, Any], cfg: EvalConfig) -> None:
    """Record the operating point fixed on ``validation`` in the run's ``operating_point.json``.

    Only for the run's own positive class (the second class), the one ``predict`` and ``evaluate`` threshold.
    """
    if list(report["classes"])[1:] != [report["positive_class"]]:
        log.warning("operating point not recorded in %s: --positive %s is not the run's positive class %s",
                    run.path, report["positive_class"], list(report["classes"])[1:])
        return
    labels = run.labels or {}
    columns = labels.get("label_columns") if isinstance(labels.get("label_columns"), list) else None
    if not columns and run.config is not None:
        columns = list(run.config.data.label_columns)
    val = parse_predictions(read_predictions_csv(validation), validation.name, "binary", report["classes"],
                            report["positive_class"], tuple(columns or ("label",)), classes_from=str(report["source"]))
    point = fix_operating_point(val.truth, val.positive_score, cfg.threshold, cfg.target_sensitivity,
                                positive_class=str(report["positive_class"]), source=validation.name)
    try:
        path = write_operating_point(run.path, point)
    except OSError as e:  # a run folder shared read-only: the report still stands
        log.warning("cannot record the operating point in %s (%s)", run.path, e.strerror or e)
        return
    print(f"operating point {point.describe()} -> {path}")


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
