"""A synthetic hospital export: what a research coordinator gets from PACS, fake but realistic.

:func:`write_export` writes ``OUT/export/`` (nested folders with random names, files named at
random, series of one study mixed in one folder, written in shuffled order) and ``OUT/labels.csv``
(one row per study keyed by accession number, as a coordinator exports it). Patients come from
three sites whose scanners differ in manufacturer, model, noise, pixel spacing and slice
thickness. Every study holds an axial CT (int16, RescaleIntercept -1024, a body of soft tissue,
fat, liver, spine and lungs in HU) and a 2-slice coronal localizer; some hold a dose report (SR).
About half the patients carry a lesion, a brighter blob (+110..+180 HU), the label to learn. The
export also holds one truncated DICOM file, a ``README.txt`` and a ``DICOMDIR``.

:func:`write_new_scans` writes a folder of unlabeled scans for ``radpipe predict``: a few good
series, a corrupt file, a series with missing slices and a non-image object.

All DICOM files are written by :func:`pipeline.demo.synthetic_dicom.write_series` (one writer). The
same seed gives byte-identical files (UIDs, names and dates come from the seed).
"""
from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

from pipeline.demo.synthetic_dicom import write_dicomdir, write_series, write_sr


@dataclass(frozen=True)
class Site:
    """One hospital site: its scanner and how it writes files."""

    name: str
    institution: str
    manufacturer: str
    model: str
    noise_hu: float
    pixel_spacing: float
    slice_thickness: float
    series_description: str
    localizer_description: str
    kernel: str
    name_style: str
    accession_prefix: str


SITES: tuple[Site, ...] = (
    Site("site-a", "St. Elsewhere University Hospital", "SIEMENS", "SOMATOM Definition AS", 10.0, 5.47, 5.0,
         "Abdomen 5.0 B30f", "Topogram 0.6 T20s", "B30f", "im", "RA"),
    Site("site-b", "Mercy General Hospital", "GE MEDICAL SYSTEMS", "LightSpeed VCT", 16.0, 6.25, 3.75,
         "AXIAL ABD/PEL 3.75mm STND", "Scout", "STANDARD", "hex", "GE"),
    Site("site-c", "Riverside Community Clinic", "Philips", "Brilliance 64", 22.0, 5.0, 6.0,
         "Abd/Pelvis iDose 6mm", "Surview", "B", "num", "PH"),
)
_SITE_WEIGHTS = (0.4, 0.35, 0.25)

_FAMILY = ("Okonkwo", "Vasquez", "Lindqvist", "Abernathy", "Kowalczyk", "Nakamura", "Fairweather", "Delacroix",
           "Haverford", "Oyelaran", "Brannigan", "Castellanos", "Thorsby", "Mbeki", "Quintero", "Radcliffe",
           "Szymanski", "Whitlock", "Yamazaki", "Zeller", "Achterberg", "Bellweather", "Cornwallis", "Dunmore")
_GIVEN = {"F": ("Maren", "Ifeoma", "Solveig", "Lucinda", "Agnieszka", "Harue", "Philippa", "Odile", "Rosalind"),
          "M": ("Tobias", "Emeka", "Leopold", "Casimir", "Hiroshi", "Ambrose", "Florian", "Thaddeus", "Osvaldo")}
_REPORT_TEXT = ("CT dose report. CTDIvol {:.1f} mGy, DLP {:.0f} mGy*cm.",)
_README = """Export from PACS, research request. Do not redistribute.
Folders are named by the export tool and carry no meaning.
"""
_ROWS = _COLS = 64


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
        cases: per patient: accession number, label, site, series UID of its axial CT, lesion centre and radius.
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
        good_series: series UIDs of the complete series, with ``lesion`` truth (not written to disk).
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


def _age_band(age: int) -> str:
    for low, high in ((18, 39), (40, 59), (60, 79)):
        if low <= age <= high:
            return f"{low}-{high}"
    return "80+" if age >= 80 else "<18"


