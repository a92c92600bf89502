"""MedMNIST v2 end to end through the radpipe CLI with the default recipes, beside the paper's test figures.

``import-medmnist`` (once) -> for each seed: ``train`` -> ``evaluate`` (val, then test) -> ``report``, each a
subprocess (``python -m pipeline ...``). What is measured is the recipe ``import-medmnist`` writes into
``config.yaml`` (:mod:`pipeline.manifest.medmnist_recipe`: one for 2D, one for 3D, for any MedMNIST-like file;
only the epochs depend on the dataset, from a fixed budget of training images), passed again as ``--set``
arguments so a run's command line shows it whole. ``best.pt`` is chosen by validation AUC (the trainer's rule,
as the paper chooses its model); the test split is read only by ``evaluate --split test`` after training, and
nothing is chosen from it. ``--set KEY=VALUE`` explores a change to the recipe (the result records it).

Figures printed: per seed, test AUC and ACC as MedMNIST computes them (binary: AUC of the second class's
probability, ACC at probability > 0.5; multi-class: mean one-vs-rest AUC, ACC of the argmax; multi-label:
means over labels at 0.5), the best validation AUC and its epoch, wall minutes and training images/s; then
mean ± sample std (min-max) over the seeds beside the paper's rows, whether the mean is above the paper's best
ResNet AUC, and the README table's rows.

Usage::

    python benchmarks/medmnist.py --data pneumoniamnist.npz breastmnist.npz adrenalmnist3d.npz --seeds 3 \\
        --threads 2 --work /tmp/bench/medmnist --json medmnist.json
    python benchmarks/medmnist.py --data breastmnist.npz --epochs 1 --limit 40     # smoke test

Paper: Yang et al., "MedMNIST v2", Scientific Data 10:41 (2023); all baselines from scratch,
100 epochs (see ``PAPER``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Published test (AUC, ACC) of the MedMNIST v2 paper, keyed by dataset then method.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "pneumoniamnist": {
        "ResNet-18 (28)": (0.944, 0.854), "ResNet-18 (224)": (0.956, 0.864),
        "ResNet-50 (28)": (0.948, 0.854), "ResNet-50 (224)": (0.962, 0.884),
        "auto-sklearn": (0.942, 0.855), "AutoKeras": (0.947, 0.878), "Google AutoML Vision": (0.991, 0.946),
    },
    "breastmnist": {
        "ResNet-18 (28)": (0.901, 0.863), "ResNet-18 (224)": (0.891, 0.833),
        "ResNet-50 (28)": (0.857, 0.812), "ResNet-50 (224)": (0.866, 0.842),
        "auto-sklearn": (0.836, 0.803), "AutoKeras": (0.871, 0.831), "Google AutoML Vision": (0.919, 0.861),
    },
    "adrenalmnist3d": {
        "ResNet-18 + 2.5D": (0.718, 0.772), "ResNet-18 + 3D": (0.827, 0.721), "ResNet-18 + ACS": (0.839, 0.754),
        "ResNet-50 + 2.5D": (0.732, 0.763), "ResNet-50 + 3D": (0.828, 0.745), "ResNet-50 + ACS": (0.828, 0.758),
        "auto-sklearn": (0.828, 0.802), "AutoKeras": (0.804, 0.705),
    },
}

def best_paper_resnet(name: str) -> tuple[str, float] | None:
    """The paper's best ResNet test AUC for dataset ``name`` (method, AUC), or None when unknown."""
    rows = {m: v for m, v in PAPER.get(name, {}).items() if m.startswith("ResNet")}
    if not rows:
        return None
    method = max(rows, key=lambda m: rows[m][0])
    return method, rows[method][0]


