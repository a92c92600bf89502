"""The arguments of each ``radpipe`` subcommand (argparse), and the value types they share.

:mod:`pipeline.cli` holds the list of subcommands and dispatches them; the functions here add one
subcommand's arguments to its parser. Nothing here imports a stage: ``radpipe --help`` stays fast.
"""
from __future__ import annotations

import argparse

from transforms.dicom.header_values import PHILIPS_SCALINGS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port between 1 and 65535, found {text}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (e.g. 0.05 for 5%), found {text}")
    return value


def demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="radpipe-demo", help="folder of everything the demo writes (default: %(default)s)")
    p.add_argument("--patients", type=_positive_int, default=60, help="patients in the synthetic export")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic export and of training")
    p.add_argument("--export-only", action="store_true",
                   help="only write the export, labels, new scans and truth; print the next command")
    p.add_argument("--pacs", action="store_true", help="end with a PACS stage: the export in a local Orthanc (when "
                   "installed), pulled back by accession, SRs of the predictions pushed to it")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), found {text}")
    return value


def import_medmnist_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("npz", metavar="FILE.npz", help="MedMNIST file (2D or 3D, any size variant, e.g. pneumoniamnist.npz)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for images/, manifest.csv, labels.json, config.yaml")
    p.add_argument("--format", default="nifti", choices=("nifti", "nifti-raw"),
                   help="image files: nifti (.nii.gz) or nifti-raw (.nii, faster to read) (default: %(default)s)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="import only the first N cases of each split")
    p.add_argument("--workers", type=_positive_int, default=1, help="threads writing files (default: %(default)s)")


def import_images_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="ImageFolder tree ([split/]CLASS/*.png|jpg|tif|bmp) or folder + --labels")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for manifest.csv, labels.json, config.yaml")
    p.add_argument("--labels", metavar="SHEET.csv", help="label sheet, one row per picture")
    p.add_argument("--key", metavar="COLUMN", help="sheet column naming the picture (relative path, name or stem)")
    p.add_argument("--label-column", default="label", metavar="COL[,COL]", help="label column(s) of the sheet")
    p.add_argument("--patient-column", metavar="COL", help="sheet column holding the patient (pseudonymised)")
    p.add_argument("--patient-pattern", metavar="REGEX", help="patient = first group (or match) of REGEX in the name")
    p.add_argument("--preset", metavar="CFG.yaml", help="config the written config.yaml starts from")
    p.add_argument("--val", type=_fraction, default=0.1, help="val fraction of patients when there is no val/")
    p.add_argument("--test", type=_fraction, default=0.2, help="test fraction of patients when there are no splits")
    p.add_argument("--seed", type=int, default=0, help="seed of the split assignment (default: %(default)s)")


def manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", metavar="INDEX.csv", help="series index written by 'radpipe scan'")
    p.add_argument("--labels", required=True, metavar="LABELS.csv", help="label sheet, one row per study or patient")
    p.add_argument("--key", required=True, help="identifier column of the label sheet: accession_number, patient_id, "
                   "study_instance_uid (hashed like 'radpipe scan' does), or an index key column like accession_key")
    p.add_argument("--out", required=True, metavar="MANIFEST.csv", help="manifest to write")
    p.add_argument("--where", metavar="EXPR", help="filter of the index series, e.g. \"modality == 'CT'\"")
    p.add_argument("--max-unmatched", type=_share, default=0.05, metavar="F",
                   help="exit 2 when more than this fraction of the sheet rows or of the index keys match nothing "
                   "(default: %(default)s)")
    p.add_argument("--select", default="largest-series", metavar="RULE",
                   help="one series per study: largest-series, first or description:REGEX (default: %(default)s)")
    p.add_argument("--label-column", default="label", metavar="COL[,COL]",
                   help="label column(s) of the sheet (default: %(default)s)")


