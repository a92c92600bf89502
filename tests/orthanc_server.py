"""A real Orthanc PACS for tests: its own process, loopback ports, config and storage under a temporary folder.

The server itself is :mod:`pipeline.demo.orthanc` (``radpipe demo --pacs`` starts the same one). :func:`orthanc`
is a module-scoped pytest fixture (import it into a test module or ``conftest.py``); :func:`running_orthanc`
starts one with C-MOVE destinations (``modalities``). Both skip the test, saying why, when the ``Orthanc``
binary (Debian package ``orthanc``) or the DICOMweb plugin (``orthanc-dicomweb``) is not installed; ``.ci/run``
installs both.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.demo.orthanc import AET, PASSWORD, USER, OrthancServer, dicomweb_plugin, free_port, missing

__all__ = ["AET", "PASSWORD", "USER", "OrthancServer", "dicomweb_plugin", "free_port", "orthanc", "running_orthanc"]


@contextmanager
def running_orthanc(folder: Path, modalities: dict[str, list[str | int]] | None = None) -> Iterator[OrthancServer]:
    """A started Orthanc (moving only to ``modalities``: name -> ``[AET, host, port]``), stopped on exit; skips the
    test when Orthanc is not installed."""
    reason = missing()
    if reason:
        pytest.skip(f"{reason}; .ci/run installs it")
    server = OrthancServer(folder, modalities=modalities)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A running Orthanc for the test module, stopped at its end; skips when Orthanc is not installed."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
