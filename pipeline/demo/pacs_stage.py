"""``radpipe demo --pacs``: PACS in, PACS out against a local Orthanc.

The stage starts an Orthanc of its own (:mod:`pipeline.demo.orthanc`: loopback ports, storage and config in
``DIR/pacs/orthanc``, a password made for this run in ``DIR/pacs/credentials.json``), stores the demo's hospital
export in it, pulls the label sheet's studies back by accession number over DICOMweb (``radpipe pull``), predicts
them with the trained model, writes one DICOM SR per series and pushes them to Orthanc (``radpipe predict
--dicom-out --push``), then asks Orthanc for each SR sent. Without Orthanc installed it says so in one line and
is skipped.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import requests

from pipeline.demo.orthanc import OrthancServer, missing
from pipeline.infer.dicom_sr import pushed


class DemoSteps(Protocol):
    """What the stage needs of :class:`pipeline.demo.run.Demo`."""

    out: Path

    def say(self, text: str) -> None: ...

    def step(self, title: str) -> None: ...

    def run(self, argv: Sequence[Any]) -> None: ...


def _write_credentials(path: Path, user: str, password: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"user": user, "password": password}, f)
    return path


def _store_export(server: OrthancServer, export_dir: Path, workers: int = 4) -> tuple[int, int]:
    """Store every file of the export in Orthanc over REST; returns (stored, refused: not DICOM or damaged)."""
    files = sorted(p for p in export_dir.rglob("*") if p.is_file())

    def store(path: Path) -> bool:
        r = requests.post(f"{server.url}/instances", data=path.read_bytes(), auth=(server.user, server.password),
                          timeout=60)
        if 400 <= r.status_code < 500 and r.status_code not in (401, 403):  # not DICOM, damaged, or a DICOMDIR
            return False
        r.raise_for_status()
        return True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        stored = sum(pool.map(store, files))
    return stored, len(files) - stored


def pacs_stage(demo: DemoSteps, run_dir: Path, export_dir: Path, labels_csv: Path) -> dict[str, Any]:
    """Run the PACS stage; returns its figures (``pacs_skipped`` with the reason when Orthanc is missing).

    Args:
        demo: the running demo (narration and the commands it runs).
        run_dir: the trained run that predicts.
        export_dir: the hospital export stored in the PACS.
        labels_csv: the label sheet whose accession numbers are pulled.

    Returns:
        ``pacs_stored``, ``pacs_pulled_instances``, ``pacs_srs_written``, ``pacs_srs_in_orthanc``.
    """
    reason = missing()
    if reason:
        demo.say(f"\n[PACS stage skipped: {reason}]")
        return {"pacs_skipped": reason}
    demo.step("PACS in, PACS out: a local Orthanc; pull by accession over DICOMweb; SRs pushed back")
    folder = demo.out / "pacs"
    user, password = "radpipe", secrets.token_urlsafe(16)
    credentials = _write_credentials(folder / "credentials.json", user, password)
    server = OrthancServer(folder / "orthanc", user=user, password=password)
    server.start()
    try:
        stored, refused = _store_export(server, Path(export_dir))
        demo.say(f"    Orthanc at {server.dicomweb_url} (storage {server.folder}): {stored} object(s) of the export "
                 f"stored, {refused} file(s) refused (not DICOM or damaged)")
        pulled, srs = folder / "export", folder / "sr"
        demo.run(["pull", server.dicomweb_url, "--accessions", labels_csv, "--key", "accession_number",
                  "--modality", "CT", "--out", pulled, "--credentials", credentials])
        demo.run(["predict", "--run", run_dir, pulled, "--out", folder / "predictions.csv", "--modality", "CT",
                  "--series", "largest-series", "--dicom-out", srs, "--push", server.dicomweb_url,
                  "--credentials", credentials])
        sent = {name: uid for name, uid in pushed(srs).items() if name.endswith(".sr.dcm")}
        found = sum(server.has_instance(uid) for uid in sent.values())
        n_written = len(list(srs.glob("*.sr.dcm")))
    finally:
        server.stop()
    n_pulled = sum(1 for _ in pulled.rglob("*.dcm"))
    demo.say(f"    {found} of {n_written} DICOM SR(s) reached Orthanc (each looked up there by its SOP Instance UID)")
    return {"pacs_stored": stored, "pacs_pulled_instances": n_pulled, "pacs_srs_written": n_written,
            "pacs_srs_in_orthanc": found}
