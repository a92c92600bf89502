"""``pull`` without a PACS: SOURCE and credentials parsing, and a fake PACS that fails mid-series or per target."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from pipeline.demo.synthetic_dicom import series_args, write_series
from pipeline.errors import ConfigError, ManifestError
from pipeline.ingest.pacs_source import (
    Credentials,
    PacsError,
    load_credentials,
    parse_source,
)
from pipeline.ingest.pull import Target, pull, read_targets
from pipeline.pseudonym import Pseudonymiser


@pytest.mark.parametrize("text, kind, aet, port", [
    ("http://pacs:8042/dicom-web/", "dicomweb", "", 0),
    ("https://pacs.example.org/wado", "dicomweb", "", 0),
    ("dimse://ORTHANC@10.0.0.5:4242", "dimse", "ORTHANC", 4242),
])
def test_parse_source(text, kind, aet, port):
    source = parse_source(text)
    assert (source.kind, source.aet, source.port) == (kind, aet, port)
    assert not source.url.endswith("/")


@pytest.mark.parametrize("text, message", [
    ("ftp://pacs/x", "neither a DICOMweb URL"),
    ("dimse://pacs:4242", "not a DIMSE node"),
    ("dimse://ORTHANC@pacs", "not a DIMSE node"),
    ("dimse://A234567890123456789@pacs:4242", "longer than 16"),
    ("https://me:s3cret@pacs/dicom-web", "holds a user or password"),
])
def test_parse_source_refuses_bad_sources(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_source(text)
    assert "s3cret" not in str(info.value)


def test_credentials_from_json_ini_and_environment(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"token": "abc"}))
    assert load_credentials(j) == Credentials(token="abc")
    ini = tmp_path / "c.ini"
    ini.write_text("user = u\npassword = p w\n")
    assert load_credentials(ini) == Credentials("u", "p w")
    env = {"RADPIPE_PACS_USER": "eu", "RADPIPE_PACS_PASSWORD": "ep"}
    assert load_credentials(None, env) == Credentials("eu", "ep")
    assert load_credentials(None, {}) == Credentials()
    assert "ep" not in repr(load_credentials(None, env))


@pytest.mark.parametrize("content, message", [
    ('{"user": "u"}', "needs a password"),
    ('{"user": "u", "password": "p", "token": "t"}', "not both"),
    ('{"login": "u"}', "unknown key"),
    ("{not json", "not valid JSON"),
])
def test_bad_credentials_files(tmp_path, content, message):
    path = tmp_path / "c"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_credentials(path)


def test_read_targets_numbers_rows_like_the_sheet(tmp_path):
    sheet = tmp_path / "s.csv"
    sheet.write_text("accession number;x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no column 'accession_number'"):
        read_targets(sheet)
    sheet.write_text("\ufeffAccessionNumber,label\nA1,1\n\n A2 ,0\n", encoding="utf-8")
    assert read_targets(sheet) == [Target("row 2", "A1"), Target("row 3", "A2")]
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ManifestError, match="empty"):
        read_targets(tmp_path / "e.csv")


class FakePacs:
    """Two studies of one series each; ``break_after`` instances into a fetch, the connection drops."""

    def __init__(self, series: dict[str, list[Path]], break_after: int | None = None, http_500: str = "") -> None:
        self.files = {acc: [pydicom.dcmread(p) for p in paths] for acc, paths in series.items()}
        self.break_after, self.http_500 = break_after, http_500
        self.fetched: list[int] = []

    def _study(self, uid):
        return next(ds for ds in self.files.values() if ds[0].StudyInstanceUID == uid)

    def find_studies(self, accession="", study_uid=""):
        if accession == self.http_500:
            raise PacsError("study query: HTTP 500 (server error: try again later)")
        return [self.files[accession][0].StudyInstanceUID] if accession in self.files else []

    def find_series(self, study_uid, modalities=()):
        return [self._study(study_uid)[0].SeriesInstanceUID]

    def find_instances(self, study_uid, series_uid):
        return [ds.SOPInstanceUID for ds in self._study(study_uid)]

    def fetch(self, study_uid, series_uid, sop_uids, sink):
        wanted = [ds for ds in self._study(study_uid) if sop_uids is None or ds.SOPInstanceUID in sop_uids]
        self.fetched.append(len(wanted))
        for i, ds in enumerate(wanted):
            if self.break_after is not None and i == self.break_after:
                raise PacsError("series retrieve: server unreachable (connection reset)")
            sink(ds)

    def send(self, datasets):
        raise NotImplementedError


@pytest.fixture
def two_studies(tmp_path):
    out = {}
    for i, accession in enumerate(("A-ONE", "A-TWO")):
        out[accession] = write_series(tmp_path / accession, *series_args(rows=8, cols=8, n_slices=5, seed=i,
                                                                          patient={"AccessionNumber": accession}))
    return out


def test_a_dropped_transfer_is_listed_and_a_rerun_completes_it(two_studies, tmp_path):
    out = tmp_path / "export"
    targets = [Target("row 2", "A-ONE"), Target("row 3", "A-TWO"), Target("row 4", "A-NONE")]
    summary = pull(FakePacs(two_studies, break_after=3), targets, out, workers=1)
    assert summary.n_fetched == 6  # 3 of each study before the drop
    assert [label for label, _ in summary.failures] == ["row 2", "row 3", "row 4"]
    assert "connection reset" in summary.failures[0][1] and summary.failures[2][1] == "matched no study on the PACS"
    assert all(pydicom.dcmread(p).pixel_array.shape == (8, 8) for p in out.rglob("*.dcm"))  # whole files only
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    fake = FakePacs(two_studies)
    summary = pull(fake, targets, out, workers=2)
    assert (summary.n_fetched, summary.n_present) == (4, 6) and sorted(fake.fetched) == [2, 2]
    assert [label for label, _ in summary.failures] == ["row 4"]
    assert len(list(out.rglob("*.dcm"))) == 10
    keys = Pseudonymiser()
    assert {p.parent.parent.name for p in out.rglob("*.dcm")} == {
        keys.key(two_studies_ds[0].StudyInstanceUID, "study") for two_studies_ds in fake.files.values()}
    assert "A-NONE" not in summary.failures_path.read_text()



def test_progress_and_summary_count_instances_and_megabytes(two_studies, tmp_path, monkeypatch):
    from contextlib import contextmanager

    import pipeline.ingest.pull as pull_module

    calls: list[tuple[int, int]] = []

    @contextmanager
    def recording(desc, unit="instance", every_s=10.0):
        yield lambda n, size: calls.append((n, size))

    monkeypatch.setattr(pull_module, "transfer_progress", recording)
    out = tmp_path / "export"
    summary = pull(FakePacs(two_studies), [Target("row 2", "A-ONE"), Target("row 3", "A-TWO")], out, workers=2)
    on_disk = sum(p.stat().st_size for p in out.rglob("*.dcm"))
    assert len(calls) == 10 == summary.n_fetched and {n for n, _ in calls} == {1}
    assert sum(size for _, size in calls) == on_disk == summary.n_bytes and on_disk > 10 * 64
    assert f"pulled 10 instance(s) ({on_disk / 1e6:.1f} MB)" in summary.lines()[0]
    calls.clear()
    next(out.rglob("*.dcm")).unlink()
    again = pull(FakePacs(two_studies), [Target("row 2", "A-ONE"), Target("row 3", "A-TWO")], out, workers=1)
    kept = sum(p.stat().st_size for p in out.rglob("*.dcm")) - calls[0][1]
    assert (again.n_fetched, again.n_present, len(calls)) == (1, 9, 1) and again.n_present_bytes == kept
    assert f"9 already on disk ({kept / 1e6:.1f} MB)" in again.lines()[0]

def test_a_server_error_on_one_target_leaves_the_others(two_studies, tmp_path):
    summary = pull(FakePacs(two_studies, http_500="A-ONE"), [Target("row 2", "A-ONE"), Target("row 3", "A-TWO")],
                   tmp_path / "export", workers=2)
    assert summary.failures == [("row 2", "study query: HTTP 500 (server error: try again later)")]
    assert summary.n_fetched == 5


def test_a_fatal_error_stops_with_one_line(two_studies, tmp_path):
    class Down(FakePacs):
        def find_studies(self, accession="", study_uid=""):
            raise PacsError("DIMSE node X@h:1 unreachable (check host and port of SOURCE)", fatal=True)

    with pytest.raises(PacsError, match="unreachable"):
        pull(Down(two_studies), [Target("row 2", "A-ONE"), Target("row 3", "A-TWO")], tmp_path / "export")


class StudyPacs(FakePacs):
    """One study of two series; it also answers a whole-study retrieve, sending each file's bytes (as WADO-RS
    does), and drops the connection ``break_after`` instances into it."""

    def __init__(self, series: dict[str, list[Path]], break_after: int | None = None) -> None:
        super().__init__(series, break_after)
        self.paths = [p for paths in series.values() for p in paths]
        self.study_fetches = 0

    def find_studies(self, accession="", study_uid=""):
        return [self.files["A-ONE"][0].StudyInstanceUID]

    def find_series(self, study_uid, modalities=()):
        return [ds[0].SeriesInstanceUID for ds in self.files.values()]

    def _series(self, uid):
        return next(ds for ds in self.files.values() if ds[0].SeriesInstanceUID == uid)

    def find_instances(self, study_uid, series_uid):
        return [ds.SOPInstanceUID for ds in self._series(series_uid)]

    def fetch(self, study_uid, series_uid, sop_uids, sink):
        wanted = [ds for ds in self._series(series_uid) if sop_uids is None or ds.SOPInstanceUID in sop_uids]
        self.fetched.append(len(wanted))
        for ds in wanted:
            sink(ds)

    def fetch_study(self, study_uid, sink):
        self.study_fetches += 1
        for i, path in enumerate(self.paths):
            if self.break_after is not None and i == self.break_after:
                raise PacsError("study retrieve: server unreachable (connection reset)")
            sink(path.read_bytes())


@pytest.fixture
def one_study_two_series(tmp_path):
    patient = {"AccessionNumber": "A-ONE"}
    return {name: write_series(tmp_path / name, *series_args(rows=8, cols=8, n_slices=3 + i, seed=i, patient=patient,
                                                               series_number=i + 1,
                                                               study_uid="1.2.826.0.1.3680043.8.498.1"))
            for i, name in enumerate(("A-ONE", "B-TWO"))}


def test_a_whole_study_retrieve_files_each_instance_under_its_series_and_resumes(one_study_two_series, tmp_path):
    keys = Pseudonymiser()
    expected = sorted(f"{keys.key(ds.StudyInstanceUID, 'study')}/{keys.key(ds.SeriesInstanceUID, 'series')}/"
                      f"{keys.key(ds.SOPInstanceUID, 'instance')}.dcm"
                      for paths in one_study_two_series.values() for ds in map(pydicom.dcmread, paths))
    assert len({p.split("/")[1] for p in expected}) == 2 and len({p.split("/")[0] for p in expected}) == 1

    def files(out):
        return sorted(str(p.relative_to(out)) for p in out.rglob("*.dcm"))

    pacs = StudyPacs(one_study_two_series)
    summary = pull(pacs, [Target("row 2", "A-ONE")], tmp_path / "whole", workers=1)
    assert (pacs.study_fetches, pacs.fetched) == (1, [])  # one retrieve, no series listed or fetched
    assert (summary.n_fetched, summary.n_series, summary.failures) == (7, 2, [])
    assert files(tmp_path / "whole") == expected
    assert pydicom.dcmread(tmp_path / "whole" / expected[0]).PixelData == pydicom.dcmread(
        next(p for paths in one_study_two_series.values() for p in paths
             if keys.key(pydicom.dcmread(p).SOPInstanceUID, "instance") in expected[0])).PixelData

    cut = StudyPacs(one_study_two_series, break_after=2)  # the drop leaves the study's folder with 2 instances
    summary = pull(cut, [Target("row 2", "A-ONE")], tmp_path / "cut", workers=1)
    assert summary.n_fetched == 2 and "connection reset" in summary.failures[0][1]
    again = StudyPacs(one_study_two_series)
    summary = pull(again, [Target("row 2", "A-ONE")], tmp_path / "cut", workers=1)
    assert again.study_fetches == 0 and (summary.n_fetched, summary.n_present, summary.failures) == (5, 2, [])
    assert files(tmp_path / "cut") == expected


class _Response:
    def __init__(self, body: bytes, chunk: int, kind: str = 'multipart/related; type="application/dicom"; boundary=XyZ'):
        self.headers, self._body, self._chunk = {"Content-Type": kind}, body, chunk
        self.content = body

    def iter_content(self, _size):
        for i in range(0, len(self._body), self._chunk):
            yield self._body[i:i + self._chunk]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_multipart_parts_whatever_the_chunking(chunk):
    from pipeline.ingest.pacs_dicomweb import multipart_parts

    parts = [b"A" * 50 + b"\r\n--Xy", b"", bytes(range(256)) * 3]  # a near-delimiter inside a body
    body = b"preamble\r\n" + b"".join(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    assert list(multipart_parts(_Response(body + b"--XyZ--\r\n", chunk))) == parts
    with pytest.raises(PacsError, match="ended early"):
        list(multipart_parts(_Response(body[:-40], chunk)))
    assert list(multipart_parts(_Response(b"DICM", chunk, kind="application/dicom"))) == [b"DICM"]


@pytest.mark.parametrize("credentials, header, auth", [
    (Credentials(token="tok-1"), "Bearer tok-1", None),
    (Credentials("u", "p"), None, ("u", "p")),
    (Credentials(), None, None),
])
def test_dicomweb_session_carries_basic_or_bearer_auth(monkeypatch, credentials, header, auth):
    from pipeline.ingest.pacs_dicomweb import DicomWebClient

    monkeypatch.setattr(DicomWebClient, "_probe", lambda self, timeout_s: None)
    client = DicomWebClient(parse_source("https://pacs.example.org/dicom-web"), credentials)
    assert client._session.headers.get("Authorization") == header and client._session.auth == auth
