"""Tests of pipeline.ingest.read: chunked header reading with series assembled in the workers."""
from __future__ import annotations

from pathlib import Path

import pytest

import pipeline.ingest.read as scan_read
from pipeline.pseudonym import Pseudonymiser
from pipeline.ingest.walk import walk_files
from pipeline.ingest.read import _claim, _read_chunk, _unclaimed, _units, assemble_entries
from pipeline.demo.synthetic_dicom import SeriesSpec, write_series
from transforms.dicom.series import assemble_series

SECRET = b"0123456789abcdef0123456789abcdef-test"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    for k in range(3):
        write_series(root / f"P{k}" / "S1", SeriesSpec(rows=8, cols=8, n_slices=6, seed=k, series_number=1))
        write_series(root / f"P{k}" / "S2", SeriesSpec(rows=8, cols=8, n_slices=4, seed=10 + k, series_number=2,
                                                       modality="MR", intercept=0.0))
    (root / "P0" / "S1" / "README.txt").write_text("not dicom")
    return root


def _runs(items, largest):
    starts = _units(items, largest)
    return [items[a:b] for a, b in zip(starts, starts[1:])]


def test_units_are_folders_cut_every_largest_items():
    items = [(f"A/{i:02d}", 1, 1) for i in range(10)] + [(f"B/{i:02d}", 1, 1) for i in range(3)] + [("c.dcm", 1, 1)]
    assert _units(items, 64) == [0, 10, 13, 14]
    assert _units(items, 4) == [0, 4, 8, 10, 13, 14]
    assert _units([], 4) == [0]


def test_claims_shrink_towards_the_end_and_cover_every_unit_once():
    import threading

    starts = list(range(0, 1001, 5))  # 200 units of 5 items
    state, lock = [0, len(starts) - 1], threading.Lock()
    claims = []
    from_back = False
    while (claimed := _claim(state, lock, starts, 2, from_back)) is not None:
        claims.append((claimed, from_back))
        from_back = not from_back
    front = [c for c, back in claims if not back]
    back = [c for c, back in claims if back]
    # a quarter of what is left (2 readers), rounded up to whole units: 250 of 1000, then 190 of 750, 140 of 560
    assert front[:2] == [(0, 250), (250, 390)] and back[0] == (810, 1000)
    sizes = [b - a for (a, b), _ in claims]
    assert sizes == sorted(sizes, reverse=True) and sizes[-3:-1] == [25, 25]  # the smallest claim: 24 -> 5 units
    assert _unclaimed(1000, [c for c, _ in claims]) == []  # every item claimed, none twice (see below)
    assert sum(sizes) == 1000
    assert _unclaimed(10, [(2, 4), (6, 8)]) == [(0, 2), (4, 6), (8, 10)]


@pytest.mark.parametrize("size", [1, 5, 7, 100])
def test_series_assembled_in_chunks_equal_whole_export_assembly(export, size):
    ps = Pseudonymiser(SECRET)
    items = walk_files(export)
    entries, assembled = [], []
    for chunk in _runs(items, size):
        got, series = _read_chunk(str(export), chunk, ps, assemble=True)
        entries += [e for _, e in got]
        assembled.append(series)
    whole = assemble_series(e.header for e in entries if e.header is not None)
    assert assemble_entries(entries, assembled) == whole
    assert len(whole) == 6 and sum(e.header is None for e in entries) == 1


def test_only_series_split_across_chunks_or_cache_are_assembled_again(export, monkeypatch):
    ps = Pseudonymiser(SECRET)
    items = walk_files(export)
    first, second = _read_chunk(str(export), items[:9], ps, True), _read_chunk(str(export), items[9:], ps, True)
    entries = [e for _, e in first[0] + second[0]]
    expected = assemble_series(e.header for e in entries if e.header is not None)
    calls = []
    real = scan_read.assemble_series
    monkeypatch.setattr(scan_read, "assemble_series", lambda hs: (calls.append(len(hs)), real(hs))[1])
    assert assemble_entries(entries, [first[1], second[1]]) == expected
    assert calls == [4]  # P0/S2 only, cut by the boundary (sorted items: P0/S1 holds 6 slices + README)
    calls.clear()
    cached_only = [e for _, e in _read_chunk(str(export), items, ps)[0]]
    assert assemble_entries(cached_only, [second[1]]) == expected  # headers not from a chunk: assembled here


