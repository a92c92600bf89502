"""Ingest benchmark: ``radpipe scan`` and series-to-volume loading against the usual tools.

Writes a synthetic hospital export (:func:`pipeline.demo.synthetic_export.write_export`), then measures

* scan throughput (files/s, no cache) with ``--workers`` processes and with one, against a
  single-process loop of ``pydicom.dcmread`` over the same files (whole files, pixel data included),
  and a re-scan served by the cache;
* whole commands against dcm2niix, process start included: ``radpipe scan`` against ``dcm2niix -b o``
  (headers and series assembly, sidecars only) and ``radpipe convert`` against ``dcm2niix -z y``;
* series-to-volume time per axial CT series: radpipe's ``load_series`` (in memory, and with the
  ``.nii.gz`` written as ``radpipe convert`` does), ``dcm2niix -z y -b y`` on a folder holding the
  series, MONAI's ``LoadImage(reader=PydicomReader())`` and ``LoadImage(reader=RadpipeReader())``
  on the same folder.

Every figure is the median of ``--repeats`` runs, the scan contenders run in turns (one of each per
round, so that a drift of the machine's speed hits all alike); ratios are of medians. Run:

    python benchmarks/ingest.py --patients 60 --workers 2
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from pipeline.pseudonym import Pseudonymiser
from pipeline.ingest.scan import output_paths, scan_export
from pipeline.demo.synthetic_export import write_export
from transforms.dicom.headers import read_header

DCM2NIIX = Path(sys.executable).parent / "dcm2niix"


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (pool workers end with their pool)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_all(files: list[Path], reader: Callable[[Path], object]) -> None:
    for path in files:
        try:
            reader(path)
        except Exception:  # noqa: BLE001 - the export holds non-DICOM and truncated files on purpose
            pass


def _fresh_scan(export: Path, index: Path, workers: int, ps: Pseudonymiser) -> None:
    for path in output_paths(index).values():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    scan_export(export, index, workers=workers, pseudonymiser=ps)


def _cached_scan(export: Path, index: Path, workers: int, ps: Pseudonymiser) -> None:
    """A re-scan through the header cache: the state that would let it skip everything is removed first."""
    output_paths(index)["state"].unlink(missing_ok=True)
    scan_export(export, index, workers=workers, pseudonymiser=ps)


def _interleaved_times(fns: dict[str, Callable[[], object]], repeats: int,
                       children: bool = False) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each function, run in turns (one of each per round).

    Turns, not one function's repeats after another's: on a shared or throttled machine the speed
    drifts over seconds, and a ratio of medians taken minutes apart would measure the drift.
    """
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    clock = _children_cpu if children else _cpu
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu, start = clock(), time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(clock() - cpu)
    return {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in fns}


def bench_scan(export: Path, work: Path, workers: int, repeats: int) -> list[tuple[str, float, float, str]]:
    """Rows (what, wall seconds, CPU seconds, note) of the scan part."""
    ps = Pseudonymiser(b"benchmark-secret-benchmark-secret")
    files = sorted(p for p in export.rglob("*") if p.is_file())
    n = len(files)
    _read_all(files, lambda p: p.read_bytes())  # warm the page cache for everyone
    index = work / "scan" / "index.csv"
    dcmread = f"pydicom.dcmread loop, whole files, 1 process ({n} files)"
    times = _interleaved_times({
        dcmread: lambda: _read_all(files, pydicom.dcmread),
        "transforms read_header loop (pydicom, header only), 1 process": lambda: _read_all(files, read_header),
        "radpipe scan, 1 worker (in process), no cache": lambda: _fresh_scan(export, index, 1, ps),
        f"radpipe scan, {workers} workers, no cache": lambda: _fresh_scan(export, index, workers, ps),
        f"radpipe scan, {workers} workers, re-scan from cache":
            lambda: _cached_scan(export, index, workers, ps),
        f"radpipe scan, {workers} workers, re-scan of an unchanged export":
            lambda: scan_export(export, index, workers=workers, pseudonymiser=ps),
    }, repeats)
    t_dcmread, c_dcmread = times.pop(dcmread)
    rows = [(dcmread, t_dcmread, c_dcmread, f"{n / t_dcmread:,.0f} files/s")]
    for what, (wall, cpu) in times.items():
        rows.append((what, wall, cpu, f"{n / wall:,.0f} files/s  wall {t_dcmread / wall:.2f}x, "
                                      f"CPU {c_dcmread / cpu:.2f}x dcmread"))
    return rows


