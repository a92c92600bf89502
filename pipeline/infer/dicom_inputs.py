"""DICOM export input of ``radpipe predict``: scan, choose the series the run was trained on, check them.

The export is indexed with ``radpipe scan``'s loader (:func:`pipeline.ingest.scan.scan_export`; the index,
its header cache and the series references go to a work folder next to the output, so a re-run
after a kill rescans only what changed). Series are then chosen with the rule the training
manifest was built with (``radpipe manifest --where ... --select ...``):

* ``RUN_DIR/selection.json`` when the run has one, e.g. ``{"where": "modality == 'CT'", "select":
  "largest-series"}``: ``where`` filters the index series in the language of ``radpipe manifest
  --where`` (:mod:`pipeline.manifest.filters`: comparisons, ``in [...]``, ``contains`` / ``matches``,
  ``and`` / ``or`` / ``not``; parsed by radpipe, never run as code: a run folder may come from anyone),
  ``select`` is ``all`` or one series per study as in ``radpipe manifest``: ``largest-series`` (most
  slices, then files), ``first`` or ``description:REGEX`` (the largest series whose description matches);
* otherwise every image series of the modality the run's intensity settings imply (``ct-*``
  presets and CT windows: CT; ``mr-*``: MR; ``xray-*``: CR / DX; others: any modality).

``--modality`` / ``--series`` override either. Localizers never qualify. Series left out are listed
in the skipped file with the reason. Chosen series whose scan status is ``error``, that have missing
slices, or whose dimensionality does not fit the model become error rows; with a one-per-study rule,
a series of status ``error`` is chosen only when its study has no usable series, so that study is
reported.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, RunError
from pipeline.infer.batching import Case
from pipeline.infer.inputs import PredictInput, single_image_column
from pipeline.ingest.rows import INDEX_COLUMNS
from pipeline.ingest.scan import scan_export
from pipeline.manifest.filters import FilterError, parse_filter
from transforms.intensity import modality_of

if TYPE_CHECKING:
    from pipeline.config import Config

log = logging.getLogger("radpipe")

SELECTION_FILE = "selection.json"
KEY_COLUMNS = ["patient_key", "study_key", "series_key", "accession_key", "modality"]
_MODALITIES_OF = {"ct": ("CT",), "mr": ("MR",), "xray": ("CR", "DX"), "any": ()}


@dataclass(frozen=True)
class SeriesSelection:
    """Which series of an export are predicted.

    Attributes:
        where: filter of the scan index series (:mod:`pipeline.manifest.filters`; empty: every series).
        select: ``all``, ``largest-series``, ``first`` or ``description:REGEX``.
        source: where the rule comes from (printed in skip reasons).
    """

    where: str
    select: str
    source: str


def _check_select(select: str, where: str) -> str:
    """Why a ``select`` rule is invalid (empty when it is valid)."""
    if select in ("all", "largest-series", "first"):
        return ""
    if select.startswith("description:"):
        try:
            re.compile(select.partition(":")[2])
        except re.error as e:
            return f"{where}: {select!r} is not a regular expression ({e})"
        return ""
    return f"{where}: rule {select!r} is unknown; allowed: all, largest-series, first, description:REGEX"


def _modality_query(modalities: tuple[str, ...]) -> str:
    return f"modality in {list(modalities)!r}" if modalities else ""


def _check_filter(where: str) -> None:
    """Parse a selection filter and check its columns against the scan index's, before any scanning.

    Raises:
        FilterError: see :func:`pipeline.manifest.filters.parse_filter`.
    """
    import pandas as pd

    parse_filter(where).mask(pd.DataFrame(columns=list(INDEX_COLUMNS), dtype=str))


def load_selection(run_dir: str | Path | None, cfg: Config, modality: str | None = None,
                   rule: str | None = None) -> SeriesSelection:
    """The run's series selection (see the module docstring), with command-line overrides.

    Raises:
        RunError: ``selection.json`` is unreadable or holds an unknown rule.
        ConfigError: an override is invalid, or ``selection.json``'s ``where`` is not a filter expression
            on the scan index's columns (checked here, before any scanning).
    """
    where = _modality_query(_MODALITIES_OF.get(modality_of(cfg.transforms), ()))
    select, source = "all", f"run config, transforms.intensity: {cfg.transforms.intensity}"
    path = Path(run_dir) / SELECTION_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            where, select = str(data.get("where") or ""), str(data.get("select") or "all")
        except (ValueError, TypeError, AttributeError) as e:
            raise RunError(f"{path}: expected {{\"where\": FILTER, \"select\": RULE}}, found unreadable JSON") from e
        problem = _check_select(select, str(path))
        if problem:
            raise RunError(problem)
        try:
            _check_filter(where)
        except FilterError as e:
            raise ConfigError(f"{path}: {e}") from e
        source = path.name
    if modality is not None:
        parts = tuple(m.strip().upper() for m in modality.split(",") if m.strip())
        where = _modality_query(() if parts in ((), ("ANY",)) else parts)
        source = "--modality"
    if rule is not None:
        problem = _check_select(rule, "--series")
        if problem:
            raise ConfigError(problem)
        select, source = rule, ("--series" if modality is None else "--modality/--series")
    return SeriesSelection(where, select, source)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def series_error(row: dict[str, str], cfg: Config) -> str:
    """Why a chosen series cannot be predicted (empty when it can)."""
    problems = row.get("problems", "")
    if row.get("status") == "error":
        return f"scan: {problems or 'the series cannot be assembled'}"
    if "missing slice" in problems:
        detail = next((p.strip() for p in problems.split(";") if "missing slice" in p), problems)
        return f"incomplete series: {detail}; a volume with gaps gives unreliable predictions: re-export the series"
    n_t = int(_number(row.get("n_timepoints")) or 1)
    if n_t > 1:
        return f"wrong dimensionality: 4D series ({n_t} time points); the run takes one 3D volume per series"
    if cfg.transforms.spatial_dims == 3 and _number(row.get("n_slices")) < 2:
        return (
            "wrong dimensionality: the series is a single 2D image but the run's model is 3D "
            "(transforms.spatial_dims: 3) and needs a volume"
        )
    return ""


def _query(rows: list[dict[str, str]], where: str, source: str = "") -> set[int]:
    """Positions of the rows a filter expression (:mod:`pipeline.manifest.filters`) keeps.

    Raises:
        ConfigError: the filter is not in the filter language or names a column the index lacks.
    """
    import pandas as pd

    if not where or not rows:
        return set(range(len(rows)))
    frame = pd.DataFrame(rows)
    try:
        mask = parse_filter(where).mask(frame)
    except FilterError as e:
        raise ConfigError(f"series selection{f' ({source})' if source else ''}: {e}") from e
    return {i for i, keep in enumerate(mask.tolist()) if keep}


def _pick(members: list[dict[str, str]], select: str) -> dict[str, str] | None:
    """The one series of a study a rule keeps (None when none matches), as ``radpipe manifest`` picks."""
    if select == "first":
        return members[0]
    if select.startswith("description:"):
        pattern = re.compile(select.partition(":")[2], re.IGNORECASE)
        members = [r for r in members if pattern.search(r.get("series_description", ""))]
    if not members:
        return None
    order = {id(r): i for i, r in enumerate(members)}
    return max(members, key=lambda r: (_number(r.get("n_slices")), _number(r.get("n_files")), -order[id(r)]))


def choose_series(rows: list[dict[str, str]], selection: SeriesSelection) -> tuple[list[dict[str, str]],
                                                                                     list[dict[str, str]]]:
    """Split index rows (in index order) into chosen series and skipped-list rows (with the reason)."""
    kept = _query(rows, selection.where, selection.source)
    candidates, skipped = [], []
    for i, row in enumerate(rows):
        reason = ""
        if i not in kept:
            reason = f"not selected: series (modality {row.get('modality') or '?'}) does not match {selection.where!r}"
        elif "localizer" in row.get("problems", ""):
            reason = "not selected: localizer (scout) series"
        if reason:
            skipped.append({"file": "", "series_key": row["series_key"], "reason": f"{reason} ({selection.source})"})
        else:
            candidates.append(row)
    if selection.select == "all":
        return candidates, skipped
    chosen = []
    studies: dict[str, list[dict[str, str]]] = {}
    for row in candidates:
        studies.setdefault(row.get("study_key", ""), []).append(row)
    for members in studies.values():
        usable = [r for r in members if r.get("status") != "error"]
        best = _pick(usable, selection.select) or _pick(members, selection.select)
        if best is not None:
            chosen.append(best)
        why = ("another series of its study is chosen by" if best is not None else
               "no series of its study matches")
        for row in members:
            if row is not best:
                skipped.append({"file": "", "series_key": row["series_key"],
                                "reason": f"not selected: {why} rule {selection.select} ({selection.source})"})
    order = {id(r): i for i, r in enumerate(rows)}
    chosen.sort(key=lambda r: order[id(r)])
    return chosen, skipped


def export_scrubber(root: Path) -> Callable[[str], str]:
    """Replaces paths inside the export (folder names may carry identifiers) by ``<export>/<file name>``."""
    roots = sorted({str(root), str(root.resolve())}, key=len, reverse=True)
    # folder names may hold spaces: everything up to the last "/" before a ":", ";", quote or line end goes
    pattern = re.compile("(?:" + "|".join(re.escape(r) for r in roots) + r")/(?:[^:;'\"\n]*/)?([^\s'\",;:/]*)")
    return lambda text: pattern.sub(r"<export>/\1", text)


def discover_dicom(export_dir: str | Path, cfg: Config, work_dir: str | Path, workers: int = 1, *,
                   modality: str | None = None, rule: str | None = None,
                   run_dir: str | Path | None = None) -> PredictInput:
    """Cases of a DICOM export (see the module docstring).

    Args:
        export_dir: the export folder.
        cfg: the run's config.
        work_dir: folder of the scan index, its cache and series references.
        workers: header-reading processes.
        modality: override of the selection's modalities.
        rule: override of the selection rule.
        run_dir: the run (for ``selection.json``).
    """
    import csv

    root = Path(export_dir).absolute()
    column = single_image_column(cfg, "DICOM export")
    selection = load_selection(run_dir, cfg, modality, rule)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    summary = scan_export(root, work / "index.csv", workers=workers)
    with open(summary.index_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(summary.skipped_csv, newline="", encoding="utf-8") as f:
        skipped_files = list(csv.DictReader(f))
    chosen, skipped = choose_series(rows, selection)
    result = PredictInput("dicom", root, key_columns=list(KEY_COLUMNS), scrub=export_scrubber(root))
    result.skipped = [{"file": r["path"], "series_key": "", "reason": ": ".join(x for x in (r["reason"], r["detail"])
                                                                                if x)} for r in skipped_files]
    result.skipped += skipped
    seen: dict[str, int] = {}
    for row in chosen:
        case_id = row["series_key"]
        seen[case_id] = seen.get(case_id, 0) + 1
        if seen[case_id] > 1:
            case_id = f"{case_id}#{seen[case_id]}"
        ref = (summary.index_csv.parent / row["series_ref"]).resolve()
        result.cases.append(Case(case_id, {column: str(ref)}, series_error(row, cfg)))
        result.keys[case_id] = {k: row.get(k, "") for k in KEY_COLUMNS}
    log.info("predict: export scanned: %d series, %d chosen (where %r, select %s; from %s), %d file(s) skipped",
             len(rows), len(chosen), selection.where, selection.select, selection.source, len(skipped_files))
    return result
