"""DIMSE: C-FIND (study root) to find studies, series and instances, C-GET to retrieve, C-STORE to send.

Built on ``pynetdicom``. C-GET brings the instances back on the same association (no storage SCP and no
firewall opening needed), so the calling AE title (``--aet``) only has to be one the PACS accepts. Each
worker thread keeps one C-FIND association (released by :meth:`DimseClient.close`); each C-GET and
C-STORE opens its own. Failures become
:class:`~pipeline.ingest.pacs_source.PacsError` naming the node and the DIMSE status, never an identifier.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.dataset import Dataset

from pipeline.ingest.pacs_source import PacsError, Sink, Source

_SUCCESS, _PENDING, _WARNING = 0x0000, (0xFF00, 0xFF01), 0xB000
_UIDS_PER_GET = 200


def _status(status: Any) -> int:
    return int(getattr(status, "Status", -1)) if status is not None else -1



def retrieve_query(study_uid: str, series_uid: str, sop_uids: list[str] | None) -> Dataset:
    """The identifier of a C-GET or C-MOVE: a whole series, or some of its instances."""
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE" if sop_uids else "SERIES"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = series_uid
    if sop_uids:
        q.SOPInstanceUID = sop_uids
    return q

class DimseClient:
    """A :class:`~pipeline.ingest.pacs_source.PacsClient` over DIMSE."""

    def __init__(self, source: Source, aet: str = "RADPIPE", timeout_s: float = 30.0) -> None:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug lines dump query identifiers
        self.source = source
        self.aet = aet
        self.timeout_s = timeout_s
        self._node = f"{source.aet}@{source.host}:{source.port}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []

    def _ae(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        return ae

    @contextmanager
    def _association(self, ae: Any, keep: bool = False, **kwargs: Any) -> Iterator[Any]:
        try:
            socket.create_connection((self.source.host, self.source.port), timeout=min(self.timeout_s, 10)).close()
        except OSError:
            raise PacsError(f"DIMSE node {self._node} unreachable (check host and port of SOURCE)", fatal=True) from None
        assoc = ae.associate(self.source.host, self.source.port, ae_title=self.source.aet, **kwargs)
        if not assoc.is_established:
            if assoc.is_rejected:
                raise PacsError(f"DIMSE node {self._node} rejected the association: check the called AE title in "
                                f"SOURCE and that the PACS accepts our AE title {self.aet!r} (--aet)", fatal=True)
            raise PacsError(f"DIMSE node {self._node} aborted the association (is it a DICOM port?)", fatal=True)
        try:
            yield assoc
        finally:
            if assoc.is_established and not keep:
                assoc.release()

    def _find_association(self) -> Any:
        """This thread's C-FIND association, opened on first use and kept (an association costs ~0.1 s)."""
        from pynetdicom import sop_class

        assoc = getattr(self._local, "find", None)
        if assoc is not None and assoc.is_established:
            return assoc
        ae = self._ae()
        ae.add_requested_context(sop_class.StudyRootQueryRetrieveInformationModelFind)
        with self._association(ae, keep=True) as assoc:
            self._local.find = assoc
            with self._lock:
                self._open.append(assoc)
        return assoc

    def close(self) -> None:
        """Release the kept C-FIND associations."""
        with self._lock:
            kept, self._open = self._open, []
        for assoc in kept:
            if assoc.is_established:
                assoc.release()

    def _find(self, query: Dataset, what: str) -> list[Dataset]:
        from pynetdicom import sop_class

        found = []
        for status, identifier in self._find_association().send_c_find(
                query, sop_class.StudyRootQueryRetrieveInformationModelFind):
            code = _status(status)
            if code in _PENDING and identifier is not None:
                found.append(identifier)
            elif code != _SUCCESS:
                raise PacsError(f"{what} on {self._node} failed (C-FIND status 0x{code & 0xFFFF:04X})")
        return found

    @staticmethod
    def _uids(rows: list[Dataset], keyword: str) -> list[str]:
        out: list[str] = []
        for row in rows:
            value = str(row.get(keyword, "") or "")
            if value and value not in out:
                out.append(value)
        return out

    def find_studies(self, accession: str = "", study_uid: str = "") -> list[str]:
        """C-FIND at STUDY level by AccessionNumber or StudyInstanceUID."""
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.AccessionNumber = accession or ""
        q.StudyInstanceUID = study_uid or ""
        return self._uids(self._find(q, "study query"), "StudyInstanceUID")

    def find_series(self, study_uid: str, modalities: tuple[str, ...] = ()) -> list[str]:
        """C-FIND at SERIES level, filtered by Modality here."""
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.Modality = ""
        rows = self._find(q, "series query")
        if modalities:
            rows = [r for r in rows if str(r.get("Modality", "")).upper() in modalities]
        return self._uids(rows, "SeriesInstanceUID")

    def find_instances(self, study_uid: str, series_uid: str) -> list[str]:
        """C-FIND at IMAGE level."""
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        q.SOPInstanceUID = ""
        return self._uids(self._find(q, "instance query"), "SOPInstanceUID")

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink) -> None:
        """C-GET the series (or the listed instances, in chunks); each arrives as a C-STORE on our association."""
        if sop_uids is None:
            self._get(study_uid, series_uid, None, sink)
            return
        for i in range(0, len(sop_uids), _UIDS_PER_GET):
            self._get(study_uid, series_uid, sop_uids[i:i + _UIDS_PER_GET], sink)

    def _get(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink) -> None:
        from pynetdicom import StoragePresentationContexts, build_role, evt, sop_class

        model = sop_class.StudyRootQueryRetrieveInformationModelGet
        ae = self._ae()
        ae.add_requested_context(model)
        roles = []
        for context in StoragePresentationContexts[:120]:
            ae.add_requested_context(context.abstract_syntax)
            roles.append(build_role(context.abstract_syntax, scp_role=True))
        errors: list[Exception] = []

        def on_store(event: Any) -> int:
            try:
                sink(event.encoded_dataset(include_meta=True))  # the bytes as received: never decoded here
            except Exception as e:  # noqa: BLE001 - raised after the C-GET; the PACS is told this one failed
                errors.append(e)
                return 0xC211
            return _SUCCESS

        q = retrieve_query(study_uid, series_uid, sop_uids)
        with self._association(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
            final, failed = _SUCCESS, 0
            for status, _identifier in assoc.send_c_get(q, model):
                code = _status(status)
                if code not in _PENDING:
                    final, failed = code, int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        if errors:
            raise errors[0]
        if final == _WARNING:
            raise PacsError(f"retrieve from {self._node}: {failed} instance(s) failed to transfer (C-GET warning "
                            "0xB000); re-run to fetch them")
        if final != _SUCCESS:
            raise PacsError(f"retrieve from {self._node} failed (C-GET status 0x{final & 0xFFFF:04X})")

    def send(self, datasets: list[Any]) -> None:
        """C-STORE each dataset on one association; any refusal raises."""
        ae = self._ae()
        for syntax in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}):
            ae.add_requested_context(*syntax)
        with self._association(ae) as assoc:
            for ds in datasets:
                code = _status(assoc.send_c_store(ds))
                if code not in (_SUCCESS, _WARNING) and not 0xB000 <= code <= 0xB0FF:
                    raise PacsError(f"store on {self._node} refused an object (C-STORE status 0x{code & 0xFFFF:04X})")
