from __future__ import annotations

import csv

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.errors import ManifestError
from pipeline.manifest.join import join_manifest
from pipeline.manifest.schema import is_identifier_column
from pipeline.pseudonym import Pseudonymiser

COLUMNS = ["patient_key", "study_key", "series_key", "accession_key", "sex", "age", "modality", "body_part",
           "series_number", "series_description", "manufacturer", "model", "institution", "rows", "columns",
           "n_slices", "n_timepoints", "spacing", "orientation", "series_ref", "n_files", "status", "problems"]
CLEAR = {"MRN0001", "MRN0002", "MRN0003", "MRN0004", "ACC-11", "ACC-22", "ACC-33", "ACC-44", "ACC-99"}


@pytest.fixture()
def secret(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    return Pseudonymiser()


def _series(ps, patient, accession, number, description, n_slices, modality="CT", status="ok", model="Brilliance"):
    return {
        "patient_key": ps.key(patient, "patient"), "study_key": ps.key(accession + "-study", "study"),
        "series_key": ps.key(f"{accession}.{number}", "series"), "accession_key": ps.key(accession, "accession"),
        "sex": "F", "age": "63", "modality": modality, "body_part": "ABDOMEN", "series_number": number,
        "series_description": description, "manufacturer": "Philips", "model": model,
        "institution": "Riverside", "rows": 64, "columns": 64, "n_slices": n_slices, "n_timepoints": 1,
        "spacing": "0.7x0.7x5", "orientation": "axial", "series_ref": f"index.series/{_ref(ps, accession, number)}",
        "n_files": n_slices, "status": status, "problems": "",
    }


def _ref(ps, accession, number):
    return f"{ps.key(f'{accession}.{number}', 'series')}.series.json"


def _write(tmp_path, ps):
    """An index with 4 studies (one MR) and a label sheet with 4 rows (one matching nothing)."""
    series = [
        _series(ps, "MRN0001", "ACC-11", 1, "Topogram", 2),
        _series(ps, "MRN0001", "ACC-11", 2, "Abdomen 5.0 B30f", 40),
        _series(ps, "MRN0001", "ACC-11", 3, "broken", 90, status="error"),
        _series(ps, "MRN0002", "ACC-22", 1, "Scout", 2),
        _series(ps, "MRN0002", "ACC-22", 2, "AXIAL ABD", 60, status="warning"),
        _series(ps, "MRN0003", "ACC-33", 1, "T1 AX", 30, modality="MR"),
        _series(ps, "MRN0004", "ACC-44", 2, "Abd 6mm", 50),
    ]
    index = tmp_path / "scan" / "index.csv"
    index.parent.mkdir()
    pd.DataFrame(series, columns=COLUMNS).to_csv(index, index=False)
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "patient_id", "label", "site", "age_band"])
        w.writerows([["ACC-11", "MRN0001", "lesion", "site-a", "60-79"],
                     ["ACC-22", "MRN0002", "no_lesion", "site-b", "40-59"],
                     ["ACC-33", "MRN0003", "lesion", "site-c", "18-39"],
                     ["ACC-99", "MRN0009", "no_lesion", "site-a", "40-59"]])
    return index, labels


def test_join_selects_largest_usable_ct_series(tmp_path, secret):
    index, labels = _write(tmp_path, secret)
    out = tmp_path / "manifests" / "manifest.csv"
    df, report = join_manifest(index, labels, "accession_number", out, where="modality == 'CT'")
    assert len(df) == 2
    first = df.iloc[0]
    assert first["image"] == f"../scan/index.series/{_ref(secret, 'ACC-11', 2)}"  # not the error series (90)
    assert df.iloc[1]["image"].endswith(_ref(secret, "ACC-22", 2))
    assert list(df["label"]) == ["lesion", "no_lesion"]
    assert list(df["site"]) == ["site-a", "site-b"] and "age_band" in df
    assert {"manufacturer", "scanner_model", "institution", "modality", "sex", "age"} <= set(df.columns)
    assert first["patient_key"] == secret.key("MRN0001", "patient")
    assert "accession_number" not in df and "patient_id" not in df
    assert report.dropped_columns == ["accession_number", "patient_id"]
    assert (report.n_series, report.n_error_series, report.n_filtered_out) == (7, 1, 1)
    written = out.read_text()
    assert not [v for v in CLEAR if v in written]


