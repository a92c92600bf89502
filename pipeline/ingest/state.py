"""What a finished scan records to recognise, on the next run, an export and outputs that did not change.

``<stem>.scan-state.json`` holds a digest of the tree walk (every path with its size and modification time, what
was not read and why, the export, the secret's probe), fingerprints of the outputs (the index and skipped list by
sha256, the series references by name, size and modification time) and the summary's counts. A re-scan whose walk
gives the same digest, with every output as it was left, has nothing to read, assemble or write: it reports the
recorded counts. Anything else (a file added, touched or removed, an output edited or deleted, another secret)
takes the full path through the header cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.files import file_digest, write_atomic

STATE_VERSION = 1


def walk_digest(identity: dict[str, str], files: Sequence[tuple[str, int, int]],
                not_read: Sequence[tuple[str, str, str]], follow_links: bool) -> str:
    """A sha256 of everything the walk found, under the cache ``identity`` (export, secret, header layout)."""
    digest = hashlib.sha256(json.dumps([STATE_VERSION, identity, follow_links], sort_keys=True).encode())
    for rel, size, mtime in files:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    for rel, reason, detail in not_read:
        digest.update(f"!{rel}\0{reason}\0{detail}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def outputs_fingerprint(paths: dict[str, Path]) -> dict[str, str] | None:
    """Fingerprints of the index, the skipped list and the series references; None when one is missing."""
    try:
        refs = hashlib.sha256()
        with os.scandir(paths["series"]) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                st = entry.stat(follow_symlinks=False)
                refs.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return {"index": file_digest(paths["index"]), "skipped": file_digest(paths["skipped"]),
                "series": refs.hexdigest()}
    except OSError:
        return None


def save_state(path: Path, digest: str, paths: dict[str, Path], counts: dict[str, Any]) -> None:
    """Record a finished scan (call after every output is written)."""
    outputs = outputs_fingerprint(paths)
    if outputs is not None:
        write_atomic(path, json.dumps({"version": STATE_VERSION, "walk": digest, "outputs": outputs,
                                       "counts": counts}, sort_keys=True) + "\n", durable=False)


def unchanged_counts(path: Path, digest: str, paths: dict[str, Path]) -> dict[str, Any] | None:
    """The recorded counts when the walk and every output are as the last scan left them; else None."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("walk") != digest:
        return None
    if state.get("outputs") != outputs_fingerprint(paths):
        return None
    counts = state.get("counts")
    return counts if isinstance(counts, dict) else None