def bench_volumes(export: Path, work: Path, n_series: int, repeats: int) -> list[tuple[str, float, str]]:
    """Rows (what, seconds per series, note) of the series-to-volume part."""
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    from pipeline.ingest.convert import write_nifti
    from transforms.dicom.volume import load_series
    from transforms.readers import RadpipeReader

    ps = Pseudonymiser(b"benchmark-secret-benchmark-secret")
    summary = scan_export(export, work / "volumes" / "index.csv", workers=1, pseudonymiser=ps, use_cache=False)
    series = [s for s in summary.series if s.orientation_label == "axial"][:n_series]
    folders = []
    for k, info in enumerate(series):
        folder = work / "series" / f"s{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in info.files:
            target = folder / Path(f).name
            if not target.exists():
                os.link(f, target)
        folders.append(folder)
    monai_reader = LoadImage(reader=PydicomReader(), image_only=True)
    radpipe_reader = LoadImage(reader=RadpipeReader(), image_only=True)
    nifti_dir = work / "nifti"
    nifti_dir.mkdir(exist_ok=True)

    def radpipe_load() -> None:
        for info in series:
            load_series(info)

    def radpipe_convert() -> None:
        for k, info in enumerate(series):
            volume, affine, _ = load_series(info)
            write_nifti(volume, affine, nifti_dir / f"s{k:03d}.nii.gz")

    def dcm2niix() -> None:
        for k, folder in enumerate(folders):
            out = work / "dcm2niix" / f"s{k:03d}"
            out.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(DCM2NIIX), "-z", "y", "-b", "y", "-f", "%s", "-o", str(out), str(folder)],
                           check=True, capture_output=True)

    def monai_pydicom() -> None:
        for folder in folders:
            monai_reader(str(folder))

    def monai_radpipe() -> None:
        for folder in folders:
            radpipe_reader(str(folder))

    monai_pydicom()  # first call imports pydicom's pixel handlers; not part of the figure
    radpipe_load()
    per = len(series)
    contenders = {
        "radpipe load_series (SeriesInfo from scan -> array + RAS affine)": radpipe_load,
        "radpipe load_series + write .nii.gz (what convert does per series)": radpipe_convert,
        "LoadImage(RadpipeReader) on a series folder (headers + assembly + pixels)": monai_radpipe,
        "LoadImage(PydicomReader) (MONAI) on a series folder": monai_pydicom,
    }
    if DCM2NIIX.is_file():
        contenders["dcm2niix -z y -b y on a series folder (process start included)"] = dcm2niix
    return [(what, wall / per, "") for what, (wall, _) in _interleaved_times(contenders, repeats).items()]


