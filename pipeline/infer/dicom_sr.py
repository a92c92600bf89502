"""Predictions as DICOM Structured Reports (``radpipe predict --dicom-out DIR [--push SOURCE]``).

One Comprehensive 3D SR per predicted DICOM series, written with ``highdicom``: a TID 1500 measurement report
whose one measurement group (TID 1501) holds the predicted class as a qualitative evaluation, each class
probability and the binary threshold as numeric measurements (unit ``1``), and the model as algorithm
identification (name: the backbone; version: radpipe's; parameters: the weights' sha256 and the threshold).
The group's source images and the SR's evidence list the series' real Study / Series / SOP Instance UIDs,
read from the series' files when the SR is written; the patient and study modules are the source's (highdicom
copies them), as an SR going back to the source PACS needs. The SR's UIDs derive from the source series and
the weights, so a re-run writes the same objects and a PACS stores a re-sent one once.

``DIR/<series_id>.sr.dcm`` is skipped when present (resumable); ``--push`` records every object sent in
``DIR/pushed.csv`` and sends only those not listed yet (the Grad-CAM maps of :mod:`pipeline.infer.dicom_cam` too).
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.files import atomic_open, write_atomic
from pipeline.infer.prediction_file import read_rows
from models.sources import file_sha256
from pipeline.ingest.rows import safe_name
from transforms.dicom.reference import read_series_ref

log = logging.getLogger("radpipe")
CODING_SCHEME = "99RADPIPE"
SR_SERIES_NUMBER = 9900
PUSHED_FILE = "pushed.csv"


@dataclass(frozen=True)
class ModelIdentity:
    """What the SR names as the algorithm."""

    name: str
    weights_sha256: str
    version: str = __version__


@dataclass
class SrSummary:
    """What :func:`write_srs` / :func:`push_srs` did."""

    n_written: int = 0
    n_present: int = 0
    n_pushed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _code(value: str, meaning: str = "") -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value[:16], scheme_designator=CODING_SCHEME, meaning=(meaning or value)[:64])


def build_sr(sources: list[Any], prediction: dict[str, str], classes: list[str], model: ModelIdentity) -> Any:
    """The Comprehensive 3D SR of one series' prediction.

    Args:
        sources: the series' headers (pydicom Datasets, pixel data not needed).
        prediction: the predictions row: ``pred``, ``prob_<class>``, optionally ``threshold``.
        classes: the run's classes.
        model: the algorithm identification.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    first = sources[0]
    params = [f"weights sha256 {model.weights_sha256}"]
    threshold = prediction.get("threshold", "")
    if threshold:
        params.append(f"threshold {threshold}")
    algorithm = hd.sr.AlgorithmIdentification(name=f"radpipe {model.name}"[:64], version=model.version,
                                              parameters=params)
    unit = hd.sr.CodedConcept("1", "UCUM", "no units")
    measurements = [hd.sr.Measurement(name=_code(f"prob-{i}", f"Probability of {c}"), value=float(prediction[f"prob_{c}"]),
                                      unit=unit)  # the group's algorithm identification applies
                    for i, c in enumerate(classes) if prediction.get(f"prob_{c}", "") not in ("", None)]
    if threshold not in ("", "argmax"):
        measurements.append(hd.sr.Measurement(name=_code("threshold", "Decision threshold"), value=float(threshold),
                                              unit=unit))
    evaluations = [hd.sr.QualitativeEvaluation(name=_code("pred", "Predicted class"), value=_code(f"class-{label}", label))
                   for label in filter(None, str(prediction.get("pred", "")).split(";"))]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=[first.SeriesInstanceUID, "track"]),
                                                     identifier="radpipe prediction"),
        algorithm_id=algorithm, measurements=measurements or None, qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID) for ds in sources])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=["radpipe", model.weights_sha256]), name=f"radpipe {model.name}"[:64]))),
        procedure_reported=_code("classification", "Image classification"),
        imaging_measurements=[group], title=codes.DCM.ImagingMeasurementReport)
    seed = [first.SeriesInstanceUID, model.weights_sha256, prediction.get("pred", ""), threshold]
    return hd.sr.Comprehensive3DSR(
        evidence=sources, content=report, series_instance_uid=generate_uid(entropy_srcs=[*seed, "series"]),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=generate_uid(entropy_srcs=[*seed, "instance"]),
        instance_number=1, manufacturer="radpipe", is_complete=True, is_final=False, is_verified=False,
        series_description=f"radpipe {model.name}"[:64])


