"""A local Orthanc PACS for ``radpipe demo --pacs`` and the tests: its own process, loopback ports, config and
storage in a folder of its own.

Needs the ``Orthanc`` binary (Debian package ``orthanc``) and its DICOMweb plugin (``orthanc-dicomweb``);
:func:`missing` says which is absent. The server asks for HTTP basic auth, speaks DICOMweb under ``/dicom-web``
and DIMSE as :data:`AET`, checks the called AE title (a wrong one is rejected), answers C-FIND / C-GET /
C-MOVE / C-STORE from any calling AE title, and moves only to the modalities it is given (name ->
``[AET, host, port]``).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

USER, PASSWORD = "radpipe", "pacs-secret-1"
AET = "ORTHANC"
PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")
INSTALL_HINT = "apt-get install -y orthanc orthanc-dicomweb"


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def orthanc_binary() -> Path | None:
    """The ``Orthanc`` executable (on ``$PATH`` or Debian's ``/usr/sbin/Orthanc``), or None."""
    found = shutil.which("Orthanc")
    if found:
        return Path(found)
    return Path("/usr/sbin/Orthanc") if Path("/usr/sbin/Orthanc").is_file() else None


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin installed by Debian's ``orthanc-dicomweb``, or None."""
    found = [Path(p) for p in PLUGIN_PATHS if Path(p).is_file()]
    if not found:
        found = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
    return found[0] if found else None


def missing() -> str:
    """Why a local Orthanc cannot start here ("" when it can)."""
    if orthanc_binary() is None:
        return f"Orthanc is not installed ({INSTALL_HINT})"
    if dicomweb_plugin() is None:
        return f"the Orthanc DICOMweb plugin is not installed ({INSTALL_HINT})"
    return ""


class OrthancServer:
    """One Orthanc process; :meth:`start` returns once its REST API answers, :meth:`stop` ends it.

    Args:
        folder: its config, storage and log.
        user: HTTP basic user.
        password: HTTP basic password.
        modalities: DIMSE nodes it may send to (C-MOVE destinations): name -> ``[AET, host, port]``.
    """

    def __init__(self, folder: Path, user: str = USER, password: str = PASSWORD,
                 modalities: dict[str, list[str | int]] | None = None) -> None:
        self.folder = Path(folder)
        self.user, self.password = user, password
        self.modalities = dict(modalities or {})
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
            "Name": "radpipe-local", "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": AET, "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password}, "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "UnknownSopClassAccepted": True,
            "DicomModalities": self.modalities, "SynchronousCMove": True,
            "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1, "ConcurrentJobs": 2, "HttpThreadsCount": 8,
        }

    def start(self, timeout_s: float = 30.0) -> None:
        """Write the config, start the process, wait until ``/system`` answers.

        Raises:
            RuntimeError: Orthanc is not installed, exited, or did not answer in time (its log's end is quoted).
        """
        binary, plugin = orthanc_binary(), dicomweb_plugin()
        if binary is None or plugin is None:
            raise RuntimeError(missing())
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config(plugin), indent=1))
        config.chmod(0o600)  # it holds the password
        with open(self.folder / "orthanc.log", "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([str(binary), str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.folder)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: "
                                   f"{(self.folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", auth=(self.user, self.password), timeout=1).ok:
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
        """Store DICOM files through the REST API; returns Orthanc's instance ids (any refusal raises)."""
        ids = []
        with requests.Session() as s:
            s.auth = (self.user, self.password)
            for path in paths:
                r = s.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
                r.raise_for_status()
                ids.append(r.json()["ID"])
        return ids

    def get(self, path: str) -> object:
        """GET a REST resource as JSON."""
        r = requests.get(f"{self.url}{path}", auth=(self.user, self.password), timeout=30)
        r.raise_for_status()
        return r.json()

    def has_instance(self, sop_instance_uid: str) -> bool:
        """Whether an instance of this SOP Instance UID is stored (``/tools/lookup``)."""
        r = requests.post(f"{self.url}/tools/lookup", data=sop_instance_uid, auth=(self.user, self.password),
                          timeout=30)
        r.raise_for_status()
        return any(item.get("Type") == "Instance" for item in r.json())

    def clear(self) -> None:
        """Delete every patient (and so every study) stored."""
        for patient in self.get("/patients"):  # type: ignore[union-attr]
            requests.delete(f"{self.url}/patients/{patient}", auth=(self.user, self.password),
                            timeout=30).raise_for_status()