def make_patient(rng: np.random.Generator, site: Site, index: int) -> dict[str, str]:
    """Fake but realistic identifiers of one patient and study (DICOM keywords as keys)."""
    sex = "F" if rng.random() < 0.5 else "M"
    study_date = dt.date(2021, 1, 4) + dt.timedelta(days=int(rng.integers(0, 1300)))
    age = int(rng.integers(24, 89))
    birth = study_date - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    age = (study_date - birth).days * 4 // 1461
    family = _FAMILY[int(rng.integers(len(_FAMILY)))]
    given = _GIVEN[sex][int(rng.integers(len(_GIVEN[sex])))]
    return {
        "PatientName": f"{family.upper()}^{given.upper()}",
        "PatientID": f"{site.accession_prefix[0]}{int(rng.integers(1_000_000, 9_999_999))}{index % 10}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": sex,
        "PatientAge": f"{age:03d}Y",
        "AccessionNumber": f"{site.accession_prefix}{study_date:%y}{int(rng.integers(100_000, 999_999))}{index:03d}",
        "StudyDate": study_date.strftime("%Y%m%d"),
    }


def phantom_hu(rng: np.random.Generator, n_slices: int, pixel_spacing: float, slice_thickness: float,
               noise_hu: float, lesion: bool, lesion_hu: tuple[float, float] = (110.0, 180.0),
               ) -> tuple[np.ndarray, dict[str, float]]:
    """An abdominal CT phantom in HU, shape (z, y, x), z from feet to head, y from anterior to posterior.

    ``lesion_hu`` is the range of the lesion's contrast over the tissue it sits in: positive for a
    hyperdense lesion (the export's task), negative for a hypodense cyst (the demo's source task).

    Returns:
        The volume (float32) and the lesion's centre (mm, volume frame) and radius (empty without lesion).
    """
    z = (np.arange(n_slices) + 0.5) * slice_thickness
    c = (np.arange(_COLS) - (_COLS - 1) / 2) * pixel_spacing
    zz, yy, xx = np.meshgrid(z, c, c, indexing="ij")
    length = n_slices * slice_thickness
    a, b = rng.uniform(125, 155), rng.uniform(88, 108)  # body half-axes (x, y) mm
    r = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
    vol = np.full(zz.shape, -1000.0, dtype=np.float32)
    vol[r <= 1.0] = -95.0  # subcutaneous fat
    inner = np.sqrt((xx / (a - 14)) ** 2 + (yy / (b - 12)) ** 2) <= 1.0
    vol[inner] = 40.0  # soft tissue
    liver = (((xx + 0.42 * a) / (0.45 * a)) ** 2 + ((yy + 0.05 * b) / (0.62 * b)) ** 2 +
             ((zz - 0.75 * length) / (0.5 * length)) ** 2) <= 1.0
    vol[liver & inner] = 62.0
    lungs = (zz > 0.72 * length) & inner & (
        ((np.abs(xx) - 0.48 * a) / (0.34 * a)) ** 2 + ((yy + 0.1 * b) / (0.6 * b)) ** 2 <= 1.0)
    vol[lungs] = -840.0
    spine = (xx / 16.0) ** 2 + ((yy - 0.62 * b) / 16.0) ** 2 <= 1.0
    vol[spine] = 650.0
    info: dict[str, float] = {}
    if lesion:
        radius = rng.uniform(18.0, 32.0)
        cx = rng.uniform(-0.45, 0.45) * a
        cy = rng.uniform(-0.55, 0.15) * b
        cz = rng.uniform(0.2, 0.6) * length
        delta = rng.uniform(*lesion_hu)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2 + ((zz - cz) * 1.1) ** 2)
        blob = delta / (1.0 + np.exp((d - radius) / 2.5))
        vol += np.where(inner & ~lungs & ~spine, blob, 0.0).astype(np.float32)
        info = {"x_mm": float(cx), "y_mm": float(cy), "z_mm": float(cz), "radius_mm": float(radius),
                "delta_hu": float(delta)}
    vol += rng.normal(0.0, noise_hu, size=vol.shape).astype(np.float32)
    return vol, info