def series_sources(predictions: str | Path) -> dict[str, Path]:
    """``series_id`` -> its ``.series.json`` in the scan a DICOM ``predict`` made (``key#n`` for the n-th same key).

    Raises:
        PipelineError: ``predictions`` comes from a NIfTI folder or a manifest (no scan beside it).
    """
    predictions = Path(predictions)
    scan_dir = predictions.with_name(f"{predictions.stem}.scan")
    if not (scan_dir / "index.csv").is_file():
        raise PipelineError(f"--dicom-out needs a DICOM export as INPUT (no scan beside {predictions}); a NIfTI "
                            "folder or manifest carries no DICOM UIDs to reference")
    refs: dict[str, Path] = {}
    with open(scan_dir / "index.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            key, n = row["series_key"], 1
            while (key if n == 1 else f"{key}#{n}") in refs:
                n += 1
            refs[key if n == 1 else f"{key}#{n}"] = (scan_dir / row["series_ref"]).resolve()
    return refs


def pending_rows(predictions: str | Path, out: Path, suffix: str,
                 summary: SrSummary) -> Iterator[tuple[dict[str, str], str, Path]]:
    """``(row, series_id, path)`` of each ``ok`` row of a DICOM predict whose object ``<series>.<suffix>`` is not
    in ``out`` yet; objects already there are counted in ``summary.n_present`` (a re-run writes nothing new)."""
    _, rows, _ = read_rows(predictions)
    for row in rows:
        if row.get("status") != "ok":
            continue
        path = out / f"{safe_name(row['series_id'])}.{suffix}"
        if path.is_file():
            summary.n_present += 1
            continue
        yield row, row["series_id"], path


def source_headers(refs: dict[str, Path], series_id: str) -> list[Any]:
    """The headers (no pixels) of the files of a predicted series, from its scan reference."""
    import pydicom

    if series_id not in refs:
        raise PipelineError("series no longer in the scan index")
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in read_series_ref(refs[series_id])]


def write_srs(predictions: str | Path, out_dir: str | Path, classes: list[str], model: ModelIdentity) -> SrSummary:
    """One SR per ``ok`` row of a DICOM predict's ``predictions`` into ``out_dir`` (present ones kept)."""
    out = Path(out_dir)
    refs = series_sources(predictions)
    summary = SrSummary()
    for row, series_id, path in pending_rows(predictions, out, "sr.dcm", summary):
        try:
            sources = source_headers(refs, series_id)
            sr = build_sr(sources, row, classes, model)
            with atomic_open(path, "wb") as f:
                sr.save_as(f, enforce_file_format=True)
            summary.n_written += 1
        except Exception as e:  # noqa: BLE001 - one series' SR never stops the others
            summary.failures.append((series_id, f"{type(e).__name__}: {e}".splitlines()[0][:300]))
    return summary


def pushed(out_dir: str | Path) -> dict[str, str]:
    """The DICOM files already sent, from ``DIR/pushed.csv``: file name -> SOP Instance UID."""
    path = Path(out_dir) / PUSHED_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["file"]: r["sop_instance_uid"] for r in csv.DictReader(f)}


def _write_pushed(out: Path, sent: dict[str, str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "sop_instance_uid"])
    writer.writerows(sorted(sent.items()))
    write_atomic(out / PUSHED_FILE, buffer.getvalue())


def push_srs(out_dir: str | Path, client: Any, summary: SrSummary | None = None) -> SrSummary:
    """Send the DICOM objects of ``out_dir`` (SRs, Grad-CAM maps) not yet listed in ``pushed.csv``, recording each
    one sent."""
    import pydicom

    out = Path(out_dir)
    summary = summary or SrSummary()
    sent = pushed(out)
    for path in sorted(out.glob("*.dcm")):
        if path.name in sent:
            continue
        ds = pydicom.dcmread(path)
        try:
            client.send([ds])
        except PipelineError as e:
            summary.failures.append((path.name, " ".join(str(e).split())))
            if getattr(e, "fatal", False):
                break
            continue
        sent[path.name] = str(ds.SOPInstanceUID)
        _write_pushed(out, sent)
        summary.n_pushed += 1
    return summary


def model_identity(run_dir: str | Path) -> tuple[list[str], ModelIdentity]:
    """The run's classes and how its SRs name the model (backbone name, sha256 of ``checkpoints/best.pt``)."""
    from pipeline.config import load_config
    from pipeline.manifest.labels import LabelMap

    run = Path(run_dir)
    classes = list(LabelMap.load(run / "labels.json").classes)
    name = load_config(run / "config.yaml").model.name
    return classes, ModelIdentity(name, file_sha256(run / "checkpoints" / "best.pt"))
