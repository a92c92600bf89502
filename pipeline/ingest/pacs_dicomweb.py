"""DICOMweb: QIDO-RS to find studies, series and instances, WADO-RS to retrieve them, STOW-RS to send.

Built on ``dicomweb-client`` (a requests session with basic or bearer auth; HTTPS verified by requests, with
``$REQUESTS_CA_BUNDLE`` for a hospital CA). Failures become :class:`~pipeline.ingest.pacs_source.PacsError`
with the HTTP status and what it usually means; never the URL, whose query holds the accession number.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from pipeline.ingest.pacs_source import Credentials, PacsError, Sink, Source

_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
_STATUS_HINTS = {
    400: "the server refused the query",
    401: "authentication failed: check --credentials or $RADPIPE_PACS_USER / $RADPIPE_PACS_PASSWORD / "
         "$RADPIPE_PACS_TOKEN",
    403: "access denied for these credentials",
    404: "not found: check that SOURCE is the DICOMweb base URL (e.g. http://host:8042/dicom-web)",
}
_ACCEPT_DICOM = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
# Library loggers that print request URLs (with the accession number in their query) at debug level.
_URL_LOGGERS = ("dicomweb_client", "urllib3", "requests")


def _quiet_url_loggers() -> None:
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _values(rows: list[dict[str, Any]], tag: str) -> list[str]:
    found = []
    for row in rows:
        value = (row.get(tag) or {}).get("Value") or []
        if value and isinstance(value[0], str) and value[0] not in found:
            found.append(value[0])
    return found


def http_error(e: Exception, what: str) -> PacsError:
    """One line for a failed request: the status and its usual cause, never the URL."""
    if isinstance(e, requests.HTTPError) and e.response is not None:
        status = e.response.status_code
        hint = _STATUS_HINTS.get(status, "server error: try again later" if status >= 500 else "unexpected answer")
        fatal = status in (401, 403) or (status == 404 and what == "study query")
        return PacsError(f"{what}: HTTP {status} ({hint})", fatal=fatal)
    if isinstance(e, requests.exceptions.SSLError):
        return PacsError(f"{what}: TLS certificate check failed (set $REQUESTS_CA_BUNDLE to the hospital's CA file)",
                         fatal=True)
    if isinstance(e, requests.ConnectionError):
        return PacsError(f"{what}: server unreachable (check host and port of SOURCE, and the network)", fatal=True)
    if isinstance(e, requests.Timeout):
        return PacsError(f"{what}: no answer in time")
    return PacsError(f"{what}: {type(e).__name__}")


def multipart_parts(response: requests.Response, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The bodies of a ``multipart/related`` answer, streamed (a part in memory at a time); a non-multipart
    ``application/dicom`` answer (some servers send a lone instance so) is one part."""
    kind = response.headers.get("Content-Type", "")
    boundary = next((p.split("=", 1)[1].strip().strip('"') for p in kind.split(";")
                     if p.strip().lower().startswith("boundary=")), "")
    if not kind.lower().startswith("multipart/") or not boundary:
        yield response.content
        return
    delimiter = b"\r\n--" + boundary.encode("ascii")
    buffer = bytearray(b"\r\n")  # so the first delimiter matches like the others
    first, begin, search = True, 0, 0  # begin: where the current part starts in buffer
    for chunk in response.iter_content(chunk_bytes):
        buffer += chunk
        while (found := buffer.find(delimiter, search)) >= 0:
            part_start, begin = begin, found + len(delimiter)
            search = begin
            if first:  # the preamble before the first delimiter
                first = False
                continue
            body = buffer.find(b"\r\n\r\n", part_start, found)
            if body < 0:
                raise PacsError("retrieve: a multipart answer holds a part without headers (transfer cut?)")
            yield bytes(memoryview(buffer)[body + 4:found])  # one copy (a bytearray slice would be two)
        del buffer[:begin]  # once a chunk: parts are sliced by offset, not by shifting the buffer each time
        begin, search = 0, max(0, len(buffer) - len(delimiter))
    if not buffer.startswith(b"--"):  # the closing delimiter is "--boundary--"
        raise PacsError("retrieve: the multipart answer ended early (transfer cut); re-run to fetch the rest")


