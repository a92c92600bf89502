"""The header cache of ``radpipe scan``: one JSON file beside the index, keyed by path, size and mtime.

Headers are stored after pseudonymisation (no patient name or birth date; patient ID and accession
number as keys), as the fields that differ from their defaults. The cache is used only for the same
export folder, the same secret (checked through the key of a fixed probe, never the secret itself)
and the same :class:`~transforms.dicom.slice_header.SliceHeader` layout.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import operator
import os
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from pipeline.files import atomic_open, stale_temporaries
from pipeline.pseudonym import Pseudonymiser
from transforms.dicom.fields import PER_FILE_FIELDS
from transforms.dicom.slice_header import FrameInfo, SliceHeader

log = logging.getLogger("radpipe")

CACHE_VERSION = 4  # 2: study dates are no longer cached; 3: Philips scale slope; 4: pixel data offset
_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(SliceHeader))
_FRAME_FIELDS = tuple(f.name for f in dataclasses.fields(FrameInfo))
_SCHEMA = hashlib.sha256(repr((CACHE_VERSION, _HEADER_FIELDS, _FRAME_FIELDS)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ScanEntry:
    """One file: its header, or why it is skipped."""

    size: int
    mtime_ns: int
    header: SliceHeader | None  # pseudonymised
    reason: str = ""
    detail: str = ""
    cached: dict[str, Any] | None = None  # the header as the cache stores it
    fragment: str | None = None  # the whole entry as the cache file holds it (:func:`entry_json`)


_HEADER_DEFAULTS = tuple((f.name, f.default) for f in dataclasses.fields(SliceHeader))
_HEADER_VALUES = operator.attrgetter(*(name for name, _ in _HEADER_DEFAULTS))


def header_to_json(header: SliceHeader) -> dict[str, Any]:
    """The header as the cache stores it: the fields that differ from their defaults, without the path."""
    out = {name: value for (name, default), value in zip(_HEADER_DEFAULTS, _HEADER_VALUES(header))
           if value != default and name != "path"}
    return _frames_as_dicts(out)


def fields_to_json(fields: dict[str, Any]) -> dict[str, Any]:
    """:func:`header_to_json` of ``SliceHeader(**fields)``, from the fields themselves."""
    out = {name: fields[name] for name, default in _HEADER_DEFAULTS
           if name != "path" and name in fields and fields[name] != default}
    return _frames_as_dicts(out)


def _frames_as_dicts(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with its ``frames`` (when it has them) as plain dicts, as JSON holds them."""
    if "frames" in out:
        out["frames"] = [dataclasses.asdict(f) for f in out["frames"]]
    return out


_DEFAULTS = dict(_HEADER_DEFAULTS)
_OWN_FIELDS = (*PER_FILE_FIELDS, "pixel_offset")  # each file's own (pixel_offset: where its pixels start)
_SHARED_FIELDS = tuple(name for name, _ in _HEADER_DEFAULTS if name not in _OWN_FIELDS and name != "path")


def fields_json_text(fields: dict[str, Any], memo: dict[Any, Any]) -> str:
    """The JSON text of :func:`fields_to_json` (same object, keys in another order), fast for a series' files.

    The fields the files of a series share (all but :data:`~transforms.dicom.fields.PER_FILE_FIELDS` and the
    pixel offset) are encoded once: ``memo`` keeps their text by their values.
    """
    try:
        key = ("header json", tuple(fields[name] for name in _SHARED_FIELDS))
        shared = memo.get(key)
    except TypeError:  # a value that cannot be a key (none of radpipe's header fields is a list)
        return _JSON.encode(fields_to_json(fields))
    if shared is None:
        part = {name: value for name, value in zip(_SHARED_FIELDS, key[1]) if value != _DEFAULTS[name]}
        shared = memo[key] = _JSON.encode(_frames_as_dicts(part))[1:-1]
    own = _JSON.encode({name: fields[name] for name in _OWN_FIELDS if fields[name] != _DEFAULTS[name]})[1:-1]
    return "{" + shared + ("," if shared and own else "") + own + "}"


