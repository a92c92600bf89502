"""What does transfer learning buy? Scratch vs transferred backbones at few labels, on MedMNIST.

Model everywhere: ResNet-10 with the standard stem (7x7 stride-2 conv + max-pool), 2D and 3D,
otherwise the protocol of ``benchmarks/medmnist.py`` (AdamW lr 1e-3, cosine, ``light``
augmentation, ``best.pt`` by validation AUC). The standard stem is about 5x cheaper per image
than the small-input stem at 28 px (this grid is 40+ training runs on a shared 2-core CPU), and
it makes the 2D -> 3D transfer complete: every 2D kernel, the 7x7 stem included, inflates into
the 3D model (strict loading). Absolute AUCs are therefore below ``benchmarks/medmnist.py``'s;
the comparison is between arms with equal budgets.

1. Source: a 2D run on ``--source`` (default PneumoniaMNIST, ``--source-epochs`` epochs, default
   2), or an existing run of the same model (``--source-run``).
2. 2D target (default BreastMNIST): for each fraction of the training labels and each seed, a
   patient-grouped, class-stratified subsample of the ``train`` split (``val`` and ``test``
   untouched), then three arms with the same budget (the same number of optimiser steps,
   batch, schedule and seed; the same subsample):

   * ``scratch``: random initialisation, all layers train;
   * ``linear-probe``: ``model.pretrained=run:SOURCE``, ``transfer.strategy=linear-probe``;
   * ``finetune``: ``model.pretrained=run:SOURCE``, ``transfer.strategy=finetune``;
   * ``union-finetune`` (with ``--union``): fine-tuned from a source trained on the union of the source
     dataset (its ``train`` and ``val``) and the cell's labelled subsample of the target (with the target's
     ``val``), one joint head over both datasets' classes (the two modalities are told apart trivially, so it
     acts as one head per dataset); ``--source-epochs`` epochs, ``best.pt`` by validation AUC over the union.
     A source per cell (fraction and seed): it sees only the labels the cell has.

3. 2D -> 3D (default AdrenalMNIST3D): the same 2D source backbone inflated to 3D
   (``model.inflate=mean``) and fine-tuned, vs the same 3D architecture from scratch (both 3D arms take the 2D
   recipe's model, ResNet-18, not the 3D recipe's ResNet-10: inflation needs the same layers).

Budget per run: ``--steps`` optimiser steps (2D, batch 32) and ``--steps3d`` (3D, batch 16),
``epochs = ceil(steps / steps per epoch)``, about 10 validations per run. Test AUC (MedMNIST's
definition) per run; the table gives mean, std and min-max over seeds and the mean paired
difference to scratch with the number of seeds where the arm beat scratch. Seed s draws the
subsample and seeds training; the arms of a cell share both, so differences are paired.

Reduced grid (the defaults, set by the CPU time of the benchmark session): 2D fractions 0.05,
0.1, 0.25, 1.0 with 80 steps per run (BreastMNIST at 100 %: 5 epochs, 90 steps); 3D fractions 0.25
and 1.0, scratch and inflated fine-tune only (no 3D linear probe), 40 steps per run. Runs go
seed by seed, so a grid cut short still has whole seeds; ``--work`` reuses finished runs.

Usage::

    python benchmarks/transfer.py --json transfer.json --work /tmp/bench/transfer --jobs 2
    python benchmarks/transfer.py --union --arms union-finetune --work /tmp/bench/transfer --jobs 2  # add the union arm
    python benchmarks/transfer.py --source-run /tmp/bench/src/run --seeds 2 --json transfer.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.manifest.medmnist import dataset_name

_spec = importlib.util.spec_from_file_location("radpipe_bench_medmnist", Path(__file__).with_name("medmnist.py"))
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the project
ARMS_2D = ("scratch", "linear-probe", "finetune")
UNION_ARM = "union-finetune"
ARMS_3D = ("scratch", "inflated-finetune")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    target: str
    dims: int
    fraction: float
    seed: int
    arm: str


def subsample(manifest: pd.DataFrame, fraction: float, seed: int, patient_column: str = "patient_id",
              label_column: str = "label") -> pd.DataFrame:
    """The manifest with its ``train`` rows cut to ``fraction`` of the patients, per class (at least one each).

    Patients are grouped (all of a patient's rows stay together) and drawn per class of their
    first row's label, so class proportions follow the full train split; ``val``/``test`` are kept.
    """
    if fraction >= 1.0:
        return manifest.copy()
    rng = np.random.default_rng(seed)
    train = manifest[manifest["split"] == "train"]
    patients = train.groupby(patient_column, sort=True)[label_column].first()
    keep: list[Any] = []
    for _, group in patients.groupby(patients, sort=True):
        n = max(1, int(round(fraction * len(group))))
        keep += list(rng.choice(group.index.to_numpy(), size=n, replace=False))
    mask = (manifest["split"] != "train") | manifest[patient_column].isin(set(keep))
    return manifest[mask].copy()


def cell_overrides(cell: Cell, n_train: int, steps: int, batch: int, source_run: Path) -> list[str]:
    """``--set`` arguments of one run: the medmnist protocol, the step budget and the arm."""
    p = bench.protocol(cell.dims, n_train)
    p.update({"small_input": False, "batch_size": batch, "model.members": 1})  # single networks: what transfers
    if cell.dims == 3:  # both 3D arms take the 2D source's architecture, which inflation needs, in fp32: the
        p["model"] = bench.protocol(2, n_train)["model"]  # inflated fine-tune's loss went NaN in CPU bf16 (README)
        p["cpu_bf16"] = False
    p["epochs"] = max(1, math.ceil(steps / math.ceil(n_train / batch)))
    p["val_every"] = max(1, p["epochs"] // 10)
    args = bench.overrides(p) + ["--set", f"train.seed={cell.seed}"]
    if cell.arm != "scratch":
        args += ["--set", f"model.pretrained=run:{source_run}"]  # the union arm passes its own source
        args += ["--set", f"transfer.strategy={'linear-probe' if cell.arm == 'linear-probe' else 'finetune'}"]
        if cell.dims == 3:
            args += ["--set", "model.inflate=mean"]
    return args


def union_source(target: pd.DataFrame, folder: Path, source_imported: Path, seed: int, epochs: int,
                 log: Path, env: dict[str, str]) -> Path:
    """Train the union source of a cell: the source dataset's train/val rows and the cell's target train/val
    rows, labels ``<dataset>_<class>`` under one multi-class head; returns its run folder."""
    run = folder / "run"
    if (run / "checkpoints" / "best.pt").is_file():
        return run
    if run.exists():
        import shutil

        shutil.rmtree(run)
    folder.mkdir(parents=True, exist_ok=True)
    source = pd.read_csv(source_imported / "manifest.csv")
    source["image"] = [str((source_imported / p).absolute()) for p in source["image"]]
    parts = []
    for name, df in (("source", source), ("target", target)):
        df = df[df["split"].isin(["train", "val"])].copy()
        df["label"] = name + "_" + df["label"].astype(str)
        df["patient_id"] = name + "_" + df["patient_id"].astype(str)
        parts.append(df)
    union = pd.concat(parts, ignore_index=True)
    manifest = folder / "manifest.csv"
    union.to_csv(manifest, index=False)
    classes = sorted(union["label"].unique())
    n = int((union["split"] == "train").sum())
    p = bench.protocol(2, n, epochs)
    p.update({"small_input": False, "model.members": 1, "seed": seed})
    bench.run_cli(["train", "--config", str(source_imported / "config.yaml"), "--manifest", str(manifest),
                   "--out", str(run), *bench.overrides(p), "--set", "data.task=multiclass",
                   "--set", f"data.classes=[{','.join(classes)}]"], log, env)
    return run


def run_cell(cell: Cell, imported: Path, work: Path, steps: int, batch: int, source_run: Path,
             env: dict[str, str], source_imported: Path | None = None, source_epochs: int = 2) -> dict[str, Any]:
    """Subsample, train and evaluate one cell (skipped when its result exists); return its figures."""
    tag = f"{cell.arm}_f{cell.fraction:g}_s{cell.seed}"
    folder = work / "runs" / cell.target / tag
    result_file = folder / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    full = pd.read_csv(imported / "manifest.csv")
    full["image"] = [str((imported / p).absolute()) for p in full["image"]]
    sub = subsample(full, cell.fraction, cell.seed)
    manifest = folder / "manifest.csv"
    sub.to_csv(manifest, index=False)
    n_train = int((sub["split"] == "train").sum())
    run, test_csv, log = folder / "run", folder / "test.csv", folder / "commands.log"
    if run.exists():  # an interrupted earlier attempt
        import shutil

        shutil.rmtree(run)
    start = time.monotonic()
    if cell.arm == UNION_ARM:
        source_run = union_source(sub, folder / "union", source_imported, cell.seed, source_epochs, log, env)
    args = cell_overrides(cell, n_train, steps, batch, source_run)
    train_s = bench.run_cli(["train", "--config", str(imported / "config.yaml"), "--manifest", str(manifest),
                             "--out", str(run), *args], log, env)
    eval_s = bench.run_cli(["evaluate", "--run", str(run), "--manifest", str(manifest), "--split", "test",
                            "--out", str(test_csv), "--batch-size", "128", "--workers", "0"], log, env)
    history = pd.read_csv(run / "metrics.csv")
    figures = bench.medmnist_metrics(test_csv, run / "labels.json")
    weights = json.loads((run / "weights_report.json").read_text(encoding="utf-8"))
    epochs = int(history["epoch"].max())
    result = {
        "target": cell.target, "dims": cell.dims, "fraction": cell.fraction, "seed": cell.seed, "arm": cell.arm,
        "n_train": n_train, "epochs": epochs, "steps": epochs * math.ceil(n_train / batch), "batch_size": batch,
        "test_auc": figures["auc"], "test_acc": figures["acc"],
        "val_best_auc": float(history["val_auc"].max()), "loaded_fraction": weights.get("loaded_fraction"),
        "train_s": train_s, "evaluate_s": eval_s, "total_s": time.monotonic() - start,
    }
    result_file.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, std, min, max of test AUC per (target, fraction, arm), with the paired difference to scratch."""
    df = pd.DataFrame(results)
    rows = []
    for (target, fraction, arm), g in df.groupby(["target", "fraction", "arm"], sort=False):
        scratch = df[(df["target"] == target) & (df["fraction"] == fraction) & (df["arm"] == "scratch")]
        paired = g.merge(scratch[["seed", "test_auc"]], on="seed", suffixes=("", "_scratch"))
        diff = (paired["test_auc"] - paired["test_auc_scratch"]) if arm != "scratch" else None
        rows.append({
            "target": target, "fraction": float(fraction), "arm": arm, "n_train": int(g["n_train"].median()),
            "seeds": int(len(g)), "steps": int(g["steps"].median()),
            "auc_mean": float(g["test_auc"].mean()), "auc_std": float(g["test_auc"].std(ddof=1)) if len(g) > 1 else 0.0,
            "auc_min": float(g["test_auc"].min()), "auc_max": float(g["test_auc"].max()),
            "acc_mean": float(g["test_acc"].mean()),
            "diff_vs_scratch_mean": None if diff is None or not len(diff) else float(diff.mean()),
            "diff_vs_scratch_wins": None if diff is None else f"{int((diff > 0).sum())}/{len(diff)}",
        })
    order = {"scratch": 0, "linear-probe": 1, "finetune": 2, UNION_ARM: 3, "inflated-finetune": 4}
    return sorted(rows, key=lambda r: (r["target"], r["fraction"], order.get(r["arm"], 9)))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed table."""
    head = (f"{'target':<16} {'frac':>5} {'n':>5} {'arm':<18} {'steps':>5} {'AUC mean':>8} {'std':>6} "
            f"{'min-max':>12} {'ACC':>6} {'d vs scratch':>12} {'wins':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        d = "" if r["diff_vs_scratch_mean"] is None else f"{r['diff_vs_scratch_mean']:+.3f}"
        lines.append(
            f"{r['target']:<16} {r['fraction']:>5g} {r['n_train']:>5} {r['arm']:<18} {r['steps']:>5} "
            f"{r['auc_mean']:>8.3f} {r['auc_std']:>6.3f} {r['auc_min']:>5.3f}-{r['auc_max']:.3f} "
            f"{r['acc_mean']:>6.3f} {d:>12} {r['diff_vs_scratch_wins'] or '':>5}"
        )
    return "\n".join(lines)


def _import(npz: Path, out: Path, log: Path, env: dict[str, str], limit: int | None) -> Path:
    if not (out / "manifest.csv").is_file():
        bench.run_cli(["import-medmnist", str(npz), "--out", str(out)] + (["--limit", str(limit)] if limit else []),
                      log, env)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    paragraphs = __doc__.split("\n\n")
    reduced = next(p for p in paragraphs if p.startswith("Reduced grid"))
    parser = argparse.ArgumentParser(description=paragraphs[0] + "\n\n" + reduced,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Model, arms and budgets: see the docstring of benchmarks/transfer.py.")
    parser.add_argument("--source", type=Path, default=DATA / "pneumoniamnist.npz", help="2D source MedMNIST file")
    parser.add_argument("--source-run", type=Path, help="use this finished 2D run as the source (skip pretraining)")
    parser.add_argument("--source-epochs", type=int, default=2, help="epochs of the source run (default: %(default)s)")
    parser.add_argument("--target", type=Path, default=DATA / "breastmnist.npz", help="2D target MedMNIST file")
    parser.add_argument("--target3d", type=Path, default=DATA / "adrenalmnist3d.npz",
                        help="3D target MedMNIST file ('none' to skip 2D->3D)")
    parser.add_argument("--fractions", default="0.05,0.1,0.25,1.0", help="2D label fractions (default: %(default)s)")
    parser.add_argument("--fractions3d", default="0.25,1.0", help="3D label fractions (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=80, help="optimiser steps per 2D run (default: %(default)s)")
    parser.add_argument("--steps3d", type=int, default=40, help="optimiser steps per 3D run (default: %(default)s)")
    parser.add_argument("--union", action="store_true", help="add the union-finetune arm to the 2D target (a "
                        "source trained on the source dataset plus the cell's labelled target subsample)")
    parser.add_argument("--arms", help="only these arms, comma-separated (default: all; scratch is kept for the "
                        "paired differences)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one torch thread each when > 1 "
                        "(the source run too: on a busy machine one thread per process wastes least)")
    parser.add_argument("--limit", type=int, help="import only the first N cases per split (smoke tests)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary folder, removed); re-running "
                        "with the same folder reuses finished runs")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write every run and the table there")
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",") if f]
    fractions3d = [float(f) for f in args.fractions3d.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="radpipe-transfer-") as tmp:
        work = (args.work or Path(tmp)).absolute()
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        env = dict(os.environ)
        if args.jobs > 1:
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        start = time.monotonic()
        source_run = args.source_run.absolute() if args.source_run else work / "source" / "run"
        source_s = 0.0
        chosen = set(args.arms.split(",")) | {"scratch"} if args.arms else None
        need_source = chosen is None or bool(chosen & {"linear-probe", "finetune", "inflated-finetune"})
        if need_source and args.source_run is None and not (source_run / "checkpoints" / "best.pt").is_file():
            imported = _import(args.source, work / "source" / "data", log, env, args.limit)
            n = int((pd.read_csv(imported / "manifest.csv")["split"] == "train").sum())
            if source_run.exists():
                import shutil

                shutil.rmtree(source_run)
            p = bench.protocol(2, n, args.source_epochs)
            p.update({"small_input": False, "model.members": 1})
            source_s = bench.run_cli(["train", "--config", str(imported / "config.yaml"), "--out", str(source_run),
                                      *bench.overrides(p)], log, env)
        source_imported = _import(args.source, work / "source" / "data", log, env, args.limit) if args.union \
            else None
        arms_2d = ARMS_2D + ((UNION_ARM,) if args.union else ())
        targets: list[tuple[str, int, Path, list[float], tuple[str, ...], int, int]] = []
        t2 = _import(args.target, work / "targets" / "target2d", log, env, args.limit)
        targets.append((dataset_name(args.target), 2, t2, fractions,
                        tuple(a for a in arms_2d if chosen is None or a in chosen), args.steps, 32))
        if str(args.target3d) != "none":
            t3 = _import(args.target3d, work / "targets" / "target3d", log, env, args.limit)
            targets.append((dataset_name(args.target3d), 3, t3, fractions3d,
                            tuple(a for a in ARMS_3D if chosen is None or a in chosen), args.steps3d, 16))
        jobs = []
        for seed in range(args.seeds):  # seed by seed: a grid cut short keeps whole seeds
            for name, dims, imported, fracs, arms, steps, batch in targets:
                for fraction in sorted(fracs, reverse=True):
                    for arm in arms:
                        jobs.append((Cell(name, dims, fraction, seed, arm), imported, steps, batch))
        results = []
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_cell, c, imp, work, s, b, source_run, env, source_imported, args.source_epochs)
                       for c, imp, s, b in jobs]
            for f in futures:
                r = f.result()
                results.append(r)
                print(f"{r['target']} frac {r['fraction']:g} seed {r['seed']} {r['arm']}: test AUC "
                      f"{r['test_auc']:.3f} (n={r['n_train']}, {r['steps']} steps, {r['total_s']:.0f} s)", flush=True)
        table = aggregate(results)
        total = time.monotonic() - start
        print()
        if need_source:
            print(f"source run: {source_run} ({'given' if args.source_run else f'trained in {source_s:.0f} s'})")
        print(format_table(table))
        print(f"grid: 2D fractions {fractions}, 3D fractions {fractions3d}, {args.seeds} seed(s), {args.steps} steps "
              f"(2D) / {args.steps3d} (3D) per run; 3D arms scratch and inflated fine-tune only (no 3D linear probe)")
        print(f"total {total / 60:.1f} min, {len(results)} runs")
        if args.json:
            args.json.write_text(json.dumps({
                "source_run": str(source_run), "source_train_s": source_s, "steps_2d": args.steps,
                "steps_3d": args.steps3d, "seeds": args.seeds, "fractions": fractions, "fractions3d": fractions3d,
                "total_s": total, "table": table, "runs": results,
            }, indent=2), encoding="utf-8")
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
