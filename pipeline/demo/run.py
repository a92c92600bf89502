"""``radpipe demo``: the whole pipeline, end to end, on data it writes itself.

Stages, each run through the same command a researcher would type (and printed as such):

1. a synthetic hospital export (DICOM, three sites, PHI, localizers, stray files), its label sheet, a folder
   of new scans and the true lesion centres (``truth/lesions.csv``, for the pointing game);
2. ``radpipe scan`` -> series index; ``radpipe manifest`` -> manifest; ``radpipe validate-manifest``;
   ``radpipe split`` (patient-grouped, stratified);
3. pretraining on a "public" source task (NIfTI volumes with hypodense cysts), then
   ``radpipe train`` on the hospital task (hyperdense lesions) starting from that backbone;
4. ``radpipe evaluate`` on the validation and test splits; ``radpipe report`` by site and sex with the
   operating point fixed on validation;
5. ``radpipe predict --cam`` over the test split, and the pointing game: the share of correctly predicted
   lesion cases whose Grad-CAM maximum falls within the lesion (radius + one voxel);
6. ``radpipe predict --cam`` over a folder of new scans (including a corrupt file, an incomplete series and
   a non-image object);
7. with ``--pacs`` only: the export stored in a local Orthanc, ``radpipe pull`` by accession over DICOMweb and
   ``radpipe predict --dicom-out --push`` (:mod:`pipeline.demo.pacs_stage`).

Every command is printed as it can be pasted into a shell (:func:`shlex.join`).
"""
from __future__ import annotations

import csv
import json
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.cli import main
from pipeline.demo.pacs_stage import pacs_stage
from pipeline.demo.source import write_source_dataset
from pipeline.demo.synthetic_export import (
    ExportSummary,
    NewScansSummary,
    write_export,
    write_new_scans,
)
from pipeline.demo.truth import write_lesions
from pipeline.errors import PipelineError
from pipeline.infer.pointing import PointingResult, pointing_game, read_lesions

# One preprocessing for both tasks: crop to the body, resample to 6 mm (about the scanners' own
# in-plane spacing, so nothing is upsampled for nothing), soft-tissue window, 32x32x24 voxels.
DEMO_TRANSFORMS: dict[str, Any] = {
    "spatial_dims": 3,
    "orientation": "RAS",
    "crop_foreground": True,
    "spacing": [6.0, 6.0, 6.0],
    "intensity": "ct-abdomen",
    "size": [32, 32, 24],
    "augment": "light",
}

SOURCE_CONFIG: dict[str, Any] = {
    "data": {"task": "binary", "classes": ["normal", "cyst"], "patient_column": "patient_id", "cache": "memory"},
    "transforms": DEMO_TRANSFORMS,
    "model": {"name": "resnet10"},
    "train": {"epochs": 10, "batch_size": 8, "lr": 0.002, "scheduler": "cosine", "warmup_epochs": 1},
}

TARGET_CONFIG: dict[str, Any] = {
    "data": {"task": "binary", "classes": ["normal", "lesion"], "patient_column": "patient_key", "cache": "memory"},
    "transforms": DEMO_TRANSFORMS,
    "model": {"name": "resnet10"},
    "transfer": {"strategy": "finetune", "head_lr": 0.002},
    "train": {"epochs": 12, "batch_size": 8, "lr": 0.001, "scheduler": "cosine", "warmup_epochs": 1},
    "eval": {"cohorts": ["site", "sex"], "bootstrap": 1000},
}


class Demo:
    """Runs the stages into one output folder and prints each command before running it."""

    def __init__(self, out: Path, seed: int, quick: bool = False) -> None:
        self.out = out
        self.seed = seed
        self.quick = quick
        self.start = time.monotonic()
        self.stage = 0

    def say(self, text: str) -> None:
        """Print one line of the demo's narration."""
        print(text, flush=True)

    def step(self, title: str) -> None:
        """Announce the next numbered stage with the seconds elapsed."""
        self.stage += 1
        self.say(f"\n[{self.stage}] {title}  (t = {time.monotonic() - self.start:.0f} s)")

    def run(self, argv: Sequence[str]) -> None:
        """Run one ``radpipe`` command in-process; a failure stops the demo with its message."""
        self.say("    $ " + command_line(argv))
        status = main([str(a) for a in argv])
        if status != 0:
            raise DemoStageError(f"demo stage '{argv[0]}' failed with status {status}; its message is above")

    def config(self, name: str, values: dict[str, Any], epochs: int | None = None) -> Path:
        """Write ``values`` (with the demo's seed and, when given, ``epochs``) as YAML file ``name``; return its path."""
        values = json.loads(json.dumps(values))
        if epochs is not None:
            values["train"]["epochs"] = epochs
        values["train"]["seed"] = self.seed
        path = self.out / name
        path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        return path


class DemoStageError(PipelineError, RuntimeError):
    """A stage of the demo failed."""


