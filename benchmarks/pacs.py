"""``radpipe pull`` from a local Orthanc (DICOMweb and DIMSE) against plain-HTTP baselines on the same studies.

Writes ``--studies`` synthetic CT studies (one series of ``--slices`` 256x256 int16 slices each), stores them in a
fresh Orthanc (the one the tests start: ``tests/orthanc_server.py``; needs the ``orthanc`` and
``orthanc-dicomweb`` Debian packages), then pulls every study into a fresh folder with each contender, in turns
(``--rounds`` rounds, order rotated each round), all with ``--workers`` studies at once:

* ``radpipe pull, DICOMweb``: QIDO-RS + WADO-RS, one file per instance, pseudonymised names.
* ``radpipe pull, DIMSE``: C-FIND + C-GET.
* ``baseline: WADO-RS raw``: one ``GET /dicom-web/studies/{uid}`` per study, the multipart body streamed to a
  file without parsing (what ``curl`` does).
* ``baseline: Orthanc archive``: ``GET /studies/{id}/archive``, Orthanc's own zip download, streamed to a file.

MB is the stored DICOM bytes of the studies (the same for every contender); the median of the rounds is shown.

Run: ``python benchmarks/pacs.py [--studies 8] [--slices 64] [--rounds 3] [--workers 4]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the Orthanc the tests start
from orthanc_server import PASSWORD, USER, OrthancServer


def _write_studies(root: Path, n: int, slices: int) -> tuple[list[str], int, int]:
    from pipeline.demo.synthetic_dicom import series_args, write_series

    uids, size, count = [], 0, 0
    for i in range(n):
        paths = write_series(root / f"s{i}", *series_args(rows=256, cols=256, n_slices=slices, seed=1000 + i,
                                                          patient={"PatientID": f"BENCH{i}",
                                                                   "AccessionNumber": f"BENCH-ACC-{i}"}))
        import pydicom

        uids.append(str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID))
        size += sum(p.stat().st_size for p in paths)
        count += len(paths)
    return uids, size, count


def _pull(server: OrthancServer, dimse: bool, uids: list[str], out: Path, workers: int) -> None:
    from pipeline.ingest.pacs_connect import open_client
    from pipeline.ingest.pacs_source import Credentials, parse_source
    from pipeline.ingest.pull import Target, pull

    source = parse_source(server.dimse_url if dimse else server.dicomweb_url)
    client = open_client(source, Credentials(USER, PASSWORD))
    summary = pull(client, [Target(f"study {i}", study_uid=u) for i, u in enumerate(uids)], out, workers=workers)
    if summary.failures:
        raise RuntimeError(summary.failures)


def _stream(url: str, path: Path, headers: dict[str, str] | None = None) -> None:
    with requests.get(url, auth=(USER, PASSWORD), headers=headers or {}, stream=True, timeout=300) as r:
        r.raise_for_status()
        with open(path, "wb") as f:
            f.writelines(r.iter_content(1 << 20))


def _wado_raw(server: OrthancServer, uids: list[str], out: Path, workers: int) -> None:
    out.mkdir(parents=True)
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda iu: _stream(f"{server.dicomweb_url}/studies/{iu[1]}", out / f"{iu[0]}.multipart",
                                         accept), enumerate(uids)))


def _archive(server: OrthancServer, ids: list[str], out: Path, workers: int) -> None:
    out.mkdir(parents=True)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda ii: _stream(f"{server.url}/studies/{ii[1]}/archive", out / f"{ii[0]}.zip"),
                      enumerate(ids)))


def main(argv: list[str] | None = None) -> None:
    """Print one row per contender: seconds, MB/s, instances/s and the ratio to the fastest baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="radpipe-bench-pacs-"))
    os.environ.setdefault("RADPIPE_SECRET_FILE", str(work / "secret.key"))
    server = OrthancServer(work / "orthanc")
    server.start()
    try:
        uids, size, count = _write_studies(work / "src", args.studies, args.slices)
        server.upload(sorted(p for p in (work / "src").rglob("*") if p.is_file()))
        ids = [str(requests.post(f"{server.url}/tools/lookup", data=u, auth=(USER, PASSWORD), timeout=30).json()[0]["ID"])
               for u in uids]
        contenders: dict[str, Callable[[Path], None]] = {
            "radpipe pull, DICOMweb": lambda out: _pull(server, False, uids, out, args.workers),
            "radpipe pull, DIMSE": lambda out: _pull(server, True, uids, out, args.workers),
            "baseline: WADO-RS raw": lambda out: _wado_raw(server, uids, out, args.workers),
            "baseline: Orthanc archive": lambda out: _archive(server, ids, out, args.workers),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                contenders[name](out)
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        fastest = min(v for k, v in median.items() if k.startswith("baseline"))
        print(f"{args.studies} studies, {count} instances, {size / 1e6:.1f} MB; {args.workers} at once; "
              f"median of {args.rounds} rounds; CPUs: {os.cpu_count()}")
        print(f"{'contender':28s} {'s':>7s} {'MB/s':>8s} {'inst/s':>8s} {'x fastest baseline':>19s}")
        for name, seconds in median.items():
            print(f"{name:28s} {seconds:7.2f} {size / 1e6 / seconds:8.1f} {count / seconds:8.0f} "
                  f"{seconds / fastest:19.2f}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
