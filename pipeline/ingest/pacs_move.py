"""DIMSE with C-MOVE: for a PACS that refuses C-GET and sends only to a destination AE it knows.

:class:`MoveClient` finds like :class:`~pipeline.ingest.pacs_dimse.DimseClient` (C-FIND) and sends like it
(C-STORE), but retrieves with C-MOVE: it runs its own storage SCP (our AE title, ``--aet``) on ``--move-port``
for as long as the pull lasts, and asks the PACS to move each series (or its missing instances) to that AE
title. The PACS must know the title and the address it reaches us at (its administrator adds it once). Each
instance that arrives is routed by its Series Instance UID to the series being moved and handed to its sink as
the bytes received (never decoded and re-encoded); an instance of a series no one asked for is refused.
"""
from __future__ import annotations

import threading
from typing import Any

from pipeline.ingest.pacs_dimse import (
    _PENDING,
    _SUCCESS,
    _UIDS_PER_GET,
    _WARNING,
    DimseClient,
    _status,
    retrieve_query,
)
from pipeline.ingest.pacs_source import PacsError, Sink, Source

_MOVE_HINTS = {
    0xA701: "the PACS is out of resources for the move",
    0xA702: "the PACS could not send to us: check that its entry for our AE title {aet!r} points at this host "
            "and port {port}",
    0xA801: "move destination unknown: the PACS does not know our AE title {aet!r}; ask its administrator to add "
            "it with this host and port {port}",
    0xC000: "the PACS could not process the move: either it does not know our AE title {aet!r} as a move "
            "destination, or it cannot reach us at the address it has for it (we listen on port {port}); ask its "
            "administrator",
}
_REFUSED = 0x0124  # "refused: not authorised", the answer to a C-STORE of a series no one asked for


class _Route:
    """The sink of one series being moved, and what went wrong while writing to it."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.errors: list[Exception] = []


class MoveClient(DimseClient):
    """A :class:`~pipeline.ingest.pacs_source.PacsClient` over DIMSE that retrieves with C-MOVE.

    Args:
        source: the PACS node.
        aet: our AE title: the calling title and the move destination.
        move_host: address our storage SCP listens on (one the PACS reaches us at; ``0.0.0.0``: all).
        move_port: TCP port of our storage SCP.
        timeout_s: seconds to wait for the PACS.

    Raises:
        PacsError: the storage SCP cannot listen there (port in use, address not on this machine).
    """

    def __init__(self, source: Source, aet: str = "RADPIPE", move_host: str = "0.0.0.0", move_port: int = 11112,
                 timeout_s: float = 30.0) -> None:
        super().__init__(source, aet, timeout_s=timeout_s)
        self.move_host, self.move_port = move_host, move_port
        self._routes: dict[str, _Route] = {}
        self._series_locks: dict[str, threading.Lock] = {}
        self._routes_lock = threading.Lock()
        self._server = self._start_scp()

    def _start_scp(self) -> Any:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

        ae = self._ae()
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)  # as stored, compressed too
        try:
            return ae.start_server((self.move_host, self.move_port), block=False,
                                   evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except OSError as e:
            reason = "port in use" if getattr(e, "errno", None) == 98 else type(e).__name__
            raise PacsError(f"cannot listen for C-MOVE on {self.move_host}:{self.move_port} ({reason}); choose another "
                            "--move-port (and tell the PACS) or free that one", fatal=True) from None

    def _on_store(self, event: Any) -> int:
        try:
            series = str(event.dataset.get("SeriesInstanceUID", "") or "")
        except Exception:  # noqa: BLE001 - a dataset that does not decode is refused, not a crash of the SCP
            return 0xC210
        with self._routes_lock:
            route = self._routes.get(series)
        if route is None:
            return _REFUSED
        try:
            route.sink(event.encoded_dataset(include_meta=True))  # the bytes as received
        except Exception as e:  # noqa: BLE001 - raised after the C-MOVE; the PACS is told this one failed
            route.errors.append(e)
            return 0xC211
        return _SUCCESS

    def close(self) -> None:
        """Release the kept C-FIND associations and stop the storage SCP."""
        super().close()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink) -> None:
        """C-MOVE the series (or the listed instances, in chunks) to our AE title; each arrives at our SCP."""
        with self._routes_lock:
            series_lock = self._series_locks.setdefault(series_uid, threading.Lock())
        with series_lock:  # one move of a series at a time: its instances go to one sink
            route = _Route(sink)
            with self._routes_lock:
                self._routes[series_uid] = route
            try:
                chunks = [None] if sop_uids is None else [sop_uids[i:i + _UIDS_PER_GET]
                                                          for i in range(0, len(sop_uids), _UIDS_PER_GET)]
                for chunk in chunks:
                    self._move(study_uid, series_uid, chunk)
            finally:
                with self._routes_lock:
                    self._routes.pop(series_uid, None)
        if route.errors:
            raise route.errors[0]

    def _move(self, study_uid: str, series_uid: str, sop_uids: list[str] | None) -> None:
        from pynetdicom import sop_class

        model = sop_class.StudyRootQueryRetrieveInformationModelMove
        ae = self._ae()
        ae.add_requested_context(model)
        q = retrieve_query(study_uid, series_uid, sop_uids)
        final, failed = _SUCCESS, 0
        with self._association(ae) as assoc:
            for status, _identifier in assoc.send_c_move(q, self.aet, model):
                code = _status(status)
                if code not in _PENDING:
                    final, failed = code, int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        if final == _WARNING:
            raise PacsError(f"retrieve from {self._node}: {failed} instance(s) failed to reach us (C-MOVE warning "
                            "0xB000); re-run to fetch them")
        if final != _SUCCESS:
            hint = _MOVE_HINTS.get(final) or _MOVE_HINTS.get(final & 0xF000) or "our AE title {aet!r}, port {port}"
            raise PacsError(f"retrieve from {self._node} failed (C-MOVE status 0x{final & 0xFFFF:04X}: "
                            f"{hint.format(aet=self.aet, port=self.move_port)})")
