"""The SR writer without a PACS: content of the report, deterministic UIDs, resumable push, bad inputs."""
from __future__ import annotations

import highdicom as hd
import pydicom
import pytest

from pipeline.cli import main
from pipeline.demo.synthetic_dicom import series_args, write_series
from pipeline.errors import PipelineError
from pipeline.infer.dicom_sr import ModelIdentity, build_sr, push_srs, pushed, write_srs
from pipeline.ingest.pacs_source import PacsError

MODEL = ModelIdentity("resnet18", "ab" * 32)


@pytest.fixture
def headers(tmp_path):
    paths = write_series(tmp_path / "ct", *series_args(rows=8, cols=8, n_slices=4, seed=3,
                                                        patient={"PatientID": "PID-BUILD"}))
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def _read_back(sr):
    """The SR as a PACS gets it: written, read with pydicom, parsed by highdicom."""
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(pydicom.filebase.DicomBytesIO(_bytes(sr))))


def _measurements(sr) -> dict[str, float]:
    group = _read_back(sr).content.get_image_measurement_groups()[0]
    return {m.name.meaning: m.value for m in group.get_measurements()}


def test_a_binary_prediction_with_a_threshold(headers):
    row = {"pred": "yes", "threshold": "0.3", "prob_no": "0.6", "prob_yes": "0.4"}
    sr = build_sr(headers, row, ["no", "yes"], MODEL)
    assert _measurements(sr) == {"Probability of no": 0.6, "Probability of yes": 0.4, "Decision threshold": 0.3}
    group = _read_back(sr).content.get_image_measurement_groups()[0]
    assert [e.value.meaning for e in group.get_qualitative_evaluations()] == ["yes"]
    assert sr.StudyInstanceUID == headers[0].StudyInstanceUID and sr.PatientID == "PID-BUILD"
    assert sr.SeriesInstanceUID != headers[0].SeriesInstanceUID
    again = build_sr(headers, row, ["no", "yes"], MODEL)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (sr.SOPInstanceUID, sr.SeriesInstanceUID)
    other = build_sr(headers, row, ["no", "yes"], ModelIdentity("resnet18", "cd" * 32))
    assert other.SOPInstanceUID != sr.SOPInstanceUID
    refs = {r.ReferencedSOPInstanceUID
            for r in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence}
    assert refs == {h.SOPInstanceUID for h in headers}


def test_a_multilabel_prediction_lists_each_positive_class(headers):
    row = {"pred": "a;c", "prob_a": "0.9", "prob_b": "0.1", "prob_c": "0.7"}
    sr = build_sr(headers, row, ["a", "b", "c"], MODEL)
    group = _read_back(sr).content.get_image_measurement_groups()[0]
    assert [e.value.meaning for e in group.get_qualitative_evaluations()] == ["a", "c"]
    assert set(_measurements(sr)) == {"Probability of a", "Probability of b", "Probability of c"}


def _bytes(ds) -> bytes:
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_write_srs_needs_a_dicom_predict(tmp_path):
    preds = tmp_path / "preds.csv"
    preds.write_text("series_id,pred,status,error\n")
    with pytest.raises(PipelineError, match="needs a DICOM export"):
        write_srs(preds, tmp_path / "srs", ["no", "yes"], MODEL)


def test_push_is_resumable_and_stops_on_a_fatal_error(headers, tmp_path):
    out = tmp_path / "srs"
    out.mkdir()
    for i, pred in enumerate(("no", "yes", "no")):
        sr = build_sr(headers, {"pred": pred, "prob_no": str(i / 4), "prob_yes": "0.5"}, ["no", "yes"], MODEL)
        (out / f"s{i}.sr.dcm").write_bytes(_bytes(sr))

    class Flaky:
        def __init__(self, fail_on: int, fatal: bool) -> None:
            self.calls, self.fail_on, self.fatal = 0, fail_on, fatal

        def send(self, datasets):
            self.calls += 1
            if self.calls == self.fail_on:
                raise PacsError("store: HTTP 503 (server error: try again later)", fatal=self.fatal)

    summary = push_srs(out, Flaky(2, fatal=False))
    assert summary.n_pushed == 2
    assert summary.failures == [("s1.sr.dcm", "store: HTTP 503 (server error: try again later)")]
    assert sorted(pushed(out)) == ["s0.sr.dcm", "s2.sr.dcm"]
    flaky = Flaky(0, fatal=False)
    assert push_srs(out, flaky).n_pushed == 1 and flaky.calls == 1
    (out / "pushed.csv").unlink()
    fatal = Flaky(1, fatal=True)
    summary = push_srs(out, fatal)
    assert fatal.calls == 1 and summary.n_pushed == 0 and len(summary.failures) == 1


def test_push_without_dicom_out_is_one_line(tmp_path, capsys):
    rc = main(["predict", "--run", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "p.csv"), "--push",
               "http://127.0.0.1:1/dicom-web"])
    assert rc == 2 and "--push sends the SRs of --dicom-out" in capsys.readouterr().err
