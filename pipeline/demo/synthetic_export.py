"""A synthetic hospital export: what a research coordinator gets from PACS, fake but realistic.

:func:`write_export` writes ``OUT/export/`` (nested folders with random names, files named at
random, series of one study mixed in one folder, written in shuffled order) and ``OUT/labels.csv``
(one row per study keyed by accession number, as a coordinator exports it). Patients come from
three sites (:data:`~pipeline.demo.hospital.SITES`) whose scanners differ in manufacturer, model,
noise, pixel spacing and slice thickness. Every study holds an axial CT (int16, RescaleIntercept
-1024, the :func:`~pipeline.demo.phantom.phantom_hu` body of soft tissue, fat, liver, spine and lungs
in HU) and a 2-slice coronal localizer; some hold a dose report (SR). About half the patients carry
a lesion, a brighter blob (+110..+180 HU), the label to learn. The export also holds one truncated
DICOM file, a ``README.txt`` and a ``DICOMDIR``.

:func:`write_new_scans` writes a folder of unlabeled scans for ``radpipe predict``: a few good
series, a corrupt file, a series with missing slices and a non-image object.

All DICOM files are written by :func:`pipeline.demo.synthetic_dicom.write_series` (one writer). The
same seed gives byte-identical files (UIDs, names and dates come from the seed).
"""
from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

from pipeline.demo.hospital import SITE_WEIGHTS, SITES, Site, age_band, identifiers, make_patient, study_tags
from pipeline.demo.phantom import COLS, ROWS, localizer_projection, phantom_hu
from pipeline.demo.synthetic_dicom import SeriesFiles, SeriesSpec, write_dicomdir, write_series, write_sr

__all__ = ["SITES", "ExportSummary", "NewScansSummary", "Site", "write_export", "write_new_scans"]

_REPORT_TEXT = ("CT dose report. CTDIvol {:.1f} mGy, DLP {:.0f} mGy*cm.",)
_README = """Export from PACS, research request. Do not redistribute.
Folders are named by the export tool and carry no meaning.
"""
_LABEL_COLUMNS = ["accession_number", "patient_id", "label", "site", "sex", "age_band"]


@dataclass
class ExportSummary:
    """What :func:`write_export` wrote.

    Attributes:
        export_dir: the export folder (``OUT/export``).
        labels_csv: the label sheet (``OUT/labels.csv``).
        n_patients: patients (one CT study each).
        n_files: every file under ``export_dir``.
        n_image_series: image series (axial CTs plus localizers).
        n_image_files: DICOM image files (all slices of all image series).
        n_sr: dose reports (non-image objects).
        n_lesion: patients with a lesion.
        truncated_file: the truncated DICOM file.
        non_dicom_files: files that are not DICOM (``README.txt``).
        dicomdir_file: the stray DICOMDIR.
        phi: per patient, the identifying values written in clear (for leak tests).
        cases: per patient: accession number, label, site, series UID of its axial CT, lesion centre and radius
            (phantom frame, see :func:`pipeline.demo.truth.lesion_ras`), its first slice's z and slice spacing.
    """

    export_dir: Path
    labels_csv: Path
    n_patients: int
    n_files: int
    n_image_series: int
    n_image_files: int
    n_sr: int
    n_lesion: int
    truncated_file: Path
    non_dicom_files: list[Path]
    dicomdir_file: Path
    phi: list[dict[str, str]] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def phi_values(self) -> list[str]:
        """Every identifying string of the export (name parts, IDs, birth dates, accession numbers)."""
        values: set[str] = set()
        for p in self.phi:
            family, _, given = p["PatientName"].partition("^")
            values |= {p["PatientName"], family, given, p["PatientID"], p["PatientBirthDate"], p["AccessionNumber"]}
        return sorted(v for v in values if v)


@dataclass
class NewScansSummary:
    """What :func:`write_new_scans` wrote.

    Attributes:
        scan_dir: the folder of new scans.
        n_files: every file under ``scan_dir``.
        good_series: series UIDs of the complete series, with ``lesion`` truth (not written to disk), the
            lesion's centre and radius (``lesion_mm``, phantom frame), first slice z and slice spacing.
        gap_series_uid: the series with missing slices.
        corrupt_file: the truncated DICOM file.
        sr_file: the non-image object.
    """

    scan_dir: Path
    n_files: int
    good_series: list[dict[str, Any]]
    gap_series_uid: str
    corrupt_file: Path
    sr_file: Path


def _uid(seed: int, *parts: Any) -> str:
    return str(generate_uid(entropy_srcs=["radpipe-export", str(seed), *map(str, parts)]))