def test_unmatched_on_both_sides_reported_by_key_only(tmp_path, secret):
    index, labels = _write(tmp_path, secret)
    _, report = join_manifest(index, labels, "accession_number", tmp_path / "m.csv", where="modality == 'CT'")
    # ACC-33 is MR (filtered out), ACC-99 is in no index (sheet rows 4 and 5); ACC-44 has no label row
    assert report.unmatched_labels == [4, 5]
    assert report.unmatched_index == [secret.key("ACC-44", "accession")]
    text = "\n".join(report.lines())
    assert "label rows matching no usable series: 2: sheet row 4, 5" in text
    assert "index keys without a label row: 1" in text
    assert not [v for v in CLEAR if v in text] and secret.key("ACC-99", "accession") not in text


def test_select_rules(tmp_path, secret):
    index, labels = _write(tmp_path, secret)
    df, _ = join_manifest(index, labels, "accession_number", tmp_path / "first.csv", select="first")
    assert df.iloc[0]["image"].endswith(_ref(secret, "ACC-11", 1))
    df, report = join_manifest(index, labels, "accession_number", tmp_path / "d.csv", select="description:abd")
    assert [i.rsplit("/", 1)[1] for i in df["image"]] == [_ref(secret, "ACC-11", 2), _ref(secret, "ACC-22", 2)]
    assert report.no_series_chosen == [secret.key("ACC-33-study", "study")]  # the MR study has no 'abd' series
    with pytest.raises(ManifestError, match="--select 'biggest'"):
        join_manifest(index, labels, "accession_number", tmp_path / "x.csv", select="biggest")


def test_key_patient_id_and_pre_hashed_keys(tmp_path, secret):
    index, labels = _write(tmp_path, secret)
    df, _ = join_manifest(index, labels, "patient_id", tmp_path / "p.csv", where="modality == 'CT'")
    assert len(df) == 2 and "accession_number" not in df
    hashed = tmp_path / "hashed.csv"
    pd.DataFrame({"accession_key": [secret.key("ACC-44", "accession")], "label": ["lesion"]}).to_csv(hashed,
                                                                                                       index=False)
    df, _ = join_manifest(index, hashed, "accession_key", tmp_path / "h.csv")
    assert df["image"].tolist() == [f"scan/index.series/{_ref(secret, 'ACC-44', 2)}"] and df["label"][0] == "lesion"


def test_errors(tmp_path, secret):
    index, labels = _write(tmp_path, secret)
    with pytest.raises(ManifestError, match="--key 'mrn': expected one of accession_number"):
        join_manifest(index, labels, "mrn", tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="label sheet .* has no column 'study_uid'"):
        join_manifest(index, labels, "study_uid", tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="--where: filter \"modality === 'CT'\": not a valid expression"):
        join_manifest(index, labels, "accession_number", tmp_path / "m.csv", where="modality === 'CT'")
    with pytest.raises(ManifestError, match="no column 'diagnosis'"):
        join_manifest(index, labels, "accession_number", tmp_path / "m.csv", label_columns=("diagnosis",))
    dup = tmp_path / "dup.csv"
    dup.write_text("accession_number,label\nACC-11,a\nACC-11,b\n")
    with pytest.raises(ManifestError, match="repeats a value on rows 2, 3") as e:
        join_manifest(index, dup, "accession_number", tmp_path / "m.csv")
    assert "ACC-11" not in str(e.value)


def test_cli(tmp_path, secret, capsys):
    index, labels = _write(tmp_path, secret)
    out = tmp_path / "m.csv"
    code = main(["manifest", str(index), "--labels", str(labels), "--key", "accession_number", "--out", str(out),
                 "--where", "modality == 'CT'", "--max-unmatched", "0.5"])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "manifest: 2 case(s)" in printed and not [v for v in CLEAR if v in printed]
    none = tmp_path / "none.csv"
    none.write_text("accession_number,label\nACC-00,a\n")
    assert main(["manifest", str(index), "--labels", str(none), "--key", "accession_number", "--out",
                 str(tmp_path / "e.csv")]) == 2