def command_line(argv: Sequence[Any]) -> str:
    """``radpipe ARGS`` quoted for a POSIX shell, so it can be pasted as printed."""
    return shlex.join(["radpipe", *(str(a) for a in argv)])


def run_demo(out_dir: str | Path, n_patients: int = 60, seed: int = 0, export_only: bool = False,
             quick: bool = False, pacs: bool = False) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return a summary (paths and headline figures).

    Args:
        out_dir: folder of everything the demo writes.
        n_patients: patients of the synthetic export.
        seed: seed of the data and of training.
        export_only: stop after writing the export and the label sheet.
        quick: fewer epochs and cases (for tests); the figures are then not meaningful.
        pacs: end with the PACS stage (:mod:`pipeline.demo.pacs_stage`; skipped when Orthanc is not installed).

    Returns:
        The export, label sheet, new scans and truth paths; unless ``export_only``, also the run, report and
        predictions paths, the test AUC with its confidence interval and number of cases, the pointing-game hit
        rate of the test split's Grad-CAMs, and the seconds taken.

    Raises:
        DemoStageError: a stage's command failed (its message is printed above).
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(out, seed, quick)
    export, new, truth = _write_export(demo, n_patients)
    summary: dict[str, Any] = {"export": str(export.export_dir), "labels": str(export.labels_csv),
                               "new_scans": str(new.scan_dir), "truth": str(truth)}
    if export_only:
        demo.say(f"\nNext: index the export (then follow README 'Demo' or run 'radpipe demo --out {out}'):\n"
                 f"    $ {command_line(['scan', export.export_dir, '--out', out / 'index.csv'])}")
        return summary
    manifest = _index_and_split(demo, export)
    run_dir = _train(demo, manifest)
    report_dir = _evaluate_and_report(demo, run_dir, manifest)
    pointing = _test_split_cams(demo, run_dir, manifest, truth)
    predictions, new_pointing = _predict_new_scans(demo, run_dir, new, truth)
    summary.update(_headline(demo, run_dir, report_dir, predictions))
    summary.update({"cam_hit_rate": pointing.rate, "cam_hits": pointing.n_hits, "cam_cases": pointing.n_cases,
                    "new_scans_cam_hits": new_pointing.n_hits, "new_scans_cam_cases": new_pointing.n_cases})
    if pacs:
        summary.update(pacs_stage(demo, run_dir, export.export_dir, export.labels_csv))
    summary["seconds"] = round(time.monotonic() - demo.start, 1)
    _write_summary(demo, summary)
    return summary


def _write_export(demo: Demo, n_patients: int) -> tuple[ExportSummary, NewScansSummary, Path]:
    """Stage 1: the synthetic hospital export, its label sheet, the new scans and the true lesion centres."""
    demo.step(f"writing a synthetic hospital export of {n_patients} patients")
    export = write_export(demo.out, n_patients=n_patients, seed=demo.seed)
    demo.say(
        f"    {export.n_files} files: {export.n_image_series} image series, {export.n_sr} dose reports, a truncated "
        f"file, a README.txt and a DICOMDIR; label sheet {export.labels_csv.name} ({export.n_lesion} lesions)"
    )
    new = write_new_scans(demo.out / "new_scans", seed=demo.seed + 2)
    truth = write_lesions(demo.out, [*export.cases, *new.good_series])
    demo.say(f"    new scans for 'radpipe predict': {new.scan_dir} ({new.n_files} files); true lesion centres "
             f"(RAS mm, by series key): {truth}")
    return export, new, truth


def _index_and_split(demo: Demo, export: ExportSummary) -> Path:
    """Scan, manifest, validation and patient-grouped split; return the split manifest."""
    out = demo.out
    demo.step("indexing the export (headers only, pseudonymised)")
    demo.run(["scan", export.export_dir, "--out", out / "index.csv"])
    demo.step("joining the index to the label sheet by accession number (hashed) into a manifest")
    demo.run([
        "manifest", out / "index.csv", "--labels", export.labels_csv, "--key", "accession_number",
        "--where", 'modality == "CT"', "--select", "largest-series", "--out", out / "manifest.csv",
    ])
    demo.step("validating the manifest")
    demo.run(["validate-manifest", out / "manifest.csv"])
    demo.step("splitting by patient, stratified by label")
    demo.run([
        "split", out / "manifest.csv", "--out", out / "manifest_split.csv", "--group", "patient_key",
        "--stratify", "label", "--val", "0.2", "--test", "0.3", "--seed", demo.seed,
    ])
    return out / "manifest_split.csv"


