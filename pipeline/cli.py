"""The ``radpipe`` command: argparse subcommands dispatched lazily.

Each subcommand is one entry of :data:`COMMANDS`: its name, a one-line help, a
function adding its arguments, and its handler as ``"module:function"``. The
handler module is imported only when the command runs, so ``radpipe --help``
never imports torch. A handler takes the parsed arguments and returns the exit
status. A :class:`~pipeline.errors.PipelineError` prints one line to stderr and
exits with status 2, also when MONAI wrapped it in a ``RuntimeError`` (raised inside a transform
of ``train``, ``evaluate``, ``preview`` or ``predict``); any other exception keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline import __version__
from pipeline import arguments as A
from pipeline.errors import pipeline_error_in
from pipeline.progress import BarSafeStream

log = logging.getLogger("radpipe")


@dataclass(frozen=True)
class Command:
    """One subcommand of ``radpipe``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: str


COMMANDS: list[Command] = [
    Command(
        "demo",
        "run the whole pipeline on a synthetic hospital export it writes itself",
        A.demo_args,
        "pipeline.demo.command:demo_command",
    ),
    Command(
        "scan",
        "index a DICOM export, one row per series (header-only, parallel, incremental, pseudonymised)",
        A.scan_args,
        "pipeline.ingest.command:scan_command",
    ),
    Command(
        "convert",
        "convert every DICOM series of an export to NIfTI (.nii.gz) plus a BIDS-style JSON sidecar",
        A.convert_args,
        "pipeline.ingest.command:convert_command",
    ),
    Command(
        "pull",
        "pull studies by accession number or study UID from a PACS (DICOMweb or DIMSE) into a pseudonymised export",
        A.pull_args,
        "pipeline.ingest.command:pull_command",
    ),
    Command(
        "import-medmnist",
        "turn a MedMNIST .npz into NIfTI images plus manifest.csv (official splits kept)",
        A.import_medmnist_args,
        "pipeline.manifest.command:import_medmnist_command",
    ),
    Command(
        "import-images",
        "turn a folder of PNG/JPEG/TIFF/BMP pictures (ImageFolder tree or + label sheet) into a manifest and config",
        A.import_images_args,
        "pipeline.manifest.command:import_images_command",
    ),
    Command(
        "manifest",
        "join a scan index to a label sheet into a manifest, one series per study",
        A.manifest_args,
        "pipeline.manifest.command:manifest_command",
    ),
    Command(
        "validate-manifest",
        "check a manifest (columns, files, labels, leakage, class counts) before training",
        A.validate_manifest_args,
        "pipeline.manifest.command:validate_manifest_command",
    ),
    Command(
        "split",
        "patient-grouped, label-stratified train/val/test split (or K folds) of a manifest",
        A.split_args,
        "pipeline.manifest.command:split_command",
    ),
    Command(
        "preview",
        "montage of what the model sees: each case before (eval chain) and after augmentation (train chain)",
        A.preview_args,
        "pipeline.train.command:preview_command",
    ),
    Command(
        "train",
        "train a model (MONAI engines, AMP, checkpoints, resume, early stop, DDP under torchrun) into a run directory",
        A.train_args,
        "pipeline.train.command:train_command",
    ),
    Command(
        "models",
        "list the backbones: name, 2D/3D, pretrained weight sources accepted, notes",
        A.models_args,
        "models.catalog:models_command",
    ),
    Command(
        "report",
        "per-cohort validation report (AUC with bootstrap CIs, operating point, calibration) as HTML/JSON/CSV",
        A.report_args,
        "pipeline.report.command:report_command",
    ),
    Command(
        "evaluate",
        "predict one split of a manifest with a run's best checkpoint (optional flip TTA) into a predictions CSV",
        A.evaluate_args,
        "pipeline.infer.command:evaluate_command",
    ),
    Command(
        "predict",
        "batch inference over a DICOM export, NIfTI folder or manifest: one row per series, resumable, shardable",
        A.predict_args,
        "pipeline.infer.command:predict_command",
    ),
    Command(
        "predict-merge",
        "join the part files of a sharded 'radpipe predict' into one file (equal to an unsharded run's)",
        A.predict_merge_args,
        "pipeline.infer.command:predict_merge_command",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``radpipe`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="radpipe",
        description="From a hospital's DICOM export to a validated, transfer-learned model.",
    )
    parser.add_argument("--version", action="version", version=f"radpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_handler=command.handler)
    return parser


def _resolve(handler: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, function = handler.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _quiet_third_party() -> None:
    """Silence MONAI's GPU-decoder notices (``LoadImage`` builds every known reader, and on a machine without
    nvImageCodec each construction warns, once per worker and stage, about a decoder we never use) and
    highdicom's progress lines."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name the source study's UIDs
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``radpipe`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=BarSafeStream(sys.stderr),  # a log line goes above a progress bar, not onto its line
    )
    _quiet_third_party()
    if not getattr(args, "_handler", None):
        parser.print_help()
        return 2
    try:
        return int(_resolve(args._handler)(args) or 0)
    except Exception as e:  # a PipelineError, bare or wrapped by MONAI, is one line; the rest re-raised
        cause = pipeline_error_in(e)
        if cause is None:
            raise
        message = " ".join(str(cause).split())
        print(f"radpipe {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radpipe {args.command}: interrupted", file=sys.stderr)
        return 130


#: commands that leave no thread, child process or open file behind once they return
_NO_TEARDOWN = frozenset({"scan", "convert"})


def run() -> None:
    """The ``radpipe`` console command: :func:`main` on ``sys.argv``, then exit with its status.

    After ``scan`` or ``convert``, with no other thread or child process left, the process ends with
    ``os._exit`` once logging is shut down and the standard streams are flushed: Python's teardown of the
    modules it imported (numpy's among them) would add 16-25 ms, 8 % of a 2,095-file scan. Every output is
    closed by then (written through :mod:`pipeline.files`); any other command, or an error that escapes
    :func:`main`, exits as usual.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in _NO_TEARDOWN and threading.active_count() == 1 and not _child_processes():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    sys.exit(code)


def _child_processes() -> bool:
    if "multiprocessing" not in sys.modules:
        return False
    import multiprocessing

    return bool(multiprocessing.active_children())