class DicomWebClient:
    """A :class:`~pipeline.ingest.pacs_source.PacsClient` over DICOMweb."""

    def __init__(self, source: Source, credentials: Credentials, timeout_s: float = 30.0) -> None:
        from dicomweb_client.api import DICOMwebClient

        _quiet_url_loggers()
        session = requests.Session()
        if credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials.user:
            session.auth = (credentials.user, credentials.password)
        self.source = source
        self._session, self._timeout = session, timeout_s
        self._probe(min(timeout_s, 10.0))
        self._client = DICOMwebClient(source.url, session=session, timeout=timeout_s)
        # Retried with back-off: 429/408/503/504 answers and dropped connections, 3 tries in about 1.5 s.
        self._client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=500)

    def _probe(self, timeout_s: float) -> None:
        """Fail at once, in one line, when nothing listens at SOURCE's host and port (no retries to sit through)."""
        parts = urlsplit(self.source.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
        except OSError:
            raise PacsError("DICOMweb server unreachable (check host and port of SOURCE, and the network)",
                            fatal=True) from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (requests.RequestException, OSError) as e:
            raise http_error(e, what) from None

    def find_studies(self, accession: str = "", study_uid: str = "") -> list[str]:
        """QIDO-RS ``/studies`` by AccessionNumber or StudyInstanceUID."""
        filters = {"AccessionNumber": accession} if accession else {"StudyInstanceUID": study_uid}
        rows = self._call("study query", self._client.search_for_studies, search_filters=filters, get_remaining=True)
        return _values(rows, _STUDY_UID)

    def find_series(self, study_uid: str, modalities: tuple[str, ...] = ()) -> list[str]:
        """QIDO-RS ``/studies/{uid}/series``, filtered by Modality here (one query whatever the list)."""
        rows = self._call("series query", self._client.search_for_series, study_uid,
                          fields=["Modality"], get_remaining=True)
        if modalities:
            rows = [r for r in rows if ((r.get("00080060") or {}).get("Value") or [""])[0].upper() in modalities]
        return _values(rows, _SERIES_UID)

    def find_instances(self, study_uid: str, series_uid: str) -> list[str]:
        """QIDO-RS ``/studies/{uid}/series/{uid}/instances``."""
        rows = self._call("instance query", self._client.search_for_instances, study_uid, series_uid,
                          get_remaining=True)
        return _values(rows, _SOP_UID)

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink) -> None:
        """WADO-RS: the whole series as one multipart stream, or the missing instances one by one.

        Each part goes to ``sink`` as the bytes the server sent (as stored: ``transfer-syntax=*``), never decoded
        and re-encoded.
        """
        url = f"{self.source.url}/studies/{study_uid}/series/{series_uid}"
        for sop in [None] if sop_uids is None else sop_uids:
            self._retrieve(url if sop is None else f"{url}/instances/{sop}",
                           "series retrieve" if sop is None else "instance retrieve", sink)

    def fetch_study(self, study_uid: str, sink: Sink) -> None:
        """WADO-RS: a whole study as one multipart stream (each part to ``sink``, as :meth:`fetch`)."""
        self._retrieve(f"{self.source.url}/studies/{study_uid}", "study retrieve", sink)

    def _retrieve(self, url: str, what: str, sink: Sink) -> None:
        try:
            with self._session.get(url, headers=_ACCEPT_DICOM, stream=True, timeout=self._timeout) as response:
                response.raise_for_status()
                for part in multipart_parts(response):
                    sink(part)
        except (requests.RequestException, OSError) as e:
            raise http_error(e, what) from None

    def close(self) -> None:
        """Close the HTTP session's connections."""
        self._session.close()

    def send(self, datasets: list[Any]) -> None:
        """STOW-RS ``/studies``; a failed or partly refused store raises."""
        answer = self._call("store", self._client.store_instances, datasets)
        failed = getattr(answer, "FailedSOPSequence", None)
        if failed:
            raise PacsError(f"store: the server refused {len(failed)} of {len(datasets)} object(s)")