def test_where_is_a_filter_language_and_runs_no_code(tmp_path, secret, capsys):
    index, labels = _write(tmp_path, secret)
    marker = tmp_path / "marker"
    payload = f"@pd.io.common.os.system('touch {marker}') == 0 or modality == \"CT\""
    code = main(["manifest", str(index), "--labels", str(labels), "--key", "accession_number",
                 "--out", str(tmp_path / "m.csv"), "--where", payload])
    assert code == 2 and not marker.exists() and not (tmp_path / "m.csv").exists()
    err = capsys.readouterr().err
    assert f"--where: filter {payload!r}: '@pd' (a pandas @-variable) is not allowed" in err
    with pytest.raises(ManifestError, match="unknown column 'modalty' \\(did you mean 'modality'\\?\\); columns: "):
        join_manifest(index, labels, "accession_number", tmp_path / "m.csv", where="modalty == 'CT'")
    # numbers compare as numbers, text as text, contains / matches ignore case
    df, report = join_manifest(index, labels, "accession_number", tmp_path / "m.csv",
                               where="n_slices >= 40 and not contains(series_description, 'SCOUT')")
    assert [i.rsplit("/", 1)[1] for i in df["image"]] == [_ref(secret, "ACC-11", 2), _ref(secret, "ACC-22", 2)]
    assert report.n_filtered_out == 3  # 7 series, 1 with status error, 3 kept (one has no label row)
    df, _ = join_manifest(index, labels, "accession_number", tmp_path / "m.csv",
                          where="modality in ['MR'] or matches(series_description, '^axial')")
    assert [i.rsplit("/", 1)[1] for i in df["image"]] == [_ref(secret, "ACC-22", 2), _ref(secret, "ACC-33", 1)]


def test_identifier_columns_of_any_spelling_are_left_out(tmp_path, secret, capsys):
    index, _ = _write(tmp_path, secret)
    labels = tmp_path / "sheet.csv"
    people = [["ACC-11", "lesion", "Jane Roe", "1961-02-03", "MRN0001", "jane@example.org", "555-0101", "site-a"],
              ["ACC-22", "no_lesion", "John Doe", "1975-11-30", "MRN0002", "john@example.org", "555-0102", "site-b"]]
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["accession_number", "label", "Patient Name", "Date of Birth", "MRN", "E-mail", "Phone Number",
                    "Site"])
        w.writerows(people)
    out = tmp_path / "manifest.csv"
    df, report = join_manifest(index, labels, "accession_number", out)
    assert report.dropped_columns == ["accession_number", "Patient Name", "Date of Birth", "MRN", "E-mail",
                                      "Phone Number"]
    assert list(df["Site"]) == ["site-a", "site-b"] and list(df["label"]) == ["lesion", "no_lesion"]
    assert not {"Patient Name", "Date of Birth", "MRN", "E-mail", "Phone Number"} & set(df.columns)
    written = out.read_text()
    assert not [v for row in people for v in row[2:7] if v in written]
    assert main(["manifest", str(index), "--labels", str(labels), "--key", "accession_number", "--out",
                 str(out), "--max-unmatched", "1"]) == 0
    printed = capsys.readouterr().out
    assert ("label-sheet identifier columns left out: accession_number, Patient Name, Date of Birth, MRN, E-mail, "
            "Phone Number") in printed
    assert not [v for row in people for v in row[2:7] if v in printed]


@pytest.mark.parametrize("name", [
    "Patient Name", "patient_name", "PatientName", "Patient's Name", "name", "First Name", "last-name", "Given Name",
    "Family Name", "Surname", "Date of Birth", "DOB", "birth.date", "PatientBirthDate", "MRN", "MRN#",
    "Medical Record Number", "SSN", "Social Security No", "Phone", "Telephone", "Phone Number", "Mobile",
    "Cell Phone", "Address", "Street Address", "Address Line 1", "ZIP", "Zip Code", "Postcode", "Postal Code",
    "E-mail", "Email Address", "Accession", "Accession Number", "AccessionNumber", "Study Instance UID",
])
def test_identifier_spellings_are_recognised(name):
    assert is_identifier_column(name)


@pytest.mark.parametrize("name", [
    "label", "site", "Site", "age", "age_band", "sex", "patient_id", "patient_key", "accession_key", "split", "image",
    "scanner", "scanner_model", "institution", "modality", "series_description", "cell", "username", "file name",
])
def test_other_columns_are_not_identifiers(name):
    assert not is_identifier_column(name)