def _file_name(rng: np.random.Generator, style: str, taken: set[str]) -> str:
    while True:
        if style == "im":
            name = f"IM_{int(rng.integers(0, 1_000_000)):06d}"
        elif style == "hex":
            name = rng.bytes(4).hex().upper()
        else:
            name = f"{int(rng.integers(0, 100_000_000)):08d}.dcm"
        if name not in taken:
            taken.add(name)
            return name


def _folder_name(rng: np.random.Generator) -> str:
    return rng.bytes(4).hex().upper()


@dataclass(frozen=True)
class _Study:
    """One patient's CT study as drawn, before its files are written."""

    index: int
    site: Site
    patient: dict[str, str]
    ident: dict[str, str]
    study_uid: str
    top: Path
    folders: list[Path]
    n_slices: int
    hu: np.ndarray
    lesion: dict[str, float]
    table_z: float

    @property
    def extent(self) -> float:
        """Distance between the centres of the first and last column, mm."""
        return (COLS - 1) * self.site.pixel_spacing


@dataclass
class _ExportWriter:
    """The export being written: every file is staged, then all are moved into place in shuffled order.

    One generator draws everything, in the order the methods are called.
    """

    export: Path
    staging: Path
    seed: int
    rng: np.random.Generator
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    names: dict[Path, set[str]] = field(default_factory=dict)
    phi: list[dict[str, str]] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    label_rows: list[dict[str, str]] = field(default_factory=list)
    first_slices: list[Path] = field(default_factory=list)
    n_series: int = 0
    n_files: int = 0
    n_sr: int = 0

    @classmethod
    def start(cls, out_dir: Path, seed: int) -> _ExportWriter:
        """Remove a previous export and staging folder from ``out_dir``."""
        export = out_dir / "export"
        if export.exists():
            shutil.rmtree(export)
        staging = out_dir / ".export-staging"
        if staging.exists():
            shutil.rmtree(staging)
        return cls(export=export, staging=staging, seed=seed, rng=np.random.default_rng(seed))

    def draw_study(self, index: int, site: Site, lesion: bool, slices: tuple[int, int]) -> _Study:
        """Draw patient ``index``: identifiers, folders, slice count, phantom and table position."""
        rng = self.rng
        patient = make_patient(rng, site, index)
        top = self.export / _folder_name(rng)
        folders = [top / _folder_name(rng) for _ in range(int(rng.integers(1, 3)))]
        n_slices = int(rng.integers(slices[0], slices[1] + 1))
        hu, lesion_info = phantom_hu(rng, n_slices, site.pixel_spacing, site.slice_thickness, site.noise_hu, lesion)
        table_z = float(rng.uniform(-420.0, -300.0))
        return _Study(index=index, site=site, patient=patient, ident=identifiers(patient),
                      study_uid=_uid(self.seed, "study", index), top=top, folders=folders, n_slices=n_slices, hu=hu,
                      lesion=lesion_info, table_z=table_z)

    def stage_ct(self, study: _Study) -> str:
        """Stage the axial CT of ``study`` and plan its moves into the study's folders; return its series UID."""
        site, extent = study.site, study.extent
        series_uid = _uid(self.seed, "series", study.index, 2)
        spec = SeriesSpec(
            rows=ROWS, cols=COLS, pixel_spacing=(site.pixel_spacing, site.pixel_spacing),
            slice_spacing=site.slice_thickness, orientation="axial", origin=(-extent / 2, -extent / 2, study.table_z),
            order="ascending" if self.rng.random() < 0.5 else "descending", modality="CT", slope=1.0,
            intercept=-1024.0, data=np.clip(np.round(study.hu + 1024.0), 0, 4095), patient=study.ident,
            study_uid=study.study_uid, series_uid=series_uid, series_number=2,
            series_description=site.series_description, manufacturer=site.manufacturer,
            institution=site.institution, seed=self.seed * 100_003 + study.index,
            extra={**study_tags(site, study.patient, "ABDOMEN"), "WindowCenter": 40, "WindowWidth": 400})
        staged = write_series(self.staging / f"{study.index}-ct", spec, SeriesFiles(file_names="instance"))
        self.first_slices.append(self._place(staged, study.folders, site.name_style)[0])
        self.n_series += 1
        self.n_files += len(staged)
        return series_uid

    def stage_localizer(self, study: _Study) -> None:
        """Stage the 2-slice coronal localizer: into the first CT folder or a folder of its own."""
        site, extent = study.site, study.extent
        folder = study.folders[0] if self.rng.random() < 0.5 else study.top / _folder_name(self.rng)
        length = study.n_slices * site.slice_thickness
        spec = SeriesSpec(
            rows=ROWS, cols=COLS, n_slices=2, pixel_spacing=(length / ROWS, extent / (COLS - 1)),
            slice_spacing=1.0, orientation="coronal", origin=(-extent / 2, 0.0, study.table_z + length),
            modality="CT", slope=1.0, intercept=-1024.0, data=localizer_projection(study.hu, self.rng),
            patient=study.ident, study_uid=study.study_uid, series_uid=_uid(self.seed, "series", study.index, 1),
            series_number=1, series_description=site.localizer_description, manufacturer=site.manufacturer,
            institution=site.institution, seed=self.seed * 100_003 + study.index,
            extra={**study_tags(site, study.patient, "ABDOMEN"), "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"],
                   "SliceThickness": None})
        staged = write_series(self.staging / f"{study.index}-loc", spec, SeriesFiles(file_names="instance"))
        self._place(staged, [folder], site.name_style)
        self.n_series += 1
        self.n_files += len(staged)

    def stage_report(self, study: _Study) -> None:
        """Stage a dose report (SR) for about a third of the studies."""
        if self.rng.random() < 0.35:
            text = _REPORT_TEXT[0].format(self.rng.uniform(8, 20), self.rng.uniform(400, 1100))
            sr = write_sr(self.staging / f"{study.index}-sr" / "sr.dcm", text=text, patient=study.ident,
                          study_uid=study.study_uid, series_uid=_uid(self.seed, "series", study.index, 990),
                          series_number=990, series_description="Dose Report", seed=self.seed * 100_003 + study.index)
            self._place([sr], study.folders, study.site.name_style)
            self.n_sr += 1

    def record(self, study: _Study, series_uid: str) -> None:
        """Add the study to the identifiers, the label sheet and the cases."""
        patient, label = study.patient, "lesion" if study.lesion else "normal"
        self.phi.append(study.ident)
        self.label_rows.append({"accession_number": patient["AccessionNumber"], "patient_id": patient["PatientID"],
                                "label": label, "site": study.site.name, "sex": patient["PatientSex"],
                                "age_band": age_band(int(patient["PatientAge"][:3]))})
        self.cases.append({"accession_number": patient["AccessionNumber"], "label": label, "site": study.site.name,
                           "series_uid": series_uid, "n_slices": study.n_slices, "lesion": study.lesion,
                           "origin_z": study.table_z, "slice_thickness": study.site.slice_thickness})

    def move_into_place(self) -> None:
        """Move the staged files to their planned names in shuffled order, then remove the staging folder."""
        for k in self.rng.permutation(len(self.moves)):
            source, target = self.moves[int(k)]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        shutil.rmtree(self.staging)

    def write_truncated_copy(self) -> Path:
        """An interrupted transfer: a copy of a CT slice cut inside its header, beside the slice."""
        source = self.first_slices[int(self.rng.integers(len(self.first_slices)))]
        data = source.read_bytes()
        pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
        truncated = source.parent / _file_name(self.rng, "im", self.names.setdefault(source.parent, set()))
        truncated.write_bytes(data[: int(pixel_tag * 0.6)])
        return truncated

    def _place(self, staged: list[Path], folders: Sequence[Path], style: str) -> list[Path]:
        """Plan moving staged files into ``folders`` (chosen per file) under random names; return the targets."""
        placed = []
        for path in staged:
            folder = folders[int(self.rng.integers(len(folders)))]
            target = folder / _file_name(self.rng, style, self.names.setdefault(folder, set()))
            self.moves.append((path, target))
            placed.append(target)
        return placed


