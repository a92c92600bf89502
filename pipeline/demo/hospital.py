"""The synthetic hospital: its three sites (scanners and how they write files) and its patients."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np


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
#: Share of the patients of each of :data:`SITES`.
SITE_WEIGHTS = (0.4, 0.35, 0.25)

#: The DICOM keywords of a patient's identifiers, as written into every file of the patient.
IDENTIFIER_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "AccessionNumber")

_FAMILY = ("Okonkwo", "Vasquez", "Lindqvist", "Abernathy", "Kowalczyk", "Nakamura", "Fairweather", "Delacroix",
           "Haverford", "Oyelaran", "Brannigan", "Castellanos", "Thorsby", "Mbeki", "Quintero", "Radcliffe",
           "Szymanski", "Whitlock", "Yamazaki", "Zeller", "Achterberg", "Bellweather", "Cornwallis", "Dunmore")
_GIVEN = {"F": ("Maren", "Ifeoma", "Solveig", "Lucinda", "Agnieszka", "Harue", "Philippa", "Odile", "Rosalind"),
          "M": ("Tobias", "Emeka", "Leopold", "Casimir", "Hiroshi", "Ambrose", "Florian", "Thaddeus", "Osvaldo")}


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


def identifiers(patient: dict[str, str]) -> dict[str, str]:
    """The :data:`IDENTIFIER_KEYS` of a :func:`make_patient` record."""
    return {k: patient[k] for k in IDENTIFIER_KEYS}


def age_band(age: int) -> str:
    """The label sheet's age band of ``age`` years: ``<18``, ``18-39``, ``40-59``, ``60-79`` or ``80+``."""
    for low, high in ((18, 39), (40, 59), (60, 79)):
        if low <= age <= high:
            return f"{low}-{high}"
    return "80+" if age >= 80 else "<18"


def study_tags(site: Site, patient: dict[str, str], body_part: str) -> dict[str, Any]:
    """Tags of every file of a patient's study at ``site``: study date, scanner model, station, kernel."""
    date = patient["StudyDate"]
    return {
        "StudyDate": date, "SeriesDate": date, "ContentDate": date, "AcquisitionDate": date,
        "ManufacturerModelName": site.model, "StationName": f"{site.manufacturer[:2].upper()}CT01",
        "BodyPartExamined": body_part, "StudyDescription": "CT ABDOMEN PELVIS WITH CONTRAST",
        "ReferringPhysicianName": "REFERRER^ANON", "ConvolutionKernel": site.kernel, "KVP": "120",
    }