def _sheet(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_keys_are_matched_as_hospitals_write_them(tmp_path, secret, capsys):
    """Lower case and spaces around accession numbers, a numeric MRN column that lost its leading zeros."""
    index, _ = _write(tmp_path, secret)
    lower = _sheet(tmp_path / "lower.csv", ["accession_number", "label"],
                   [[" acc-11", "lesion"], ["acc-22 ", "no_lesion"], ["Acc-44", "lesion"]])
    df, report = join_manifest(index, lower, "accession_number", tmp_path / "m.csv", max_unmatched=0.05,
                               where="modality == 'CT'")
    assert len(df) == 3 and report.unmatched_labels == [] and report.n_normalised == 3
    ps = secret
    numeric = tmp_path / "numeric"
    numeric.mkdir()
    series = [_series(ps, "0001234", "ACC-1", 1, "ax", 30), _series(ps, "0005678", "ACC-2", 1, "ax", 30)]
    pd.DataFrame(series, columns=COLUMNS).to_csv(numeric / "index.csv", index=False)
    sheet = _sheet(tmp_path / "mrn.csv", ["patient_id", "label"], [["1234", "lesion"], ["005678", "no_lesion"]])
    df, report = join_manifest(numeric / "index.csv", sheet, "patient_id", tmp_path / "p.csv", max_unmatched=0.0)
    assert list(df["label"]) == ["lesion", "no_lesion"] and report.n_normalised == 2
    assert main(["manifest", str(index), "--labels", str(lower), "--key", "accession_number", "--out",
                 str(tmp_path / "cli.csv"), "--where", "modality == 'CT'"]) == 0
    out = capsys.readouterr().out
    assert "matched after normalising the key (case, spaces, leading zeros): 3" in out
    assert not [v for v in CLEAR | {"acc-11", "acc-22", "Acc-44"} if v in out]


def test_too_many_unmatched_rows_exit_2_listing_sheet_rows_not_identifiers(tmp_path, secret, capsys):
    index, _ = _write(tmp_path, secret)
    rows = [["ACC-11", "lesion"], ["ACC-22", "no_lesion"], ["ACC-44", "lesion"]] + \
        [[f"XYZ-{i:02d}", "lesion"] for i in range(3)]
    sheet = _sheet(tmp_path / "sheet.csv", ["accession_number", "label"], rows)
    out = tmp_path / "m.csv"
    assert main(["manifest", str(index), "--labels", str(sheet), "--key", "accession_number", "--out",
                 str(out)]) == 2
    captured = capsys.readouterr()
    assert "label rows matching no usable series: 3: sheet row 5, 6, 7" in captured.out
    assert "3 of 6 label row(s) (50%)" in captured.err and "--max-unmatched 0.05" in captured.err
    assert "no manifest written" in captured.err and not out.exists()
    assert "wrote" not in captured.out
    assert not [v for v in ("XYZ-00", "XYZ-01", "XYZ-02", secret.key("XYZ-00", "accession"))
                if v in captured.out + captured.err]
    assert main(["manifest", str(index), "--labels", str(sheet), "--key", "accession_number", "--out",
                 str(out), "--max-unmatched", "0.5"]) == 0 and out.is_file()
    # the index side counts too: a sheet of one study leaves 2 of 3 usable CT studies unmatched
    one = _sheet(tmp_path / "one.csv", ["accession_number", "label"], [["ACC-11", "lesion"]])
    with pytest.raises(ManifestError, match="2 of 3 usable index key"):
        join_manifest(index, one, "accession_number", tmp_path / "x.csv", where="modality == 'CT'",
                      max_unmatched=0.05)


def test_a_where_that_keeps_nothing_writes_nothing(tmp_path, secret, capsys):
    index, labels = _write(tmp_path, secret)
    out = tmp_path / "m.csv"
    assert main(["manifest", str(index), "--labels", str(labels), "--key", "accession_number", "--out", str(out),
                 "--where", "modality == 'PET'"]) == 2
    captured = capsys.readouterr()
    assert "--where \"modality == 'PET'\" keeps none of the 7 series" in captured.err
    assert "wrote" not in captured.out and not out.exists()
