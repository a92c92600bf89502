"""Throughput of ``radpipe predict`` on the synthetic hospital export against the model-only bound.

The run is the example 3D CT config (``data_manifests/ct_lesion_3d.yaml``: resnet18, 64x64x32,
2x2x4 mm spacing, foreground crop) with random weights (throughput does not depend on them).
Rows:

* ``model only``: the same model on pre-made tensors of the same batch size, in the same
  process and thread settings: the bound ``predict`` can reach.
* ``read + preprocess only``: the run's infer chain alone in one process (what one loader worker does).
* ``bound min(...)``: what ``predict`` can reach with its loader workers, each as fast as one process alone.
* ``predict, inference``: ``radpipe predict`` reading, assembling and preprocessing the DICOM
  series in loader workers while the model runs (the scan excluded).
* ``predict, end to end``: the same plus the scan of the export (first run: every header read;
  re-run: the scan cache makes it incremental).

Run: ``python benchmarks/predict.py [--patients 40] [--batch-size 4] [--workers N]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def write_random_run(run_dir: Path, config: Path, overrides: list[str] | None = None) -> Path:
    """A run directory in ``radpipe train``'s format, with random weights, for ``config`` (``--set`` style
    ``overrides`` applied)."""
    from pipeline.train.checkpoint import atomic_save
    from pipeline.config import load_config, save_config
    from pipeline.manifest.labels import LabelMap
    from pipeline.train.run_dir import build_model

    cfg = load_config(config, ["train.device=cpu", "transforms.augment=none", *(overrides or [])])
    labels = LabelMap(cfg.data.task, tuple(cfg.data.classes), tuple(cfg.data.label_columns))
    info = {"name": cfg.model.name, "spatial_dims": cfg.transforms.spatial_dims, "in_channels": 1,
            "num_outputs": labels.num_outputs, "options": {}}
    torch.manual_seed(0)
    model = build_model(info)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    labels.save(run_dir / "labels.json")
    atomic_save({"model": model.state_dict(), "epoch": 1, "model_info": info}, run_dir / "checkpoints" / "best.pt")
    return run_dir


def model_only(run_dir: Path, n_series: int, batch_size: int, workers: int, repeats: int = 2) -> float:
    """Series per second of the run's model alone on random tensors of the preprocessed shape.

    The model runs with the threads ``predict`` gives it next to ``workers`` loader processes.
    """
    from pipeline.infer.batching import inference_threads
    from pipeline.train.run_dir import load_run

    run = load_run(run_dir)
    with inference_threads(run.device, workers):
        return _model_rate(run, n_series, batch_size, repeats)


def _model_rate(run, n_series: int, batch_size: int, repeats: int) -> float:
    from pipeline.infer.batching import Predictor, model_in_channels

    predictor = Predictor(run.model, run.task, run.device)
    shape = (batch_size, model_in_channels(run.model) or 1, *run.cfg.transforms.size)
    batches = [torch.randn(shape) for _ in range(-(-n_series // batch_size))]
    predictor(batches[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            predictor(b)
        best = min(best, time.perf_counter() - start)
    return len(batches) * batch_size / best


def preprocessing_only(run_dir: Path, index_csv: Path, limit: int = 8) -> float:
    """Series per second of reading + preprocessing alone (the run's infer chain, one process, one thread)."""
    import csv

    from pipeline.train.run_dir import load_run

    run = load_run(run_dir)
    with open(index_csv, newline="", encoding="utf-8") as f:
        refs = [index_csv.parent / r["series_ref"] for r in csv.DictReader(f)
                if r["modality"] == "CT" and "localizer" not in r["problems"] and r["status"] != "error"][:limit]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for ref in refs:
            run.infer_transform({"image": str(ref)})
        return len(refs) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    """Write the export, run the three measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: predict's default)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. transforms.spacing=[6,6,4]: the synthetic CTs have 6.25 mm "
                             "pixels, which the example config's 2x2x4 mm spacing upsamples ~10x before resizing")
    args = parser.parse_args()

    from pipeline.infer.batching import default_workers, inference_threads
    from pipeline.infer.predict import predict
    from pipeline.demo.synthetic_export import write_export

    work = Path(args.keep or tempfile.mkdtemp(prefix="radpipe-bench-predict-"))
    os.environ.setdefault("RADPIPE_SECRET_FILE", str(work / "secret.key"))
    config = Path(__file__).resolve().parent.parent / "data_manifests" / "ct_lesion_3d.yaml"
    try:
        export = write_export(work / "data", n_patients=args.patients, seed=0)
        run = write_random_run(work / "run", config, args.set)
        workers = default_workers() if args.workers is None else args.workers
        first = predict(run, export.export_dir, work / "first.csv", batch_size=args.batch_size, workers=workers)
        (work / "first.csv").unlink()  # same output again: its scan folder (header cache) is reused
        again = predict(run, export.export_dir, work / "first.csv", batch_size=args.batch_size, workers=workers)
        n = first.n_ok
        if n == 0:
            raise SystemExit(f"no series predicted ok; see {work / 'first.csv'} (run with --keep DIR to inspect)")
        bound = model_only(run, n, args.batch_size, workers)
        prep = preprocessing_only(run, work / "first.scan" / "index.csv")
        rows = [
            ("model only (pre-made tensors)", n / bound, bound),
            ("read + preprocess only (1 process)", n / prep, prep),
            (f"bound min(model, {workers} x preprocess)", n / min(bound, workers * prep or prep),
             min(bound, workers * prep or prep)),
            ("predict, inference (scan excluded)", again.seconds_inference, n / again.seconds_inference),
            ("predict, end to end, first scan", first.seconds_inputs + first.seconds_inference,
             n / (first.seconds_inputs + first.seconds_inference)),
            ("predict, end to end, cached scan", again.seconds_inputs + again.seconds_inference,
             n / (again.seconds_inputs + again.seconds_inference)),
        ]
        with inference_threads(torch.device("cpu"), workers) as threads:
            pass
        print(f"radpipe predict: {args.patients} patients, {n} CT series predicted ({first.n_error} error, "
              f"{first.n_skipped} inputs skipped), batch {args.batch_size}, {workers} loader worker(s), "
              f"{threads} torch thread(s) for the model, {os.cpu_count()} CPU(s)"
              + (f"; overrides: {' '.join(args.set)}" if args.set else ""))
        print(f"{'measure':<38} {'seconds':>8} {'series/s':>9} {'ratio':>6}")
        for name, seconds, rate in rows:
            print(f"{name:<38} {seconds:>8.2f} {rate:>9.2f} {rate / bound:>6.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