def test_cache_written_from_reader_fragments_reloads_as_the_same_headers(export, tmp_path):
    import json

    from pipeline.ingest.cache import ScanEntry, cache_identity, header_to_json, load_cache, save_cache

    ps = Pseudonymiser(SECRET)
    entries = dict(_read_chunk(str(export), walk_files(export), ps)[0])
    assert all(e.fragment is not None and e.cached is None for e in entries.values())
    first = next(rel for rel, e in entries.items() if e.header is not None)
    read = entries[first]  # as an entry taken from an earlier cache: a header dict, no fragment
    entries[first] = ScanEntry(read.size, read.mtime_ns, read.header, cached=header_to_json(read.header))
    identity = cache_identity(export, ps)
    path = tmp_path / "cache.json"
    save_cache(path, identity, entries)
    data = json.loads(path.read_text(encoding="utf-8"))  # one valid JSON document from fragments and dicts
    assert data["identity"] == identity and list(data["entries"]) == sorted(entries)
    assert data["entries"][first]["header"] == json.loads(json.dumps(header_to_json(read.header)))
    skipped = data["entries"]["P0/S1/README.txt"]
    assert skipped["header"] is None and skipped["reason"] == "not DICOM" and skipped["detail"]
    reloaded = load_cache(path, identity, export)
    assert {rel: (e.size, e.mtime_ns, e.header, e.reason, e.detail) for rel, e in reloaded.items()} == \
        {rel: (e.size, e.mtime_ns, e.header, e.reason, e.detail) for rel, e in entries.items()}


def test_cache_writer_keeps_the_old_cache_when_the_scan_fails(export, tmp_path):
    import json

    from pipeline.ingest.cache import CacheWriter, cache_identity

    ps = Pseudonymiser(SECRET)
    entries = dict(_read_chunk(str(export), walk_files(export), ps)[0])
    identity = cache_identity(export, ps)
    path = tmp_path / "cache.json"
    with CacheWriter(path, identity) as writer:
        for rel, entry in reversed(list(entries.items())):  # any order
            writer.add(rel, entry)
    written = path.read_text(encoding="utf-8")
    assert set(json.loads(written)["entries"]) == set(entries)
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter(path, identity) as writer:
            writer.add(*next(iter(entries.items())))
            raise KeyboardInterrupt
    assert path.read_text(encoding="utf-8") == written and list(tmp_path.iterdir()) == [path]


def test_fields_json_text_is_the_cache_form_of_every_header(export):
    import json
    import os

    import pydicom

    from pipeline.ingest.cache import fields_json_text, fields_to_json
    from transforms.dicom.fields import PER_FILE_FIELDS, _per_file_fields
    from transforms.dicom.scan_fields import read_fields_fast

    assert set(_per_file_fields({}, None)) == set(PER_FILE_FIELDS)
    samples = Path(pydicom.__file__).parent / "data" / "test_files"
    paths = [str(p) for p in sorted(export.rglob("*")) if p.is_file()] + sorted(str(p) for p in samples.glob("*.dcm"))
    memo: dict = {}
    checked = 0
    for path in paths:
        try:
            fields = read_fields_fast(path, memo)
        except Exception:  # noqa: BLE001 - not every sample is an image
            continue
        if not isinstance(fields, dict):
            continue
        text = fields_json_text(fields, memo)
        assert json.loads(text) == json.loads(json.dumps(fields_to_json(fields))), os.path.basename(path)
        checked += 1
    assert checked >= 30 and sum(isinstance(k, tuple) and k[:1] == ("header json",) for k in memo) >= 6