def validate_manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", metavar="MANIFEST.csv", help="CSV manifest to check")
    p.add_argument("--config", metavar="CFG.yaml", help="run config (columns, task, classes); without it the task "
                   "is inferred")
    p.add_argument("--no-file-check", action="store_true", help="skip opening the image files")
    p.add_argument("--deep", action="store_true", help="decode every voxel of every image (default: each image's "
                   "header and first slice, which finds missing, truncated and non-image files)")
    p.add_argument("--strict", action="store_true", help="absolute image paths and paths leading outside the "
                   "manifest's folder are errors (default: warnings)")
    p.add_argument("--sep", default=",", metavar="CHAR", help="cell separator of the CSV, e.g. ';' or '\\t' "
                   "(default: %(default)s)")


def split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", metavar="MANIFEST.csv", help="CSV manifest to split")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="manifest with a split (or fold) column to write")
    p.add_argument("--group", help="column keeping a patient's cases together (default: patient_id or patient_key)")
    p.add_argument("--stratify", default="label", metavar="COL[,COL]",
                   help="column(s) whose class ratios each side keeps; '' for none (default: %(default)s)")
    p.add_argument("--val", type=_fraction, help="fraction of cases in val, whole patients (default: 0.1)")
    p.add_argument("--test", type=_fraction, help="fraction of cases in test, whole patients (default: 0.2; 0 with --folds)")
    p.add_argument("--folds", type=_positive_int, metavar="K", help="write a fold column 0..K-1 instead of val")
    p.add_argument("--seed", type=int, default=0, help="seed of the assignment (default: %(default)s)")
    p.add_argument("--sep", default=",", metavar="CHAR", help="cell separator of MANIFEST.csv, e.g. ';' "
                   "(default: %(default)s); OUT.csv is written with commas")


def preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="CFG.yaml", help="run config whose transform chains are shown")
    p.add_argument("--manifest", metavar="M.csv", help="CSV manifest (default: data.manifest of the config)")
    p.add_argument("--out", required=True, metavar="PREVIEW.png", help="PNG montage to write")
    p.add_argument("--n", type=_positive_int, default=16, help="cases shown (default: %(default)s)")
    p.add_argument("--split", default="train", choices=("train", "val", "test", "all"),
                   help="manifest split the cases come from (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case draw and the augmentation")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. "
                   "transforms.augment=heavy (repeat)")


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("predictions", metavar="PREDICTIONS.csv", help="predictions written by 'radpipe evaluate'")
    p.add_argument("--cohort", action="append", default=[], metavar="COL",
                   help="column reported per value (repeat; default: the run's eval.cohorts)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR",
                   help="folder for report.html, report.json, metrics.csv")
    p.add_argument("--threshold-from", metavar="VAL_PREDICTIONS.csv",
                   help="validation predictions fixing the operating point (without it: 0.5, flagged); with --run "
                   "a binary operating point is recorded in RUN_DIR/operating_point.json")
    p.add_argument("--run", metavar="RUN_DIR", help="run directory: labels, eval settings, config and weights summary")
    p.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap resamples (default: eval.bootstrap, 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    p.add_argument("--compare", metavar="OTHER.csv", help="another model's predictions on the same cases (DeLong)")
    p.add_argument("--id-column", default="image", help="column matching cases with --compare (default: %(default)s)")
    p.add_argument("--positive", metavar="CLASS", help="positive class of a binary task (default: second prob_ column)")
    p.add_argument("--target-sensitivity", type=float, metavar="X",
                   help="operating point: highest threshold reaching this sensitivity on validation (default: Youden)")
    p.add_argument("--patient-column", help="column grouping a patient's cases (default: patient_id or patient_key)")
    p.add_argument("--min-cases", type=int, metavar="N",
                   help="flag groups with fewer positives or negatives than this (default: eval.min_cases, 10)")


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="CFG.yaml", help="run config (with --resume: default RUN_DIR/config.yaml)")
    p.add_argument("--manifest", metavar="M.csv", help="CSV manifest with train and val rows (default: data.manifest)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<timestamp>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=5")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms and seeds (train.deterministic)")