def write_export(out_dir: str | Path, n_patients: int = 60, seed: int = 0, *,
                 slices: tuple[int, int] = (24, 40), lesion_fraction: float = 0.5) -> ExportSummary:
    """Write a synthetic hospital export into ``out_dir/export`` and its label sheet ``out_dir/labels.csv``.

    Args:
        out_dir: folder to write into (created; an existing ``export`` folder in it is replaced).
        n_patients: patients, one CT study each, spread over the three :data:`SITES`.
        seed: seeds everything; the same seed writes the same bytes.
        slices: inclusive range of slices of the axial CTs.
        lesion_fraction: fraction of patients (rounded) that carry a lesion.

    Returns:
        An :class:`ExportSummary`, including the identifying values for leak tests.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    out_dir = Path(out_dir)
    writer = _ExportWriter.start(out_dir, seed)
    site_of = writer.rng.choice(len(SITES), size=n_patients, p=SITE_WEIGHTS)
    lesion_of = np.zeros(n_patients, dtype=bool)
    lesion_of[writer.rng.permutation(n_patients)[: round(n_patients * lesion_fraction)]] = True
    for i in range(n_patients):
        study = writer.draw_study(i, SITES[int(site_of[i])], bool(lesion_of[i]), slices)
        series_uid = writer.stage_ct(study)
        writer.stage_localizer(study)
        writer.stage_report(study)
        writer.record(study, series_uid)
    writer.move_into_place()
    truncated = writer.write_truncated_copy()
    readme = writer.export / "README.txt"
    readme.write_text(_README, encoding="utf-8")
    dicomdir = write_dicomdir(writer.export / "DICOMDIR", seed=seed)
    labels_csv = out_dir / "labels.csv"
    with labels_csv.open("w", newline="", encoding="utf-8") as f:
        csv_writer = csv.DictWriter(f, fieldnames=_LABEL_COLUMNS)
        csv_writer.writeheader()
        csv_writer.writerows(writer.label_rows)
    return ExportSummary(export_dir=writer.export, labels_csv=labels_csv, n_patients=n_patients,
                         n_files=sum(len(files) for _, _, files in os.walk(writer.export)),
                         n_image_series=writer.n_series, n_image_files=writer.n_files, n_sr=writer.n_sr,
                         n_lesion=int(sum(c["label"] == "lesion" for c in writer.cases)), truncated_file=truncated,
                         non_dicom_files=[readme], dicomdir_file=dicomdir, phi=writer.phi, cases=writer.cases)


def write_new_scans(out_dir: str | Path, n_series: int = 4, seed: int = 1, *, n_slices: int = 28) -> NewScansSummary:
    """Write a folder of new, unlabeled scans for ``radpipe predict``.

    It holds ``n_series`` complete axial CTs (every other one with a lesion), one CT with missing
    slices, one truncated DICOM file and one dose report (SR), in nested folders.

    Args:
        out_dir: folder to write into (created; existing content is replaced).
        n_series: complete series.
        seed: seeds everything; identifiers differ from :func:`write_export`'s.
        n_slices: slices per series.

    Returns:
        A :class:`NewScansSummary` with the truth of each good series (kept out of the folder).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    rng = np.random.default_rng(seed + 7919)
    good: list[dict[str, Any]] = []
    gap_uid = ""
    for i in range(n_series + 1):
        site = SITES[i % len(SITES)]
        patient = make_patient(rng, site, 500 + i)
        ident = identifiers(patient)
        has_lesion = i % 2 == 0
        hu, lesion = phantom_hu(rng, n_slices, site.pixel_spacing, site.slice_thickness, site.noise_hu, has_lesion)
        extent = (COLS - 1) * site.pixel_spacing
        gap = i == n_series
        series_uid = _uid(seed, "new-series", i)
        study_uid = _uid(seed, "new-study", i)
        folder = out_dir / _folder_name(rng) / _folder_name(rng)
        spec = SeriesSpec(
            rows=ROWS, cols=COLS, pixel_spacing=(site.pixel_spacing, site.pixel_spacing),
            slice_spacing=site.slice_thickness, origin=(-extent / 2, -extent / 2, -350.0), modality="CT",
            intercept=-1024.0, data=np.clip(np.round(hu + 1024.0), 0, 4095), patient=ident,
            study_uid=study_uid, series_uid=series_uid, series_number=2,
            series_description=site.series_description, manufacturer=site.manufacturer,
            institution=site.institution, seed=seed * 7_919 + i,
            missing_slices=(n_slices // 2, n_slices // 2 + 1) if gap else (),
            extra=study_tags(site, patient, "ABDOMEN"))
        write_series(folder, spec, SeriesFiles(file_names="random"))
        if gap:
            gap_uid = series_uid
            sr = write_sr(folder / "SR000001", patient=ident, study_uid=study_uid,
                          series_uid=_uid(seed, "new-sr", i), series_number=990, series_description="Dose Report",
                          seed=seed)
        else:
            good.append({"series_uid": series_uid, "lesion": bool(lesion), "site": site.name, "lesion_mm": lesion,
                         "origin_z": -350.0, "slice_thickness": site.slice_thickness})
    first = min(p for p in out_dir.rglob("*") if p.is_file() and p.name != "SR000001")
    data = first.read_bytes()
    corrupt = out_dir / "corrupt" / "IM_000001"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(data[: int(data.rfind(b"\xe0\x7f\x10\x00") * 0.6)])
    total = sum(1 for p in out_dir.rglob("*") if p.is_file())
    return NewScansSummary(scan_dir=out_dir, n_files=total, good_series=good, gap_series_uid=gap_uid,
                           corrupt_file=corrupt, sr_file=sr)