def _train(demo: Demo, manifest: Path) -> Path:
    """Pretrain on the source task, then train the lesion model from that backbone; return its run folder."""
    out = demo.out
    demo.step("pretraining a 3D backbone on a public-like source task (hypodense cysts, NIfTI)")
    source_manifest = write_source_dataset(out / "source", n_cases=20 if demo.quick else 100, seed=demo.seed + 1)
    source_cfg = demo.config("source_config.yaml", SOURCE_CONFIG, epochs=1 if demo.quick else None)
    demo.run(["train", "--config", source_cfg, "--manifest", source_manifest, "--out", out / "runs" / "source"])

    demo.step("transfer: training the hospital lesion model from the source backbone")
    target_cfg = demo.config("lesion_config.yaml", TARGET_CONFIG, epochs=1 if demo.quick else None)
    run_dir = out / "runs" / "lesion"
    demo.run([
        "train", "--config", target_cfg, "--manifest", manifest, "--out", run_dir,
        "--set", f"model.pretrained=run:{out / 'runs' / 'source'}",
    ])
    return run_dir


def _evaluate_and_report(demo: Demo, run_dir: Path, manifest: Path) -> Path:
    """Evaluate on validation and test, then report by cohort; return the report folder."""
    out = demo.out
    demo.step("evaluating the best checkpoint on the validation and test splits")
    for split in ("val", "test"):
        demo.run([
            "evaluate", "--run", run_dir, "--manifest", manifest, "--split", split,
            "--out", out / f"predictions_{split}.csv",
        ])
    demo.step("report by site and sex, operating point fixed on validation")
    report_dir = out / "report"
    demo.run([
        "report", out / "predictions_test.csv", "--cohort", "site", "--cohort", "sex", "--out", report_dir,
        "--threshold-from", out / "predictions_val.csv", "--run", run_dir,
    ])
    return report_dir


def _test_split_cams(demo: Demo, run_dir: Path, manifest: Path, truth: Path) -> PointingResult:
    """Grad-CAMs of the test split and the pointing game against the true lesion centres."""
    demo.step("Grad-CAM over the test split; pointing game against the true lesion centres")
    test_manifest = demo.out / "manifest_test.csv"
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if row.get("split") == "test"]
        columns = list(reader.fieldnames or [])
    with test_manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    demo.say(f"    {test_manifest.name}: the {len(rows)} test rows of {manifest.name}")
    predictions, cam_dir = demo.out / "predictions_test_cam.csv", demo.out / "cam_test"
    demo.run(["predict", "--run", run_dir, test_manifest, "--out", predictions, "--cam", cam_dir])
    return _say_pointing(demo, pointing_game(predictions, cam_dir, read_lesions(truth), _positive(run_dir)), "test")


def _positive(run_dir: Path) -> str:
    labels = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
    return str(labels["classes"][-1])


def _say_pointing(demo: Demo, result: PointingResult, what: str) -> PointingResult:
    rate = "n/a" if not result.n_cases else f"{result.rate:.2f}"
    demo.say(f"    pointing game ({what}): Grad-CAM maximum inside the lesion (radius + one voxel) in "
             f"{result.n_hits} of {result.n_cases} correctly predicted lesion case(s): hit rate {rate}")
    return result


def _predict_new_scans(demo: Demo, run_dir: Path, new: NewScansSummary, truth: Path) -> tuple[Path, PointingResult]:
    """Batch inference (with Grad-CAMs) over the folder of new scans; return the predictions CSV and pointing."""
    demo.step("batch inference over a folder of new scans, with Grad-CAMs")
    predictions = demo.out / "new_scans_predictions.csv"
    cam_dir = demo.out / "cam_new_scans"
    demo.run(["predict", "--run", run_dir, new.scan_dir, "--out", predictions, "--cam", cam_dir])
    result = pointing_game(predictions, cam_dir, read_lesions(truth), _positive(run_dir), label_column="")
    return predictions, _say_pointing(demo, result, "new scans")


def _headline(demo: Demo, run_dir: Path, report_dir: Path, predictions: Path) -> dict[str, Any]:
    """The summary's run, report, test AUC and predictions entries, and the seconds taken so far."""
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    overall = report["overall"]
    return {
        "run": str(run_dir),
        "report": str(report_dir / "report.html"),
        "test_auc": overall.get("auc"),
        "test_auc_ci": (overall.get("auc_ci_low"), overall.get("auc_ci_high")),
        "test_n": overall.get("n"),
        "predictions": str(predictions),
        "seconds": round(time.monotonic() - demo.start, 1),
    }


def _write_summary(demo: Demo, summary: dict[str, Any]) -> None:
    """Write ``demo_summary.json`` and print the headline."""
    (demo.out / "demo_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    auc = summary["test_auc"]
    ci = summary["test_auc_ci"]
    auc_text = "n/a" if auc is None else f"{auc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, n = {summary['test_n']})"
    rate = summary["cam_hit_rate"]
    cam_text = (f"{rate:.2f} ({summary['cam_hits']} of {summary['cam_cases']} correctly predicted lesion cases)"
                if summary["cam_cases"] else "n/a (no correctly predicted lesion case)")
    demo.say(
        f"\nDone in {summary['seconds']:.0f} s.\n  test AUC: {auc_text}\n  Grad-CAM pointing game (test): {cam_text}\n"
        f"  report: {summary['report']}\n  new-scan predictions: {summary['predictions']}"
    )