def protocol(spatial_dims: int, n_train: int, epochs: int | None = None, size: tuple[int, ...] = ()) -> dict[str, Any]:
    """The default recipe (:mod:`pipeline.manifest.medmnist_recipe`) for a dataset, as flat settings.

    Keys: ``model`` (name), ``small_input``, ``transforms.<key>`` for the recipe's transforms settings, the
    ``train`` settings by name, ``eval.<key>`` for its evaluation settings, and ``steps`` (optimiser steps of the
    run). ``epochs`` overrides the budget's.
    """
    from pipeline.manifest.medmnist_recipe import recipe

    sections = recipe(spatial_dims, n_train, size, epochs)
    model, train = sections["model"], sections["train"]
    p: dict[str, Any] = {"model": model["name"], "small_input": bool(model.get("small_input")),
                         **{f"model.{k}": v for k, v in model.items() if k not in ("name", "small_input")},
                         **{f"transforms.{k}": v for k, v in sections["transforms"].items()},
                         "transforms.intensity": "minmax", **train,
                         **{f"eval.{k}": v for k, v in sections["eval"].items()}}
    p["steps"] = p["epochs"] * -(-n_train // p["batch_size"])
    return p


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def overrides(p: dict[str, Any]) -> list[str]:
    """``--set`` arguments of protocol ``p`` (plus CPU, no TensorBoard)."""
    sets: dict[str, Any] = {"train.device": "cpu", "train.tensorboard": False}
    for key, value in p.items():
        if key == "steps":
            continue
        name = {"model": "model.name", "small_input": "model.small_input"}.get(key, key)
        sets[name if "." in name else f"train.{name}"] = value
    args = []
    for key, value in sets.items():
        args += ["--set", f"{key}={_yaml_value(value)}"]
    return args


#: CPU seconds (user + system) of every command run by :func:`run_cli`, by command name.
CPU_SECONDS: dict[str, float] = {}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``python -m pipeline ARGS`` (output appended to ``log``); return its wall-clock seconds.

    The command's CPU seconds are added to ``CPU_SECONDS[args[0]]`` (exact when commands run one at a time).

    Raises:
        RuntimeError: the command failed (the message holds the tail of its output).
    """
    start, cpu = time.monotonic(), _children_cpu()
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ radpipe {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "pipeline", *args], stdout=f, stderr=subprocess.STDOUT,
                              env=env)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8").splitlines()[-15:]
        raise RuntimeError(f"radpipe {args[0]} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))
    CPU_SECONDS[args[0]] = CPU_SECONDS.get(args[0], 0.0) + _children_cpu() - cpu
    return time.monotonic() - start


def medmnist_metrics(predictions: str | Path, labels_json: str | Path) -> dict[str, float]:
    """Test AUC and ACC computed as MedMNIST's ``getAUC`` / ``getACC`` do, from a predictions CSV."""
    from sklearn.metrics import roc_auc_score

    labels = json.loads(Path(labels_json).read_text(encoding="utf-8"))
    task, classes = labels["task"], list(labels["classes"])
    df = pd.read_csv(predictions)
    probs = df[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    if task == "multilabel":
        truth = df[list(labels.get("label_columns") or classes)].to_numpy(dtype=int)
        auc = float(np.mean([roc_auc_score(truth[:, i], probs[:, i]) for i in range(len(classes))]))
        acc = float(np.mean([np.mean(truth[:, i] == (probs[:, i] > 0.5)) for i in range(len(classes))]))
        return {"auc": auc, "acc": acc}
    index = {c: i for i, c in enumerate(classes)}
    truth = df["label"].astype(str).map(index).to_numpy(dtype=int)
    if task == "binary":
        auc = float(roc_auc_score(truth, probs[:, 1]))
        acc = float(np.mean(truth == (probs[:, 1] > 0.5)))
    else:
        auc = float(np.mean([roc_auc_score(truth == i, probs[:, i]) for i in range(len(classes))]))
        acc = float(np.mean(truth == probs.argmax(axis=1)))
    return {"auc": auc, "acc": acc}


def _report_figures(report_json: Path) -> dict[str, Any]:
    overall = json.loads(report_json.read_text(encoding="utf-8"))["overall"]
    keys = ("n", "auc", "auc_ci_low", "auc_ci_high", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
            "threshold")
    return {k: overall.get(k) for k in keys if k in overall}


def import_dataset(data: str | Path, work: Path, log: Path, env: dict[str, str], limit: int | None) -> dict[str, Any]:
    """``import-medmnist`` into ``work/data`` (once for every seed); what it wrote and how long it took."""
    from pipeline.manifest.medmnist import dataset_name

    imported = work / "data"
    cmd = ["import-medmnist", str(data), "--out", str(imported)]
    import_s = run_cli(cmd + (["--limit", str(limit)] if limit else []), log, env)
    import yaml

    df = pd.read_csv(imported / "manifest.csv")
    transforms = yaml.safe_load((imported / "config.yaml").read_text())["transforms"]
    return {"name": dataset_name(data), "dir": imported, "import_s": import_s,
            "counts": {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")},
            "labels": json.loads((imported / "labels.json").read_text(encoding="utf-8")),
            "spatial_dims": int(transforms["spatial_dims"]), "size": tuple(transforms["size"])}


def run_seed(ds: dict[str, Any], p: dict[str, Any], seed: int, work: Path, log: Path, env: dict[str, str],
             bootstrap: int, extra: list[str]) -> dict[str, Any]:
    """Train, evaluate (val, then test) and report one seed of the recipe; its figures and timings."""
    imported, manifest = ds["dir"], ds["dir"] / "manifest.csv"
    run, val_csv, test_csv, report_dir = (work / p_ for p_ in ("run", "val.csv", "test.csv", "report"))
    before = dict(CPU_SECONDS)
    timings = {"import_s": ds["import_s"]}
    sets = overrides(p) + ["--set", f"train.seed={seed}"] + [a for kv in extra for a in ("--set", kv)]
    timings["train_s"] = run_cli(["train", "--config", str(imported / "config.yaml"), "--manifest", str(manifest),
                                  "--out", str(run), *sets], log, env)
    timings["evaluate_s"] = sum(
        run_cli(["evaluate", "--run", str(run), "--manifest", str(manifest), "--split", split, "--out", str(out),
                 "--batch-size", "128"], log, env)
        for split, out in (("val", val_csv), ("test", test_csv))
    )
    timings["report_s"] = run_cli(["report", str(test_csv), "--out", str(report_dir), "--threshold-from", str(val_csv),
                                   "--run", str(run), "--bootstrap", str(bootstrap)], log, env)
    timings["total_s"] = sum(timings.values())
    cpu = {f"{k.replace('-', '_')}_cpu_s": v - before.get(k, 0.0) for k, v in CPU_SECONDS.items()}
    cpu["total_cpu_s"] = sum(cpu.values())
    history = pd.read_csv(run / "metrics.csv")
    val_auc = history["val_auc"].dropna() if "val_auc" in history else pd.Series(dtype=float)
    best_row = history.loc[val_auc.idxmax()] if len(val_auc) else None
    ours = medmnist_metrics(test_csv, imported / "labels.json")
    return {
        "seed": seed,
        "test": {"medmnist_auc": ours["auc"], "medmnist_acc": ours["acc"]},
        "report": _report_figures(report_dir / "report.json"),
        "val": {"best_auc": None if best_row is None else float(best_row["val_auc"]),
                "best_epoch": None if best_row is None else int(best_row["epoch"])},
        "train_images_per_s": float(history["images_per_s"].median()) if "images_per_s" in history else None,
        "timings": timings,
        "cpu_seconds": cpu,
        "within_15_min": timings["total_s"] <= 900,
        "run_dir": str(run),
    }


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(len(a))}


def benchmark(data: str | Path, work: str | Path, epochs: int | None = None, limit: int | None = None,
              threads: int | None = None, bootstrap: int = 1000, seeds: int = 1,
              extra: list[str] | None = None) -> dict[str, Any]:
    """Import one MedMNIST file, then train, evaluate and report the default recipe once per seed.

    Args:
        data: the ``.npz`` file.
        work: work folder (``data/`` once, ``seed<N>/`` per seed).
        epochs: override the recipe's epochs (smoke tests).
        limit: import only the first N cases of each split (smoke tests).
        threads: torch threads of each command.
        bootstrap: resamples of the report's AUC CI.
        seeds: seeds 0 .. seeds-1, one after the other.
        extra: ``section.key=value`` overrides on top of the recipe (recorded in the result; not the default).
    """
    data, work = Path(data).absolute(), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    ds = import_dataset(data, work, log, env, limit)
    p = protocol(ds["spatial_dims"], ds["counts"]["train"], epochs, ds["size"])
    runs = [run_seed(ds, p, seed, work / f"seed{seed}", log, env, bootstrap, list(extra or [])) for seed in range(seeds)]
    name = ds["name"]
    paper, best = PAPER.get(name, {}), best_paper_resnet(name)
    auc = spread([r["test"]["medmnist_auc"] for r in runs])
    val_aucs = [r["val"]["best_auc"] for r in runs if r["val"]["best_auc"] is not None]
    return {
        "dataset": name,
        "file": str(data),
        "task": ds["labels"]["task"],
        "classes": ds["labels"]["classes"],
        "spatial_dims": ds["spatial_dims"],
        "counts": ds["counts"],
        "limit": limit,
        "protocol": p,
        "extra": list(extra or []),
        "runs": runs,
        "summary": {
            "test_auc": auc,
            "test_acc": spread([r["test"]["medmnist_acc"] for r in runs]),
            "val_best_auc": spread(val_aucs) if val_aucs else None,  # None: no run recorded a validation AUC
            "total_s": spread([r["timings"]["total_s"] for r in runs]),
            "train_s": spread([r["timings"]["train_s"] for r in runs]),
        },
        "paper": {m: {"auc": a, "acc": c} for m, (a, c) in paper.items()},
        "paper_best_resnet": None if best is None else {"method": best[0], "auc": best[1]},
        "meets_best_resnet_auc": None if best is None else auc["mean"] > best[1],
        "within_15_min": all(r["within_15_min"] for r in runs),
    }


def _pm(v: dict[str, float]) -> str:
    return f"{v['mean']:.3f} ± {v['std']:.3f} ({v['min']:.3f}-{v['max']:.3f})"


def format_result(r: dict[str, Any]) -> str:
    """The printed table of one benchmark result (every seed, then mean ± std (min-max) beside the paper)."""
    p, summary = r["protocol"], r["summary"]
    stem = "small-input stem" if p["small_input"] else "standard stem"
    lines = [
        f"{r['dataset']}: {r['spatial_dims']}D {r['task']}, train/val/test {r['counts']['train']}/"
        f"{r['counts']['val']}/{r['counts']['test']}" + (f" (first {r['limit']} per split)" if r["limit"] else ""),
        f"recipe: {p['model']} ({stem}), augment {p.get('transforms.augment')}, batch {p['batch_size']}, "
        f"{p['epochs']} epochs ({p['steps']} steps), {p['optimizer']} lr {p['lr']} {p['scheduler']}"
        + (", flip TTA" if p.get("eval.tta") else "")
        + (f"; overrides {' '.join(r['extra'])}" if r["extra"] else ""),
        "",
        f"{'seed':<6} {'test AUC':>9} {'test ACC':>9} {'best val AUC (epoch)':>21} {'total':>8} {'train img/s':>12}",
    ]
    for run in r["runs"]:
        t, v = run["test"], run["val"]
        val = "-" if v["best_auc"] is None else f"{v['best_auc']:.4f} ({v['best_epoch']})"
        lines.append(f"{run['seed']:<6} {t['medmnist_auc']:>9.3f} {t['medmnist_acc']:>9.3f} {val:>21} "
                     f"{run['timings']['total_s'] / 60:>6.1f} m {run['train_images_per_s'] or 0:>12.0f}")
    lines += ["", f"{'method':<34} {'test AUC':>26} {'test ACC':>26}",
              f"{'radpipe, mean ± std (min-max)':<34} {_pm(summary['test_auc']):>26} {_pm(summary['test_acc']):>26}"]
    for method, v in r["paper"].items():
        lines.append(f"{'paper: ' + method:<34} {v['auc']:>26.3f} {v['acc']:>26.3f}")
    if r["paper_best_resnet"]:
        b = r["paper_best_resnet"]
        verdict = "above" if r["meets_best_resnet_auc"] else "not above"
        lines.append(f"target (paper's best ResNet AUC, {b['method']}): {b['auc']:.3f} -> mean of "
                     f"{summary['test_auc']['n']} seed(s) {summary['test_auc']['mean']:.3f}: {verdict}")
    else:
        lines.append("no published figures for this dataset: ours only")
    tot = summary["total_s"]
    lines.append(f"wall per seed (import, train, evaluate, report): mean {tot['mean'] / 60:.1f} min, max "
                 f"{tot['max'] / 60:.1f} min (budget 15 min: {'ok' if r['within_15_min'] else 'over'})")
    return "\n".join(lines)


def markdown_row(r: dict[str, Any]) -> str:
    """The README table's row for one result."""
    s, b = r["summary"], r["paper_best_resnet"]
    target = "-" if b is None else f"{b['auc']:.3f} ({b['method']}): {'above' if r['meets_best_resnet_auc'] else 'not above'}"
    val = "-" if s["val_best_auc"] is None else f"{s['val_best_auc']['mean']:.3f}"
    return (f"| {r['dataset']} | {s['test_auc']['n']} | **{s['test_auc']['mean']:.3f}** ± {s['test_auc']['std']:.3f} "
            f"({s['test_auc']['min']:.3f}-{s['test_auc']['max']:.3f}) | {s['test_acc']['mean']:.3f} ± "
            f"{s['test_acc']['std']:.3f} | {val} "
            f"| {target} | "
            f"{s['total_s']['mean'] / 60:.1f} (max {s['total_s']['max'] / 60:.1f}) |")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Recipe and protocol: see the module docstring.")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE.npz", help="MedMNIST v2 .npz file(s)")
    parser.add_argument("--json", metavar="OUT.json", help="write the figures and timings there")
    parser.add_argument("--work", metavar="DIR", help="work folder (default: a temporary folder, removed)")
    parser.add_argument("--seeds", type=int, default=1, help="train seeds 0..N-1, one after the other (default 1)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="override the recipe (exploration; the result records it)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (smoke tests)")
    parser.add_argument("--limit", type=int, help="import only the first N cases of each split (smoke tests)")
    parser.add_argument("--threads", type=int, help="torch threads of each command (OMP_NUM_THREADS)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the AUC CI")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="radpipe-medmnist-") as tmp:
        base = Path(args.work) if args.work else Path(tmp)
        for data in args.data:
            from pipeline.manifest.medmnist import dataset_name

            work = base / dataset_name(data) if len(args.data) > 1 else base
            result = benchmark(data, work, args.epochs, args.limit, args.threads, args.bootstrap, args.seeds,
                               args.extra)
            print(format_result(result) + "\n", flush=True)
            results.append(result)
    print("| dataset | seeds | test AUC mean ± std (min-max) | test ACC (0.5) mean ± std | best val AUC, mean | "
          "paper's best ResNet AUC | minutes per seed |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        print(markdown_row(result))
    if args.json:
        out = results[0] if len(results) == 1 else {"results": results}
        Path(args.json).write_text(json.dumps(out, indent=2, default=float), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