def _localizer(volume_hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two coronal projection images (2, rows, cols) of the volume, stored values (HU + 1024 scale)."""
    attenuation = np.clip(volume_hu + 1000.0, 0, None).mean(axis=1)  # (z, x)
    rows_idx = np.linspace(volume_hu.shape[0] - 1, 0, _ROWS).round().astype(int)  # top of image = head
    image = attenuation[rows_idx] * 1.6
    return np.stack([image + rng.normal(0, 6, image.shape) for _ in range(2)]).round().astype(np.int16)


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


def _place(staged: list[Path], folders: Sequence[Path], rng: np.random.Generator, style: str,
           names: dict[Path, set[str]], moves: list[tuple[Path, Path]]) -> list[Path]:
    """Plan moving staged files into ``folders`` (chosen per file) under random names."""
    placed = []
    for path in staged:
        folder = folders[int(rng.integers(len(folders)))]
        target = folder / _file_name(rng, style, names.setdefault(folder, set()))
        moves.append((path, target))
        placed.append(target)
    return placed


def _study_extra(site: Site, patient: dict[str, str], body_part: str) -> dict[str, Any]:
    date = patient["StudyDate"]
    return {
        "StudyDate": date, "SeriesDate": date, "ContentDate": date, "AcquisitionDate": date,
        "ManufacturerModelName": site.model, "StationName": f"{site.manufacturer[:2].upper()}CT01",
        "BodyPartExamined": body_part, "StudyDescription": "CT ABDOMEN PELVIS WITH CONTRAST",
        "ReferringPhysicianName": "REFERRER^ANON", "ConvolutionKernel": site.kernel, "KVP": "120",
    }


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
    export = out_dir / "export"
    if export.exists():
        shutil.rmtree(export)
    staging = out_dir / ".export-staging"
    if staging.exists():
        shutil.rmtree(staging)
    rng = np.random.default_rng(seed)
    site_of = rng.choice(len(SITES), size=n_patients, p=_SITE_WEIGHTS)
    lesion_of = np.zeros(n_patients, dtype=bool)
    lesion_of[rng.permutation(n_patients)[: int(round(n_patients * lesion_fraction))]] = True
    moves: list[tuple[Path, Path]] = []
    names: dict[Path, set[str]] = {}
    phi: list[dict[str, str]] = []
    cases: list[dict[str, Any]] = []
    label_rows: list[dict[str, str]] = []
    n_series = n_files = n_sr = 0
    first_slices: list[Path] = []

    for i in range(n_patients):
        site = SITES[int(site_of[i])]
        patient = make_patient(rng, site, i)
        study_uid = _uid(seed, "study", i)
        top = export / _folder_name(rng)
        folders = [top / _folder_name(rng) for _ in range(int(rng.integers(1, 3)))]
        n_slices = int(rng.integers(slices[0], slices[1] + 1))
        hu, lesion = phantom_hu(rng, n_slices, site.pixel_spacing, site.slice_thickness, site.noise_hu,
                                bool(lesion_of[i]))
        ident = {k: patient[k] for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                                           "PatientAge", "AccessionNumber")}
        extra = _study_extra(site, patient, "ABDOMEN")
        extent = (_COLS - 1) * site.pixel_spacing
        table_z = float(rng.uniform(-420.0, -300.0))
        series_uid = _uid(seed, "series", i, 2)
        staged = write_series(
            staging / f"{i}-ct", rows=_ROWS, cols=_COLS, pixel_spacing=(site.pixel_spacing, site.pixel_spacing),
            slice_spacing=site.slice_thickness, orientation="axial",
            origin=(-extent / 2, -extent / 2, table_z), order="ascending" if rng.random() < 0.5 else "descending",
            modality="CT", slope=1.0, intercept=-1024.0, data=np.clip(np.round(hu + 1024.0), 0, 4095),
            patient=ident, study_uid=study_uid, series_uid=series_uid, series_number=2,
            series_description=site.series_description, manufacturer=site.manufacturer,
            institution=site.institution, file_names="instance", seed=seed * 100_003 + i,
            extra={**extra, "WindowCenter": 40, "WindowWidth": 400})
        ct_files = _place(staged, folders, rng, site.name_style, names, moves)
        first_slices.append(ct_files[0])
        n_series += 1
        n_files += len(staged)

        # the localizer goes to the first CT folder or a folder of its own
        loc_folder = [folders[0]] if rng.random() < 0.5 else [top / _folder_name(rng)]
        length = n_slices * site.slice_thickness
        staged = write_series(
            staging / f"{i}-loc", rows=_ROWS, cols=_COLS, n_slices=2,
            pixel_spacing=(length / _ROWS, extent / (_COLS - 1)), slice_spacing=1.0, orientation="coronal",
            origin=(-extent / 2, 0.0, table_z + length), modality="CT", slope=1.0, intercept=-1024.0,
            data=_localizer(hu, rng), patient=ident, study_uid=study_uid, series_uid=_uid(seed, "series", i, 1),
            series_number=1, series_description=site.localizer_description, manufacturer=site.manufacturer,
            institution=site.institution, file_names="instance", seed=seed * 100_003 + i,
            extra={**extra, "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "SliceThickness": None})
        _place(staged, loc_folder, rng, site.name_style, names, moves)
        n_series += 1
        n_files += len(staged)

        if rng.random() < 0.35:
            sr = write_sr(staging / f"{i}-sr" / "sr.dcm", text=_REPORT_TEXT[0].format(
                rng.uniform(8, 20), rng.uniform(400, 1100)), patient=ident, study_uid=study_uid,
                series_uid=_uid(seed, "series", i, 990), series_number=990, series_description="Dose Report",
                seed=seed * 100_003 + i)
            _place([sr], folders, rng, site.name_style, names, moves)
            n_sr += 1
        phi.append(ident)
        age = int(patient["PatientAge"][:3])
        label_rows.append({"accession_number": patient["AccessionNumber"], "patient_id": patient["PatientID"],
                           "label": "lesion" if lesion else "normal", "site": site.name,
                           "sex": patient["PatientSex"], "age_band": _age_band(age)})
        cases.append({"accession_number": patient["AccessionNumber"], "label": label_rows[-1]["label"],
                      "site": site.name, "series_uid": series_uid, "n_slices": n_slices, "lesion": lesion})

    order = rng.permutation(len(moves))
    for k in order:
        source, target = moves[int(k)]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    shutil.rmtree(staging)

    # an interrupted transfer: a copy of a CT slice cut inside its header
    truncate_source = first_slices[int(rng.integers(len(first_slices)))]
    data = truncate_source.read_bytes()
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    truncated = truncate_source.parent / _file_name(rng, "im", names.setdefault(truncate_source.parent, set()))
    truncated.write_bytes(data[: int(pixel_tag * 0.6)])
    readme = export / "README.txt"
    readme.write_text(_README, encoding="utf-8")
    dicomdir = write_dicomdir(export / "DICOMDIR", seed=seed)

    labels_csv = out_dir / "labels.csv"
    with labels_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["accession_number", "patient_id", "label", "site", "sex", "age_band"])
        writer.writeheader()
        writer.writerows(label_rows)
    total = sum(len(files) for _, _, files in os.walk(export))
    return ExportSummary(export_dir=export, labels_csv=labels_csv, n_patients=n_patients, n_files=total,
                         n_image_series=n_series, n_image_files=n_files, n_sr=n_sr,
                         n_lesion=int(sum(c["label"] == "lesion" for c in cases)), truncated_file=truncated,
                         non_dicom_files=[readme], dicomdir_file=dicomdir, phi=phi, cases=cases)


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
        ident = {k: patient[k] for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                                           "PatientAge", "AccessionNumber")}
        has_lesion = i % 2 == 0
        hu, lesion = phantom_hu(rng, n_slices, site.pixel_spacing, site.slice_thickness, site.noise_hu, has_lesion)
        extent = (_COLS - 1) * site.pixel_spacing
        gap = i == n_series
        series_uid = _uid(seed, "new-series", i)
        study_uid = _uid(seed, "new-study", i)
        folder = out_dir / _folder_name(rng) / _folder_name(rng)
        write_series(
            folder, rows=_ROWS, cols=_COLS, pixel_spacing=(site.pixel_spacing, site.pixel_spacing),
            slice_spacing=site.slice_thickness, origin=(-extent / 2, -extent / 2, -350.0), modality="CT",
            intercept=-1024.0, data=np.clip(np.round(hu + 1024.0), 0, 4095), patient=ident,
            study_uid=study_uid, series_uid=series_uid, series_number=2,
            series_description=site.series_description, manufacturer=site.manufacturer,
            institution=site.institution, file_names="random", seed=seed * 7_919 + i,
            missing_slices=(n_slices // 2, n_slices // 2 + 1) if gap else (),
            extra=_study_extra(site, patient, "ABDOMEN"))
        if gap:
            gap_uid = series_uid
            sr = write_sr(folder / "SR000001", patient=ident, study_uid=study_uid,
                          series_uid=_uid(seed, "new-sr", i), series_number=990, series_description="Dose Report",
                          seed=seed)
        else:
            good.append({"series_uid": series_uid, "lesion": bool(lesion), "site": site.name})
    first = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != "SR000001")[0]
    data = first.read_bytes()
    corrupt = out_dir / "corrupt" / "IM_000001"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(data[: int(data.rfind(b"\xe0\x7f\x10\x00") * 0.6)])
    total = sum(1 for p in out_dir.rglob("*") if p.is_file())
    return NewScansSummary(scan_dir=out_dir, n_files=total, good_series=good, gap_series_uid=gap_uid,
                           corrupt_file=corrupt, sr_file=sr)
