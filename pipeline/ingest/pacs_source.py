"""A PACS as ``radpipe pull`` and ``predict --push`` see it: a source URL, credentials, and one error type.

SOURCE is a DICOMweb base URL (``http(s)://host:port/dicom-web``) or a DIMSE node
(``dimse://AET@host:port``). Credentials never come from the command line: a ``--credentials`` file (JSON
``{"user": ..., "password": ...}`` or ``{"token": ...}``, or INI with those keys in a ``[pacs]`` section) or the
environment (``RADPIPE_PACS_USER`` / ``RADPIPE_PACS_PASSWORD`` / ``RADPIPE_PACS_TOKEN``). A URL with a user
or password in it is refused, so a secret never lands in a shell history or a log line.

Example:
    >>> parse_source("dimse://ORTHANC@127.0.0.1:4242")
    Source(kind='dimse', url='dimse://ORTHANC@127.0.0.1:4242', aet='ORTHANC', host='127.0.0.1', port=4242)
    >>> parse_source("https://pacs.example.org/dicom-web/").url
    'https://pacs.example.org/dicom-web'
"""
from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pipeline.errors import ConfigError, PipelineError

ENV_USER, ENV_PASSWORD, ENV_TOKEN = "RADPIPE_PACS_USER", "RADPIPE_PACS_PASSWORD", "RADPIPE_PACS_TOKEN"
MAX_CREDENTIALS_BYTES = 64 * 1024


class PacsError(PipelineError, OSError):
    """A PACS cannot be reached, refuses us, or answers with an error.

    ``fatal``: no request to this PACS can succeed (unreachable, refused association, failed authentication,
    wrong base URL); ``pull`` then stops with this one line instead of listing it for every target.
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True)
class Source:
    """Where studies come from (and where results go)."""

    kind: str  # "dicomweb" or "dimse"
    url: str
    aet: str = ""
    host: str = ""
    port: int = 0


@dataclass(frozen=True)
class Credentials:
    """HTTP basic (``user`` + ``password``) or bearer (``token``) credentials; all empty: none."""

    user: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:  # never print a secret, even in a debugger or a traceback
        return f"Credentials(user={'set' if self.user else 'unset'}, secret={'set' if self.password or self.token else 'unset'})"


def parse_source(text: str) -> Source:
    """Read SOURCE: ``http(s)://...`` (DICOMweb) or ``dimse://AET@host:port``; anything else is a ConfigError."""
    parts = urlsplit(text.strip())
    if parts.scheme in ("http", "https"):
        if parts.username or parts.password:
            raise ConfigError("SOURCE holds a user or password; remove it and give credentials with --credentials FILE "
                              f"or ${ENV_USER} / ${ENV_PASSWORD} / ${ENV_TOKEN}")
        if not parts.hostname:
            raise ConfigError(f"SOURCE {text!r} names no host; expected e.g. http://pacs:8042/dicom-web")
        return Source("dicomweb", text.strip().rstrip("/"))
    if parts.scheme == "dimse":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.username or parts.password or not parts.hostname or not port:
            raise ConfigError(f"SOURCE {text!r} is not a DIMSE node; expected dimse://AET@host:port, e.g. "
                              "dimse://ORTHANC@pacs.example.org:4242")
        if len(parts.username) > 16:
            raise ConfigError(f"AE title {parts.username!r} of SOURCE is longer than 16 characters")
        return Source("dimse", text.strip(), parts.username, parts.hostname, port)
    raise ConfigError(f"SOURCE {text!r} is neither a DICOMweb URL (http(s)://host:port/dicom-web) nor a DIMSE node "
                      "(dimse://AET@host:port)")


def _from_mapping(values: Mapping[str, Any], where: str) -> Credentials:
    known = {"user", "username", "password", "token"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"credentials file {where}: unknown key(s) {', '.join(unknown)}; expected user, password "
                          "or token")
    values = {k: "" if v is None else str(v) for k, v in values.items()}
    user = values.get("user") or values.get("username", "")
    creds = Credentials(user, values.get("password", ""), values.get("token", ""))
    if creds.token and (creds.user or creds.password):
        raise ConfigError(f"credentials file {where}: give user + password or a token, not both")
    if bool(creds.user) != bool(creds.password):
        raise ConfigError(f"credentials file {where}: a user needs a password (and a password a user)")
    return creds


def load_credentials(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from ``path`` (JSON or INI), else from the environment, else none."""
    env = os.environ if environ is None else environ
    if path is None:
        return _from_mapping({"user": env.get(ENV_USER, ""), "password": env.get(ENV_PASSWORD, ""),
                              "token": env.get(ENV_TOKEN, "")}, "$" + ENV_USER)
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CREDENTIALS_BYTES:
            raise ConfigError(f"credentials file {p} is larger than {MAX_CREDENTIALS_BYTES} bytes; is it the right file?")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"credentials file {p} cannot be read ({type(e).__name__}); check the path") from e
    if text.lstrip().startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"credentials file {p} is not valid JSON (line {e.lineno}); expected "
                              '{"user": ..., "password": ...} or {"token": ...}') from None
        if not isinstance(values, dict):
            raise ConfigError(f"credentials file {p}: expected a JSON object")
        return _from_mapping(values, str(p))
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text if "[" in text else "[pacs]\n" + text)
    except configparser.Error:
        raise ConfigError(f"credentials file {p} is neither JSON nor INI (user = ..., password = ... or token = ...)") \
            from None
    section = parser["pacs"] if parser.has_section("pacs") else parser[parser.sections()[0]] if parser.sections() \
        else parser.defaults()
    return _from_mapping(dict(section), str(p))


class Sink(Protocol):
    """Receives each retrieved instance (a DICOM file's bytes, or a pydicom Dataset); returns the bytes written."""

    def __call__(self, instance: Any) -> int: ...


class PacsClient(Protocol):
    """What ``pull`` needs from a PACS; :mod:`pacs_dicomweb` and :mod:`pacs_dimse` implement it.

    Every method raises :class:`PacsError` on a transport or server failure.
    """

    def find_studies(self, accession: str = "", study_uid: str = "") -> list[str]:
        """Study Instance UIDs matching an accession number or a study UID."""

    def find_series(self, study_uid: str, modalities: tuple[str, ...] = ()) -> list[str]:
        """Series Instance UIDs of a study (only those of ``modalities`` when given)."""

    def find_instances(self, study_uid: str, series_uid: str) -> list[str]:
        """SOP Instance UIDs of a series."""

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None, sink: Sink) -> None:
        """Retrieve a whole series (``sop_uids`` None) or some of its instances, handing each to ``sink``."""

    def send(self, datasets: list[Any]) -> None:
        """Store datasets on the PACS (STOW-RS or C-STORE)."""

    def close(self) -> None:
        """Release what the client keeps open (connections, associations)."""

