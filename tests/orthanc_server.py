"""A real Orthanc PACS for tests: its own process, loopback ports, config and storage under a temporary folder.

:func:`orthanc` is a module-scoped pytest fixture (import it into a test module or ``conftest.py``). It skips the
test, saying why, when the ``Orthanc`` binary (Debian package ``orthanc``) or the DICOMweb plugin
(``orthanc-dicomweb``) is not installed; ``.ci/run`` installs both. The server asks for HTTP basic auth
(:data:`USER` / :data:`PASSWORD`), speaks DICOMweb under ``/dicom-web`` and DIMSE as :data:`AET`, checks the
called AE title (a wrong one is rejected) and answers C-FIND / C-GET / C-STORE from any calling AE title.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

USER, PASSWORD = "radpipe", "pacs-secret-1"
AET = "ORTHANC"
PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin installed by Debian's ``orthanc-dicomweb``, or None."""
    found = [Path(p) for p in PLUGIN_PATHS if Path(p).is_file()]
    if not found:
        found = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
    return found[0] if found else None


class OrthancServer:
    """One Orthanc process; :meth:`start` returns once its REST API answers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Base URL of DICOMweb (QIDO-RS, WADO-RS, STOW-RS)."""
        return f"{self.url}/dicom-web"

    @property
    def dimse_url(self) -> str:
        """The node as radpipe names it: ``dimse://AET@host:port``."""
        return f"dimse://{AET}@127.0.0.1:{self.dicom_port}"

    def config(self, plugin: Path) -> dict:
        """The JSON configuration: loopback only, storage under :attr:`folder`."""
        return {
            "Name": "radpipe-test", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "UnknownSopClassAccepted": True,
            "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1, "ConcurrentJobs": 2, "HttpThreadsCount": 8,
        }

    def start(self, timeout_s: float = 30.0) -> None:
        """Write the config, start the process, wait until ``/system`` answers."""
        binary, plugin = shutil.which("Orthanc") or "/usr/sbin/Orthanc", dicomweb_plugin()
        assert plugin is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config(plugin), indent=1))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.folder)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: "
                                   f"{(self.folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", auth=(USER, PASSWORD), timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        """Terminate the process (kill it when it does not stop within 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def upload(self, paths: list[Path]) -> list[str]:
        """Store DICOM files through the REST API; returns Orthanc's instance ids."""
        ids = []
        with requests.Session() as s:
            s.auth = (USER, PASSWORD)
            for path in paths:
                r = s.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
                r.raise_for_status()
                ids.append(r.json()["ID"])
        return ids

    def get(self, path: str) -> object:
        """GET a REST resource as JSON."""
        r = requests.get(f"{self.url}{path}", auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json()

    def clear(self) -> None:
        """Delete every patient (and so every study) stored."""
        for patient in self.get("/patients"):  # type: ignore[union-attr]
            requests.delete(f"{self.url}/patients/{patient}", auth=(USER, PASSWORD), timeout=30).raise_for_status()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A running Orthanc for the test module, stopped at its end; skips when Orthanc is not installed."""
    if shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").is_file():
        pytest.skip("Orthanc is not installed (apt-get install -y orthanc orthanc-dicomweb; .ci/run does it)")
    if dicomweb_plugin() is None:
        pytest.skip("the Orthanc DICOMweb plugin is not installed (apt-get install -y orthanc-dicomweb)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