def models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the registry as JSON instead of a table")


def _workers_count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (read in the main process) or more workers, found {text}")
    return value


def _tta_args(p: argparse.ArgumentParser) -> None:
    """``--tta`` / ``--no-tta`` and ``--tta-views`` (evaluate and predict average alike)."""
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average over flipped copies of each image (default: the run's eval.tta)")
    p.add_argument("--tta-views", choices=("flips", "dihedral", "train-flips"),
                   help="flips: one along each axis; dihedral: every in-plane turn and flip; train-flips: one along "
                        "each of transforms.flip_axes (default: eval.tta_views)")


def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory written by 'radpipe train'")
    p.add_argument("--manifest", required=True, metavar="M.csv", help="CSV manifest holding the cases")
    p.add_argument("--split", help="split evaluated (default: the run's eval.split; every row without a split column)")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv", help="predictions CSV to write")
    _tta_args(p)
    p.add_argument("--batch-size", type=_positive_int, metavar="B", help="cases per batch (default: train.batch_size)")
    p.add_argument("--workers", type=_workers_count, metavar="W", help="loader processes (default: CPUs - 1, at most 4)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the model runs (default: train.device)")
    p.add_argument("--threshold", metavar="X|argmax", help=_THRESHOLD_HELP)


_THRESHOLD_HELP = ("binary: pred = positive when its probability >= X, or argmax (default: the run's "
                   "operating_point.json, fixed by 'evaluate --split val'; argmax without one)")


def predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory written by 'radpipe train'")
    p.add_argument("input", metavar="INPUT", help="DICOM export folder, folder of NIfTI files, or manifest .csv")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv",
                   help="predictions CSV (appended as series finish; a re-run resumes it)")
    p.add_argument("--batch-size", type=_positive_int, metavar="B", help="series per batch (default: train.batch_size)")
    p.add_argument("--workers", type=_workers_count, metavar="W", help="processes reading and preprocessing (default: CPUs - 1, "
                   "at most 4)")
    p.add_argument("--shard", metavar="i/n", help="predict shard i of n (i from 0; default: torchrun's RANK/WORLD_SIZE) "
                   "into <out>.part-i-of-n.csv; join the parts with 'radpipe predict-merge'")
    p.add_argument("--cam", metavar="DIR", help="write Grad-CAM maps per series there (NIfTI + PNG overlay)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the model runs (default: train.device)")
    p.add_argument("--modality", metavar="MOD[,MOD]", help="DICOM input: modalities predicted, or 'any' "
                   "(default: the run's selection.json, else the modality its intensity preset implies)")
    p.add_argument("--series", metavar="RULE", help="DICOM input: all, largest-series, first or description:REGEX "
                   "(one series per study; default: the run's selection.json, else all)")
    _tta_args(p)
    p.add_argument("--threshold", metavar="X|argmax", help=_THRESHOLD_HELP)
    p.add_argument("--dicom-out", metavar="DIR", help="DICOM input: one DICOM SR (TID 1500) per predicted series there, "
                   "referencing the source study, series and instances; with --cam, its Grad-CAM as a DICOM "
                   "Parametric Map too")
    p.add_argument("--push", metavar="SOURCE", help="send the SRs (and maps) of --dicom-out to a PACS (DICOMweb STOW-RS URL or "
                   "dimse://AET@host:port C-STORE); what was sent is recorded in DIR/pushed.csv")
    p.add_argument("--credentials", metavar="FILE", help="--push: JSON or INI file with user + password or token "
                   "(default: $RADPIPE_PACS_USER / $RADPIPE_PACS_PASSWORD / $RADPIPE_PACS_TOKEN)")
    p.add_argument("--aet", default="RADPIPE", help="--push over DIMSE: our AE title (default: %(default)s)")


