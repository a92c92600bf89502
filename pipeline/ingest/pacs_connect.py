"""Opening a PACS: the client of a SOURCE's kind (DICOMweb or DIMSE), imported only when used."""
from __future__ import annotations

from pipeline.ingest.pacs_source import Credentials, PacsClient, Source


def open_client(source: Source, credentials: Credentials, aet: str = "RADPIPE", timeout_s: float = 30.0,
                move: tuple[str, int] | None = None) -> PacsClient:
    """The client of ``source``'s kind; a DICOMweb client checks at once that something listens at SOURCE.

    DIMSE authenticates by AE title (``aet``), so ``credentials`` apply to DICOMweb only. ``move`` (DIMSE only):
    retrieve with C-MOVE to our own storage SCP listening at this (host, port), instead of C-GET.
    """
    if source.kind == "dicomweb":
        from pipeline.ingest.pacs_dicomweb import DicomWebClient

        return DicomWebClient(source, credentials, timeout_s=timeout_s)
    if move is not None:
        from pipeline.ingest.pacs_move import MoveClient

        return MoveClient(source, aet, move_host=move[0], move_port=move[1], timeout_s=timeout_s)
    from pipeline.ingest.pacs_dimse import DimseClient

    return DimseClient(source, aet, timeout_s=timeout_s)