def _command(args: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def bench_commands(export: Path, work: Path, workers: int, repeats: int) -> list[tuple[str, float, float, str]]:
    """Rows (what, wall s, CPU s of the children, note): whole commands against dcm2niix, process start included.

    ``dcm2niix -b o`` reads every header and assembles the series, writing sidecars only: what ``radpipe scan``
    does; ``dcm2niix -z y`` also writes every series as ``.nii.gz``: what ``radpipe convert`` does. One thread each
    for dcm2niix (its default), ``--workers`` for radpipe; every command starts from no output and no cache.
    """
    if not DCM2NIIX.exists():
        return []
    env = {**os.environ, "RADPIPE_SECRET_FILE": str(work / "bench-secret.key")}
    # radpipe's bytecode, as an installed package has it (pip compiles it when it installs a wheel); without it,
    # under PYTHONDONTWRITEBYTECODE (set on some machines) every run would compile radpipe's sources again
    packages = [str(Path(__file__).resolve().parent.parent / name) for name in ("pipeline", "transforms", "models")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL)
    radpipe = [sys.executable, "-m", "pipeline"]
    contenders = {
        "dcm2niix -b o (headers + series, sidecars only)":
            lambda: _command([str(DCM2NIIX), "-b", "o", "-o", str(_fresh(work / "d2n-b")), str(export)], env)(),
        f"radpipe scan --workers {workers}":
            lambda: _command([*radpipe, "scan", str(export), "--out", str(_fresh(work / "rp-scan") / "index.csv"),
                              "--workers", str(workers)], env)(),
        "dcm2niix -z y (every series to .nii.gz)":
            lambda: _command([str(DCM2NIIX), "-z", "y", "-o", str(_fresh(work / "d2n-z")), str(export)], env)(),
        f"radpipe convert --workers {workers}":
            lambda: _command([*radpipe, "convert", str(export), str(_fresh(work / "rp-convert")), "--workers",
                              str(workers)], env)(),
        f"{sys.executable} -c 'import pipeline.ingest.scan' (radpipe's start-up)":
            lambda: _command([sys.executable, "-c", "import pipeline.ingest.scan"], env)(),
    }
    times = _interleaved_times(contenders, repeats, children=True)
    names = list(contenders)
    rows = []
    for k, name in enumerate(names):
        wall, cpu = times[name]
        note = ""
        if name.startswith("radpipe"):
            ref = times[names[k - 1]][0]
            note = f"{wall / ref:.2f}x {names[k - 1].split(' (')[0]}'s wall time"
        rows.append((name, wall, cpu, note))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60, help="patients of the synthetic export (default: 60)")
    parser.add_argument("--workers", type=int, default=2, help="scan worker processes (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown (default: 3)")
    parser.add_argument("--series", type=int, default=10, help="axial series loaded per run (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the export (default: 0)")
    parser.add_argument("--work", help="working folder (default: a temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="radpipe-bench-"))
    try:
        start = time.perf_counter()
        summary = write_export(work, n_patients=args.patients, seed=args.seed)
        t_export = time.perf_counter() - start
        print(f"synthetic export: {args.patients} patients, {summary.n_files} files, {summary.n_image_series} image "
              f"series, written in {t_export:.1f} s; CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; "
              f"median of {args.repeats} runs\n")
        scan_rows = bench_scan(summary.export_dir, work, args.workers, args.repeats)
        volume_rows = bench_volumes(summary.export_dir, work, args.series, args.repeats)
        command_rows = bench_commands(summary.export_dir, work, args.workers, args.repeats)
        width = max(len(r[0]) for r in scan_rows + volume_rows)
        print(f"{'scan (whole export)':<{width}}  {'wall s':>7}  {'CPU s':>7}  throughput (ratios: dcmread / this)")
        for what, wall, cpu, note in scan_rows:
            print(f"{what:<{width}}  {wall:7.3f}  {cpu:7.3f}  {note}")
        print(f"\n{'series to volume (' + str(min(args.series, summary.n_patients)) + ' axial CTs)':<{width}}  "
              f"{'ms/series':>8}  ratio")
        by_name = {r[0]: r[1] for r in volume_rows}
        ours = volume_rows[0][1]
        for what, seconds, _ in volume_rows:
            print(f"{what:<{width}}  {seconds * 1000:8.1f}  {seconds / ours:5.2f}x load_series")
        monai = next(v for k, v in by_name.items() if "PydicomReader" in k)
        print(f"\nload_series vs MONAI PydicomReader: {monai / ours:.2f}x faster")
        d2n = next((v for k, v in by_name.items() if k.startswith("dcm2niix")), None)
        if d2n is not None:
            ours_convert = volume_rows[1][1]
            print(f"load_series + .nii.gz vs dcm2niix: {ours_convert / d2n:.2f}x dcm2niix's time "
                  f"(load_series alone: {ours / d2n:.2f}x)")
        if command_rows:
            print(f"\n{'whole commands (process start included)':<{width}}  {'wall s':>7}  {'CPU s':>7}  ratio")
            for what, wall, cpu, note in command_rows:
                print(f"{what:<{width}}  {wall:7.3f}  {cpu:7.3f}  {note}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
