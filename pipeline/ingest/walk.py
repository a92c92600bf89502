"""The tree walk of a scan: every regular file of an export, and why every other path is not read."""
from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.files import TEMP_PREFIX


#: Why a path in the export is not read: (reason, detail) by kind.
_NOT_READ = {
    "loop": ("symlink loop", "the link leads back to itself; remove or fix it"),
    "dangling": ("dangling link", "the link points to nothing; remove it or restore its target"),
    "outside": ("link out of the export", "not followed; pass --follow-links to read files linked from elsewhere"),
    "linked folder": ("link to a folder", "folders reached through links are not walked; pass --follow-links to "
                                          "walk those outside the export"),
    "special": ("not a regular file", "FIFOs, sockets and devices are never read"),
    "unreadable": ("unreadable", "permission denied or I/O error; fix the permissions and scan again"),
}


def walk_files(root: Path, exclude: Sequence[Path] = (), *, follow_links: bool = False,
               not_read: list[tuple[str, str, str]] | None = None) -> list[tuple[str, int, int]]:
    """Every regular file under ``root`` (resolved) as (POSIX path relative to root, size, mtime_ns), sorted.

    Links are followed only to regular files inside the export, unless ``follow_links`` (then to files and
    folders anywhere, each real folder walked once). ``exclude`` (files or folders) and radpipe's own temporary
    files (:data:`pipeline.files.TEMP_PREFIX`, a write in progress) are left out. Everything else that is not
    read (symlink loops, dangling links, links out of the export, FIFOs and devices, unreadable folders) is
    appended to ``not_read`` as (relative path, reason, detail); nothing raises.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    prefix = len(str(root)) + 1
    out: list[tuple[str, int, int]] = []
    problems = not_read if not_read is not None else []
    seen = {str(root)}
    stack = [(str(root), str(root))]
    while stack:
        folder, shown = stack.pop()
        try:
            with os.scandir(folder) as entries:
                items = list(entries)
        except OSError as e:
            problems.append((shown[prefix:] or ".", *_reason("unreadable", e)))
            continue
        for entry in items:
            path = shown + os.sep + entry.name
            if entry.path in excluded or entry.name.startswith(TEMP_PREFIX):
                continue
            rel = path[prefix:].replace(os.sep, "/")
            try:
                kind, target = _entry_kind(entry, str(root), follow_links)
                st = entry.stat() if kind == "file" else None
            except OSError as e:
                problems.append((rel, *_reason("unreadable", e)))
                continue
            if kind == "folder":
                if target not in seen and target not in excluded:
                    seen.add(target)
                    stack.append((target if entry.is_symlink() else entry.path, path))
            elif st is not None:
                out.append((rel, st.st_size, st.st_mtime_ns))
            else:
                problems.append((rel, *_NOT_READ[kind]))
    problems.sort()
    return sorted(out)


def _entry_kind(entry: os.DirEntry[str], root: str, follow_links: bool) -> tuple[str, str]:
    """What a folder entry is for the walk: ``file``, ``folder`` or a key of :data:`_NOT_READ`; and its real path."""
    if not entry.is_symlink():
        if entry.is_dir(follow_symlinks=False):
            return "folder", entry.path
        return ("file" if entry.is_file(follow_symlinks=False) else "special"), entry.path
    try:
        target = os.path.realpath(entry.path, strict=True)
    except FileNotFoundError:
        return "dangling", ""
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "loop", ""
        raise
    inside = target == root or target.startswith(root + os.sep)
    if not inside and not follow_links:
        return "outside", target
    if os.path.isdir(target):
        return ("folder", target) if follow_links and not inside else ("linked folder", target)
    return ("file" if os.path.isfile(target) else "special"), target


def _reason(kind: str, error: OSError) -> tuple[str, str]:
    reason, detail = _NOT_READ[kind]
    return reason, f"{error.strerror or type(error).__name__}: {detail}"
