"""MedMNIST v2 end to end through the radpipe CLI, beside the paper's published test figures.

``import-medmnist`` -> ``train`` -> ``evaluate`` (val and test) -> ``report``, each a subprocess
(``python -m pipeline ...``), with one fixed protocol for any MedMNIST file (2D or 3D, binary,
multi-class or multi-label, grey or RGB). Nothing depends on the dataset except the number of
spatial dimensions and the number of training images:

* 2D: ResNet-10 with the small-input stem (3x3 conv, stride 1, no max-pool: the CIFAR-style stem
  the MedMNIST authors use at 28 px), batch 64.
* 3D: ResNet-10 with the standard stem (7x7x7 stride-2 conv + max-pool), batch 32.
* Both: AdamW lr 1e-3, weight decay 1e-4, cosine to 0 (after 1 warm-up epoch when epochs >= 10), ``light``
  augmentation (flips and 90-degree in-plane rotations), ``minmax`` intensity, no class balancing;
  a fixed budget of training images, ``epochs = clip(round(budget / n_train), 2, 40)`` with a budget
  of 38,400 images in 2D (600 steps of 64) and 9,600 volumes in 3D (300 steps of 32), validation
  about 20 times per run, ``best.pt`` chosen by validation AUC (the trainer's rule, as the paper
  chooses its model). The test split is read only by ``evaluate --split test`` after training, and
  nothing is chosen from it.

Why ResNet-10 and these budgets (this 2-core CPU): 2D at 28 px with the small stem, ResNet-18 11
img/s vs ResNet-10 24 img/s (training step, one thread); 3D at 28^3 the small stem is out of reach
(ResNet-10 0.4 volumes/s: 64 channels at full 28^3 resolution), standard stem ResNet-18 13 vol/s vs
ResNet-10 27 vol/s. Inside the full pipeline on the idle machine (2 threads), ResNet-10 small-stem
training runs at about 75 img/s, so 38,400 images (8 PneumoniaMNIST epochs) take about 11 minutes
with import and evaluation, inside the 15-minute target; the 3D budget already meets it. The
paper trains 100 epochs; this protocol trains 8 (PneumoniaMNIST), 40 (BreastMNIST, the cap) and 8
(AdrenalMNIST3D). A first 2D budget of 9,600 images (2 PneumoniaMNIST epochs, chosen while the
machine was shared with other jobs) gave a PneumoniaMNIST test AUC of 0.920.

Figures printed: test AUC and ACC as MedMNIST computes them (binary: AUC of the second class's
probability, ACC at probability > 0.5; multi-class: mean one-vs-rest AUC, ACC of the argmax;
multi-label: means over labels at 0.5), our report's AUC (95% bootstrap CI) and its accuracy at
the Youden threshold fixed on the validation predictions (labelled as such), and timings.

Usage::

    python benchmarks/medmnist.py --data /path/pneumoniamnist.npz --json pneumonia.json --work /tmp/bench/pneu
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

#: The fixed protocol: per spatial dims, model and optimisation; epochs come from the image budget.
PROTOCOL: dict[int, dict[str, Any]] = {
    2: {"model": "resnet10", "small_input": True, "batch_size": 64, "budget_images": 38_400},
    3: {"model": "resnet10", "small_input": False, "batch_size": 32, "budget_images": 9_600},
}
COMMON = {"lr": 1e-3, "optimizer": "adamw", "weight_decay": 1e-4, "scheduler": "cosine", "warmup_epochs": 1,
          "augment": "light", "intensity": "minmax", "min_epochs": 2, "max_epochs": 40, "validations": 20}


def best_paper_resnet(name: str) -> tuple[str, float] | None:
    """The paper's best ResNet test AUC for dataset ``name`` (method, AUC), or None when unknown."""
    rows = {m: v for m, v in PAPER.get(name, {}).items() if m.startswith("ResNet")}
    if not rows:
        return None
    method = max(rows, key=lambda m: rows[m][0])
    return method, rows[method][0]


