"""How long does checking a manifest's image files take before training starts? One thread vs a pool.

``radpipe train`` and ``validate-manifest`` open every train/val image (recognised by name and content, header and
first slice decoded) before anything is written. This times
:func:`pipeline.manifest.image_files.image_file_problems` (one thread for files that read fast, a pool when they
wait on storage) against the 8-thread pool every file went to before, on the image files of a manifest (e.g. the
one ``radpipe import-medmnist`` writes), in turns, ``--repeats`` rounds; wall and CPU seconds, medians.
``--delay-ms`` adds that much waiting (``time.sleep``, holding no lock) to every file, standing in for a network
share's latency.

Usage::

    radpipe import-medmnist pneumoniamnist.npz --out /tmp/pneumonia
    python benchmarks/file_check.py --manifest /tmp/pneumonia/manifest.csv --repeats 5
    python benchmarks/file_check.py --manifest /tmp/pneumonia/manifest.csv --repeats 3 --delay-ms 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

import pipeline.manifest.image_files as image_files


def _pool_of_8(paths: list[str]) -> list[str | None]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(image_files.image_file_problem, paths))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV (image column, split)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds, contenders in turns (default: %(default)s)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="waiting added to every file (network share)")
    args = parser.parse_args(argv)
    df = pd.read_csv(args.manifest)
    df = df[df["split"].isin(["train", "val"])]
    paths = [str((args.manifest.parent / p).absolute()) for p in df["image"]]
    if args.delay_ms:
        real = image_files.image_file_problem

        def waiting(path: str, deep: bool = False) -> str | None:
            time.sleep(args.delay_ms / 1000)
            return real(path, deep)

        image_files.image_file_problem = waiting  # type: ignore[assignment]
    contenders = {"adaptive (radpipe)": image_files.image_file_problems, "pool of 8 (before)": _pool_of_8}
    contenders["adaptive (radpipe)"](paths[:64])  # imports and page cache, not timed
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for round_ in range(args.repeats):
        order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            found = contenders[name](paths)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            assert len(found) == len(paths)
    print(f"{len(paths)} files of {args.manifest} (train + val), {args.repeats} rounds, delay {args.delay_ms:g} ms")
    print(f"{'contender':<20} {'wall s (median)':>16} {'CPU s (median)':>15}")
    for name, rows in times.items():
        wall, cpu = statistics.median(w for w, _ in rows), statistics.median(c for _, c in rows)
        print(f"{name:<20} {wall:>16.2f} {cpu:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
