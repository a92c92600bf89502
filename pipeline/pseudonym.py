"""Pseudonymisation: identifiers become keyed hashes (HMAC-SHA256) with a secret kept outside the outputs.

The secret lives in a key file (default ``~/.config/radpipe/secret.key``, or the path in
``$RADPIPE_SECRET_FILE``), created on first use and readable by its owner only. The same
identifier always gets the same key under the same secret, so a label sheet keyed by
accession number joins a scan index without any identifier written in clear.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pipeline.errors import ConfigError

SECRET_ENV = "RADPIPE_SECRET_FILE"
KEY_PREFIXES = {"patient": "P", "study": "ST", "series": "SE", "accession": "A", "instance": "I"}
_DIGEST_CHARS = 16


def default_secret_path() -> Path:
    """The key file: ``$RADPIPE_SECRET_FILE`` or ``~/.config/radpipe/secret.key``."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "radpipe" / "secret.key"


def load_secret(path: str | Path | None = None) -> bytes:
    """Read the secret, creating it (32 random bytes, mode 0600) when the file does not exist yet.

    The new secret is written whole to a temporary file and linked into place, which fails if the file appeared
    meanwhile: of two commands started together on a fresh machine, both end up with the one secret made first,
    and neither ever reads a half-written one.
    """
    p = Path(path) if path is not None else default_secret_path()
    if not p.exists():
        _create_secret(p)
    try:
        text = p.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"pseudonymisation key file {p} cannot be read ({e}); fix its permissions or delete it") from e
    if len(text) < 32:
        raise ConfigError(f"pseudonymisation key file {p} holds no usable secret; delete it to create a new one")
    return text.encode("ascii")


def _create_secret(p: Path) -> None:
    import secrets  # only when the secret is made: 7 ms of every command's start-up otherwise

    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
        except FileExistsError:
            pass  # another command made it first: both use that one
    finally:
        tmp.unlink(missing_ok=True)


class Pseudonymiser:
    """Maps identifiers to stable keyed hashes.

    Args:
        secret: the HMAC secret; default: :func:`load_secret` of the default key file.
        keep_identifiers: return identifiers unchanged (an explicit, loud opt-out).
    """

    def __init__(self, secret: bytes | None = None, keep_identifiers: bool = False) -> None:
        self._secret = secret if secret is not None else (b"" if keep_identifiers else load_secret())
        self.keep_identifiers = keep_identifiers

    def key(self, value: object, kind: str) -> str:
        """The pseudonymous key of ``value`` (e.g. ``P-1a2b...`` for a patient); empty stays empty."""
        text = "" if value is None else str(value).strip()
        if not text:
            return ""
        if self.keep_identifiers:
            return text
        prefix = KEY_PREFIXES.get(kind, kind[:2].upper())
        digest = hmac.new(self._secret, f"{kind}:{text}".encode(), hashlib.sha256).hexdigest()
        return f"{prefix}-{digest[:_DIGEST_CHARS]}"