def header_from_json(data: dict[str, Any], path: str) -> SliceHeader:
    """The header :func:`header_to_json` stored, for the file at ``path``."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "frames"}
    frames = tuple(FrameInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in f.items()})
                   for f in data.get("frames", ()))
    return SliceHeader(path=path, frames=frames, **values)


def cache_identity(root: Path, pseudonymiser: Pseudonymiser) -> dict[str, str]:
    """What a cache must match to be used: header layout, export folder, secret and identifier mode."""
    # the key of a fixed probe tells whether the secret or keep_identifiers changed, without storing either
    return {"schema": _SCHEMA, "root": str(root.resolve()), "probe": pseudonymiser.key("radpipe-cache", "instance")}


def load_cache(path: Path, identity: dict[str, str], root: Path) -> dict[str, ScanEntry]:
    """The cached entries of earlier scans of the same export (``root``) with the same secret (else empty).

    Besides the cache file, the entries that scans killed while writing it had already written (their
    unfinished temporaries) are taken too: a re-run after a kill reads only the headers no run had cached.
    """
    entries = {}
    for partial in stale_temporaries(path.parent, path.name):
        entries.update(_partial_entries(partial, identity, root))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("identity") != identity:
            log.info("scan cache %s is from another export, secret or radpipe version; reading every header", path)
            return entries
        entries.update((rel, _entry(rel, e, root)) for rel, e in data["entries"].items())
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("scan cache %s is unreadable (%s); reading every header", path, type(e).__name__)
    return entries


def _entry(rel: str, e: dict[str, Any], root: Path) -> ScanEntry:
    header = header_from_json(e["header"], os.path.join(root, rel)) if e["header"] else None
    return ScanEntry(e["size"], e["mtime_ns"], header, e["reason"], e["detail"], e["header"])


def _partial_entries(path: Path, identity: dict[str, str], root: Path) -> dict[str, ScanEntry]:
    """The whole entries at the start of a cache file cut short (by a kill), if it is of this ``identity``."""
    decoder = json.JSONDecoder()
    entries: dict[str, ScanEntry] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        head = '{"identity":'
        found, at = decoder.raw_decode(text, len(head)) if text.startswith(head) else (None, 0)
        if found != identity or not text.startswith(',"entries":{', at):
            return entries
        at += len(',"entries":{')
        while True:
            rel, at = decoder.raw_decode(text, at)
            value, at = decoder.raw_decode(text, at + 1)  # after the ':'
            entries[rel] = _entry(rel, value, root)
            if text[at:at + 1] != ",":
                break
            at += 1
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # the cut: every entry before it is kept
    if entries:
        log.info("scan: %d header(s) taken from %s, left by a scan that was killed", len(entries), path.name)
    return entries


_JSON = json.JSONEncoder(separators=(",", ":"))


def entry_json(rel: str, size: int, mtime_ns: int, header: dict[str, Any] | str | None, reason: str = "",
               detail: str = "") -> str:
    """One entry of the cache file, ``"rel":{...}``, with ``header`` as :func:`header_to_json` gives it (or None),
    or as JSON text already (:func:`fields_json_text`)."""
    text = header if isinstance(header, str) else _JSON.encode(header)
    return (f'{encode_basestring_ascii(rel)}:{{"size":{size},"mtime_ns":{mtime_ns},"header":{text},'
            f'"reason":{encode_basestring_ascii(reason)},"detail":{encode_basestring_ascii(detail)}}}')


class CacheWriter:
    """Writes a cache file entry by entry, as the headers come, and puts it in place atomically at the end.

    The file is the JSON object ``{"identity": ..., "entries": {path: entry}}`` (entries in any
    order); entries read by scan workers come as JSON text already (``fragment``). Use as a
    context manager: leaving it with an error removes the unfinished file and keeps the old cache.
    """

    def __init__(self, path: Path, identity: dict[str, str]) -> None:
        self.path = path
        # a cache: rebuilt when lost (no fsync); owner-only, like the secret: it holds the files' UIDs
        self._opened = atomic_open(path, durable=False, buffering=1 << 16, mode_bits=0o600)
        self.file = self._opened.__enter__()
        self.file.write(f'{{"identity":{_JSON.encode(identity)},"entries":{{')
        self.separator = ""

    def add(self, rel: str, entry: ScanEntry) -> None:
        """Write one file's entry."""
        text = entry.fragment if entry.fragment is not None else \
            entry_json(rel, entry.size, entry.mtime_ns, entry.cached, entry.reason, entry.detail)
        self.file.write(self.separator)
        self.file.write(text)
        self.separator = ","

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None:
            self.file.write("}}")
        self._opened.__exit__(kind, error, trace)


def save_cache(path: Path, identity: dict[str, str], entries: dict[str, ScanEntry]) -> None:
    """Write the cache atomically (headers already pseudonymised), entries sorted by path."""
    with CacheWriter(path, identity) as writer:
        for rel, entry in sorted(entries.items()):
            writer.add(rel, entry)
