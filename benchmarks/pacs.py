"""``radpipe pull`` from a local Orthanc (DICOMweb and DIMSE) against plain-HTTP baselines on the same studies.

Writes ``--studies`` synthetic CT studies (one series of ``--slices`` 256x256 int16 slices each), stores them in a
fresh Orthanc (the one the tests start: ``tests/orthanc_server.py``; needs the ``orthanc`` and
``orthanc-dicomweb`` Debian packages), then pulls every study into a fresh folder with each contender, in turns
(``--rounds`` rounds, order rotated each round), all with ``--workers`` studies at once:

* ``radpipe pull, DICOMweb``: QIDO-RS + WADO-RS, one file per instance, pseudonymised names.
* ``radpipe pull, DIMSE``: C-FIND + C-GET.
* ``baseline: WADO-RS raw``: one ``GET /dicom-web/studies/{uid}`` per study, the multipart body streamed to a
  file without parsing (what ``curl`` does): one file per study, which no DICOM reader opens.
* ``baseline: WADO-RS split``: the same request, each part written to its own numbered file, nothing parsed,
  named or made atomic: the least any DICOMweb download that leaves one DICOM file per instance does.
* ``baseline: getscu (DCMTK)``: ``getscu -S`` C-GET of each study, one file per instance (when DCMTK's
  ``getscu`` is on the PATH: Debian package ``dcmtk``).
* ``baseline: Orthanc archive``: ``GET /studies/{id}/archive``, Orthanc's own zip download, streamed to a file.

Each radpipe contender is compared with the fastest baseline of all and with the baseline of its protocol that
leaves one file per instance, as a pull does (``like for like``: WADO-RS split for DICOMweb, getscu for
DIMSE): creating a file costs about 0.6 ms on this
machine's disk (6 us on tmpfs), so on 512 small instances the raw dump's 8 files beat any per-instance
download. ``--work`` chooses where everything is written (e.g. ``/dev/shm`` to take the disk out).
MB is the stored DICOM bytes of the studies (the same for every contender); the median of the rounds is shown.

Run: ``python benchmarks/pacs.py [--studies 8] [--slices 64] [--size 256] [--rounds 3] [--workers 4] [--work DIR]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the Orthanc the tests start
from orthanc_server import AET, PASSWORD, USER, OrthancServer

_ACCEPT = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def _write_studies(root: Path, n: int, slices: int, size_px: int = 256) -> tuple[list[str], int, int]:
    from pipeline.demo.synthetic_dicom import series_args, write_series

    uids, size, count = [], 0, 0
    for i in range(n):
        paths = write_series(root / f"s{i}", *series_args(rows=size_px, cols=size_px, n_slices=slices, seed=1000 + i,
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
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda iu: _stream(f"{server.dicomweb_url}/studies/{iu[1]}", out / f"{iu[0]}.multipart",
                                         _ACCEPT), enumerate(uids)))


def _split_one(url: str, folder: Path) -> None:
    from pipeline.ingest.pacs_dicomweb import multipart_parts

    folder.mkdir(parents=True)
    with requests.get(url, auth=(USER, PASSWORD), headers=_ACCEPT, stream=True, timeout=300) as r:
        r.raise_for_status()
        for i, part in enumerate(multipart_parts(r)):
            with open(folder / f"{i}.dcm", "wb") as f:
                f.write(part)


def _wado_split(server: OrthancServer, uids: list[str], out: Path, workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda iu: _split_one(f"{server.dicomweb_url}/studies/{iu[1]}", out / str(iu[0])),
                      enumerate(uids)))


def _getscu(server: OrthancServer, uids: list[str], out: Path, workers: int) -> None:
    def one(i: int, uid: str) -> None:
        folder = out / str(i)
        folder.mkdir(parents=True)
        subprocess.run(["getscu", "-aet", "RADPIPE", "-aec", AET, "-S", "-k", "QueryRetrieveLevel=STUDY",
                        "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(server.dicom_port), "-od", str(folder)],
                       check=True, capture_output=True, timeout=600)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda iu: one(*iu), enumerate(uids)))


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
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each slice")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--work", help="folder for the PACS, the studies and every download (default: $TMPDIR)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="radpipe-bench-pacs-", dir=args.work))
    os.environ.setdefault("RADPIPE_SECRET_FILE", str(work / "secret.key"))
    server = OrthancServer(work / "orthanc")
    server.start()
    try:
        uids, size, count = _write_studies(work / "src", args.studies, args.slices, args.size)
        server.upload(sorted(p for p in (work / "src").rglob("*") if p.is_file()))
        ids = [str(requests.post(f"{server.url}/tools/lookup", data=u, auth=(USER, PASSWORD), timeout=30).json()[0]["ID"])
               for u in uids]
        contenders: dict[str, Callable[[Path], None]] = {
            "radpipe pull, DICOMweb": lambda out: _pull(server, False, uids, out, args.workers),
            "radpipe pull, DIMSE": lambda out: _pull(server, True, uids, out, args.workers),
            "baseline: WADO-RS raw": lambda out: _wado_raw(server, uids, out, args.workers),
            "baseline: WADO-RS split": lambda out: _wado_split(server, uids, out, args.workers),
            "baseline: Orthanc archive": lambda out: _archive(server, ids, out, args.workers),
        }
        if shutil.which("getscu"):
            contenders["baseline: getscu (DCMTK)"] = lambda out: _getscu(server, uids, out, args.workers)
        like_for_like = {"radpipe pull, DICOMweb": "baseline: WADO-RS split",
                         "radpipe pull, DIMSE": "baseline: getscu (DCMTK)"}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        files: dict[str, int] = {}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                contenders[name](out)
                times[name].append(time.perf_counter() - start)
                files[name] = sum(1 for p in out.rglob("*") if p.is_file())
        median = {name: statistics.median(t) for name, t in times.items()}
        fastest = min(v for k, v in median.items() if k.startswith("baseline"))
        print(f"{args.studies} studies, {count} instances of {args.size}x{args.size}, {size / 1e6:.1f} MB; "
              f"{args.workers} at once; median of {args.rounds} rounds; CPUs: {os.cpu_count()}; written under {work}")
        print(f"{'contender':28s} {'files':>6s} {'s':>7s} {'MB/s':>8s} {'inst/s':>8s} {'x fastest':>10s} "
              f"{'x like for like':>16s}")
        for name, seconds in median.items():
            like = median.get(like_for_like.get(name, ""))
            ratio = f"{seconds / like:16.2f}" if like else f"{'':16s}"
            print(f"{name:28s} {files[name]:6d} {seconds:7.2f} {size / 1e6 / seconds:8.1f} {count / seconds:8.0f} "
                  f"{seconds / fastest:10.2f} {ratio}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