def protocol(spatial_dims: int, n_train: int, epochs: int | None = None) -> dict[str, Any]:
    """The protocol settings for a dataset of ``spatial_dims`` with ``n_train`` training images."""
    p = {**COMMON, **PROTOCOL[spatial_dims]}
    if epochs is None:
        epochs = int(np.clip(round(p["budget_images"] / max(1, n_train)), p["min_epochs"], p["max_epochs"]))
    p["epochs"] = epochs
    p["warmup_epochs"] = p["warmup_epochs"] if epochs >= 10 else 0
    p["val_every"] = max(1, epochs // p["validations"])
    p["steps"] = epochs * -(-n_train // p["batch_size"])
    return p


def overrides(p: dict[str, Any]) -> list[str]:
    """``--set`` arguments of protocol ``p``."""
    sets = {
        "model.name": p["model"], "model.small_input": str(p["small_input"]).lower(),
        "train.epochs": p["epochs"], "train.batch_size": p["batch_size"], "train.lr": p["lr"],
        "train.optimizer": p["optimizer"], "train.weight_decay": p["weight_decay"],
        "train.scheduler": p["scheduler"], "train.warmup_epochs": p["warmup_epochs"],
        "train.val_every": p["val_every"], "train.key_metric": "auc", "train.device": "cpu",
        "train.tensorboard": "false", "transforms.augment": p["augment"], "transforms.intensity": p["intensity"],
    }
    args = []
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
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


def benchmark(data: str | Path, work: str | Path, epochs: int | None = None, limit: int | None = None,
              threads: int | None = None, bootstrap: int = 1000) -> dict[str, Any]:
    """Import, train, evaluate and report one MedMNIST file; return the figures and timings."""
    from pipeline.manifest.medmnist import dataset_name

    data, work = Path(data).absolute(), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    name = dataset_name(data)
    imported, run, val_csv, test_csv, report_dir = (work / p for p in ("data", "run", "val.csv", "test.csv", "report"))
    start = time.monotonic()
    timings: dict[str, float] = {}
    cmd = ["import-medmnist", str(data), "--out", str(imported)]
    timings["import_s"] = run_cli(cmd + (["--limit", str(limit)] if limit else []), log, env)
    manifest = imported / "manifest.csv"
    df = pd.read_csv(manifest)
    counts = {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")}
    labels = json.loads((imported / "labels.json").read_text(encoding="utf-8"))
    import yaml

    spatial_dims = int(yaml.safe_load((imported / "config.yaml").read_text())["transforms"]["spatial_dims"])
    p = protocol(spatial_dims, counts["train"], epochs)
    timings["train_s"] = run_cli(["train", "--config", str(imported / "config.yaml"), "--manifest", str(manifest),
                                  "--out", str(run), *overrides(p)], log, env)
    timings["evaluate_s"] = sum(
        run_cli(["evaluate", "--run", str(run), "--manifest", str(manifest), "--split", split, "--out", str(out),
                 "--batch-size", "128"], log, env)
        for split, out in (("val", val_csv), ("test", test_csv))
    )
    timings["report_s"] = run_cli(["report", str(test_csv), "--out", str(report_dir), "--threshold-from", str(val_csv),
                                   "--run", str(run), "--bootstrap", str(bootstrap)], log, env)
    timings["total_s"] = time.monotonic() - start
    cpu = {f"{k.replace('-', '_')}_cpu_s": v for k, v in CPU_SECONDS.items()}
    cpu["total_cpu_s"] = sum(CPU_SECONDS.values())
    history = pd.read_csv(run / "metrics.csv")
    val_auc = history["val_auc"].dropna() if "val_auc" in history else pd.Series(dtype=float)
    best_row = history.loc[val_auc.idxmax()] if len(val_auc) else None
    paper = PAPER.get(name, {})
    best = best_paper_resnet(name)
    ours = medmnist_metrics(test_csv, imported / "labels.json")
    return {
        "dataset": name,
        "file": str(data),
        "task": labels["task"],
        "classes": labels["classes"],
        "spatial_dims": spatial_dims,
        "counts": counts,
        "limit": limit,
        "protocol": p,
        "test": {"medmnist_auc": ours["auc"], "medmnist_acc": ours["acc"]},
        "report": _report_figures(report_dir / "report.json"),
        "val": {"best_auc": None if best_row is None else float(best_row["val_auc"]),
                "best_epoch": None if best_row is None else int(best_row["epoch"])},
        "train_images_per_s": float(history["images_per_s"].median()) if "images_per_s" in history else None,
        "timings": timings,
        "cpu_seconds": cpu,
        "paper": {m: {"auc": a, "acc": c} for m, (a, c) in paper.items()},
        "paper_best_resnet": None if best is None else {"method": best[0], "auc": best[1]},
        "meets_best_resnet_auc": None if best is None else ours["auc"] >= best[1],
        "within_15_min": timings["total_s"] <= 900,
        "run_dir": str(run),
    }


def format_result(r: dict[str, Any]) -> str:
    """The printed table of one benchmark result."""
    t, rep, tm = r["test"], r["report"], r["timings"]
    p = r["protocol"]
    lines = [
        f"{r['dataset']}: {r['spatial_dims']}D {r['task']}, train/val/test {r['counts']['train']}/"
        f"{r['counts']['val']}/{r['counts']['test']}" + (f" (first {r['limit']} per split)" if r["limit"] else ""),
        f"protocol: {p['model']} small_input={p['small_input']} batch {p['batch_size']} epochs {p['epochs']} "
        f"({p['steps']} steps) AdamW lr {p['lr']} cosine, augment {p['augment']}; best val AUC "
        f"{r['val']['best_auc'] if r['val']['best_auc'] is None else round(r['val']['best_auc'], 4)} "
        f"at epoch {r['val']['best_epoch']}",
        "",
        f"{'method':<34} {'test AUC':>9} {'test ACC':>9}",
        f"{'radpipe (this run), MedMNIST ACC':<34} {t['medmnist_auc']:>9.3f} {t['medmnist_acc']:>9.3f}",
    ]
    acc_youden = rep.get("accuracy")
    if acc_youden is not None:
        ci = ""
        if rep.get("auc_ci_low") is not None:
            ci = f"   (AUC 95% CI {rep['auc_ci_low']:.3f}-{rep['auc_ci_high']:.3f})"
        lines.append(f"{'radpipe, ACC at val Youden thr.':<34} {rep['auc']:>9.3f} {acc_youden:>9.3f}{ci}")
    for method, v in r["paper"].items():
        lines.append(f"{'paper: ' + method:<34} {v['auc']:>9.3f} {v['acc']:>9.3f}")
    if r["paper_best_resnet"]:
        b = r["paper_best_resnet"]
        verdict = "meets" if r["meets_best_resnet_auc"] else "below"
        lines.append(f"target (paper's best ResNet AUC, {b['method']}): {b['auc']:.3f} -> {verdict}")
    else:
        lines.append("no published figures for this dataset: ours only")
    lines.append(
        f"timings: import {tm['import_s']:.0f} s, train {tm['train_s']:.0f} s, evaluate {tm['evaluate_s']:.0f} s, "
        f"report {tm['report_s']:.0f} s, total {tm['total_s']:.0f} s ({tm['total_s'] / 60:.1f} min; budget 15 min: "
        f"{'ok' if r['within_15_min'] else 'over'}); training {r['train_images_per_s'] or 0:.0f} img/s",
    )
    cpu = r.get("cpu_seconds", {})
    if cpu:
        lines.append(f"CPU time of the commands: train {cpu.get('train_cpu_s', 0):.0f} s, total "
                     f"{cpu.get('total_cpu_s', 0):.0f} s (wall / CPU shows how much the machine was shared)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Protocol and reasons: see the module docstring.")
    parser.add_argument("--data", required=True, metavar="FILE.npz", help="a MedMNIST v2 .npz file")
    parser.add_argument("--json", metavar="OUT.json", help="write the figures and timings there")
    parser.add_argument("--work", metavar="DIR", help="work folder (default: a temporary folder, removed)")
    parser.add_argument("--epochs", type=int, help="override the protocol's epochs (smoke tests)")
    parser.add_argument("--limit", type=int, help="import only the first N cases of each split (smoke tests)")
    parser.add_argument("--threads", type=int, help="torch threads of each command (OMP_NUM_THREADS)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the AUC CI")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="radpipe-medmnist-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        result = benchmark(args.data, work, args.epochs, args.limit, args.threads, args.bootstrap)
        print(format_result(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