def scan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="DICOM export folder (any nesting, any file names)")
    p.add_argument("--out", required=True, metavar="INDEX.csv", help="series index to write; beside it go "
                   "<stem>.skipped.csv, <stem>.series/ (one .series.json per series) and a header cache")
    p.add_argument("--workers", type=_positive_int, metavar="N", help="header-reading processes, this one "
                   "included (default: min(4, CPUs); 1 reads in this process only)")
    p.add_argument("--keep-identifiers", action="store_true", help="write patient IDs and accession numbers in "
                   "clear instead of pseudonymised keys (the outputs then hold patient data)")
    p.add_argument("--follow-links", action="store_true", help="read files and walk folders that symbolic links in "
                   "the export point to outside it (default: such links are listed as skipped)")


def convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="DICOM export folder (any nesting, any file names)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for <patient_key>_<series_key>.nii.gz + .json and "
                   "index.csv")
    p.add_argument("--workers", type=_positive_int, metavar="N", help="processes (default: min(4, CPUs))")
    p.add_argument("--keep-identifiers", action="store_true", help="name files by identifiers in clear instead of "
                   "pseudonymised keys")
    p.add_argument("--follow-links", action="store_true", help="read files and walk folders that symbolic links in "
                   "the export point to outside it")
    p.add_argument("--philips-scaling", choices=PHILIPS_SCALINGS, default="display",
                   help="Philips values: 'display' (default: DICOM's, stored x RescaleSlope + RescaleIntercept) or "
                   "'fp' (Philips' floating-point values, divided by RescaleSlope x the private scale slope "
                   "(2005,100E), as dcm2niix writes by default); recorded in each sidecar")


def pull_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="DICOMweb base URL (http(s)://host:8042/dicom-web) or DIMSE node "
                   "(dimse://AET@host:port)")
    p.add_argument("--out", required=True, metavar="EXPORT_DIR", help="local export: <study_key>/<series_key>/"
                   "<instance_key>.dcm (a re-run fetches only what is missing)")
    p.add_argument("--accessions", metavar="SHEET.csv", help="label sheet, one study per row (failures are listed by "
                   "row number in <EXPORT_DIR>.pull-failures.csv)")
    p.add_argument("--key", default="accession_number", metavar="COLUMN",
                   help="sheet column holding the accession numbers (default: %(default)s)")
    p.add_argument("--study", nargs="+", metavar="UID", help="Study Instance UIDs to pull (instead of --accessions)")
    p.add_argument("--modality", metavar="MOD[,MOD]", help="pull only series of these modalities, e.g. CT")
    p.add_argument("--workers", type=_positive_int, default=4, help="studies pulled at once (default: %(default)s)")
    p.add_argument("--aet", default="RADPIPE", help="our AE title for DIMSE (default: %(default)s)")
    p.add_argument("--move", action="store_true", help="DIMSE: retrieve with C-MOVE to our own storage SCP (for a "
                   "PACS that refuses C-GET; it must know --aet at this host and --move-port)")
    p.add_argument("--move-port", type=_port, default=11112, metavar="PORT", help="--move: port our storage SCP "
                   "listens on (default: %(default)s)")
    p.add_argument("--move-host", default="0.0.0.0", metavar="ADDR", help="--move: address it listens on, one the "
                   "PACS reaches (default: %(default)s, all)")
    p.add_argument("--credentials", metavar="FILE", help="JSON or INI file with user + password or token (default: "
                   "$RADPIPE_PACS_USER / $RADPIPE_PACS_PASSWORD / $RADPIPE_PACS_TOKEN); never on the command line")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for the PACS "
                   "(default: %(default)s)")


def predict_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", nargs="*", metavar="PART", help="part files <out>.part-i-of-n.csv (default: those next "
                   "to --out)")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv", help="merged predictions CSV to write")
