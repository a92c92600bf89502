from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import config_from_dict
from pipeline.errors import ManifestError
from pipeline.manifest.reading import load_manifest
from pipeline.manifest.schema import Problem
from pipeline.manifest.validation import validate_manifest


def _nifti(path, shape=(4, 4, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)), str(path))


def _manifest(tmp_path, text, images=()):
    """Write ``text`` as manifest.csv and a small NIfTI for each name in ``images``."""
    for name in images:
        _nifti(tmp_path / name)
    path = tmp_path / "manifest.csv"
    path.write_text(text.strip() + "\n")
    return path


GOOD = """
image,label,patient_id,split,site
a.nii.gz,pos,p1,train,x
b.nii.gz,neg,p2,train,y
c.nii.gz,pos,p3,val,x
d.nii.gz,neg,p4,val,y
e.nii.gz,pos,p5,test,x
f.nii.gz,neg,p6,test,y
"""
GOOD_IMAGES = [f"{c}.nii.gz" for c in "abcdef"]


def _find(problems: list[Problem], column: str | None, row: int | None, text: str) -> Problem:
    hits = [p for p in problems if p.column == column and p.row == row and text in p.message]
    assert hits, f"no problem at row {row}, column {column!r} with {text!r}: {[str(p) for p in problems]}"
    return hits[0]


def _cfg(**data):
    return config_from_dict({"data": data})


def test_load_resolves_paths_rows_and_case_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    path = _manifest(tmp_path / "sub", "image,label,patient_id,weight,fold\n../img/a.nii.gz ,1,p1,0.5,0\n"
                     "/abs/b.nii.gz,0,p2,2,1\n")
    df = load_manifest(path)
    assert df["row"].tolist() == [2, 3]
    assert df["image"].tolist() == [str(tmp_path / "img" / "a.nii.gz"), "/abs/b.nii.gz"]
    assert df["case_id"].tolist() == ["../img/a.nii.gz", "/abs/b.nii.gz"]
    assert df["weight"].tolist() == [0.5, 2.0] and df["fold"].tolist() == [0, 1]
    assert df["label"].tolist() == ["1", "0"]  # labels stay text
    assert df.attrs["folder"] == str(tmp_path / "sub")


def test_load_missing_or_empty_file(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        load_manifest(tmp_path / "empty.csv")


def test_good_manifest_has_no_problem(tmp_path):
    df = load_manifest(_manifest(tmp_path, GOOD, GOOD_IMAGES))
    assert validate_manifest(df) == []
    assert validate_manifest(df, _cfg(classes=["neg", "pos"])) == []


def test_missing_columns_suggest_the_close_name(tmp_path):
    df = load_manifest(_manifest(tmp_path, "Image,lable,site\na.nii.gz,1,x\n"))
    problems = validate_manifest(df, check_files=False)
    assert "rename column 'Image' to 'image'" in _find(problems, "image", None, "required column").fix
    assert "rename column 'lable' to 'label'" in _find(problems, "label", None, "required column").fix
    _find(problems, "patient_id", None, "no patient column")


def test_patient_key_is_accepted_and_identifier_columns_warned(tmp_path):
    text = GOOD.replace("patient_id", "patient_key").replace("site", "PatientName")
    df = load_manifest(_manifest(tmp_path, text, GOOD_IMAGES))
    problems = validate_manifest(df)
    assert [p.severity for p in problems] == ["warning"]
    _find(problems, "PatientName", None, "identifier in clear")


def test_missing_empty_duplicated_and_unreadable_images(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "dicomdir").mkdir()
    (tmp_path / "dicomdir" / "IM0001").write_bytes(b"x")
    text = """
image,label,patient_id
a.nii.gz,pos,p1
missing.nii.gz,neg,p2
a.nii.gz,pos,p3
,neg,p4
broken.nii.gz,pos,p5
emptydir,neg,p6
dicomdir,pos,p7
"""
    df = load_manifest(_manifest(tmp_path, text, ["a.nii.gz"]))
    problems = validate_manifest(df)
    _find(problems, "image", 3, "file not found")
    assert "same file as row 2" in _find(problems, "image", 4, "same file").message
    _find(problems, "image", 5, "image path is empty")
    _find(problems, "image", 6, "not an image file")
    _find(problems, "image", 7, "folder is empty")
    _find(problems, "image", 8, "holds no DICOM image")  # a folder whose one file is not DICOM
    assert not [p for p in problems if p.row == 2]
    assert not [p for p in validate_manifest(df, check_files=False) if "not found" in p.message]


def test_series_reference_checked(tmp_path):
    (tmp_path / "bad.series.json").write_text("{not json")
    text = "image,label,patient_id\nbad.series.json,pos,p1\na.nii.gz,neg,p2\n"
    df = load_manifest(_manifest(tmp_path, text, ["a.nii.gz"]))
    _find(validate_manifest(df), "image", 2, "series reference")


def test_empty_unknown_labels_and_class_counts(tmp_path):
    text = """
image,label,patient_id
a.nii.gz,pos,p1
b.nii.gz,,p2
c.nii.gz,maybe,p3
d.nii.gz,neg,p4
"""
    df = load_manifest(_manifest(tmp_path, text))
    problems = validate_manifest(df, _cfg(classes=["neg", "pos", "other"], task="multiclass"), check_files=False)
    _find(problems, "label", 3, "label is empty")
    assert "not one of the classes" in _find(problems, "label", 4, "maybe").message
    assert _find(problems, "label", None, "class 'other' of data.classes has no case").severity == "warning"
    # one patient per class: cannot be stratified into train/val/test
    rare = _find(problems, "label", None, "class 'pos' has 1 patient(s)")
    assert rare.severity == "error"


def test_binary_with_three_classes(tmp_path):
    text = "image,label,patient_id\na,x,p1\nb,y,p2\nc,z,p3\n"
    df = load_manifest(_manifest(tmp_path, text))
    problem = _find(validate_manifest(df, _cfg(task="binary"), check_files=False), "label", None, "needs 2 classes")
    assert "multiclass" in problem.fix


def test_two_patients_of_a_class_is_a_warning(tmp_path):
    rows = "\n".join(f"i{i}.nii.gz,{'pos' if i < 2 else 'neg'},p{i}" for i in range(8))
    df = load_manifest(_manifest(tmp_path, "image,label,patient_id\n" + rows))
    problem = _find(validate_manifest(df, check_files=False), "label", None, "class 'pos' has 2 patient(s)")
    assert problem.severity == "warning"


def test_multilabel_and_regression_values(tmp_path):
    text = "image,effusion,nodule,patient_id\na,1,0,p1\nb,yes,0,p2\nc,2,0,p3\n"
    df = load_manifest(_manifest(tmp_path, text))
    cfg = _cfg(task="multilabel", label_columns=["effusion", "nodule"])
    problems = validate_manifest(df, cfg, check_files=False)
    _find(problems, "effusion", 4, "expected 0 or 1")
    assert _find(problems, "nodule", None, "no case is positive").severity == "warning"
    df = load_manifest(_manifest(tmp_path, "image,label,patient_id\na,1.5,p1\nb,high,p2\nc,3,p3\n"))
    cfg = config_from_dict({"data": {"task": "regression"}, "train": {"key_metric": "neg_mae"}})
    problems = validate_manifest(df, cfg, check_files=False)
    assert [(p.row, p.column) for p in problems] == [(3, "label")]


def test_bad_split_and_fold_values(tmp_path):
    text = """
image,label,patient_id,split,fold
a,pos,p1,train,0
b,neg,p2,validation,1
c,pos,p3,,x
d,neg,p4,holdout,-1
"""
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)), check_files=False)
    assert _find(problems, "split", 3, "'validation' is not one of").fix == "write 'val'"
    _find(problems, "split", 4, "split is empty")
    _find(problems, "split", 5, "'holdout'")
    _find(problems, "fold", 4, "fold 'x'")
    _find(problems, "fold", 5, "fold '-1'")


def test_patient_in_two_splits_is_leakage(tmp_path):
    text = GOOD.replace("f.nii.gz,neg,p6,test", "f.nii.gz,neg,p2,test")
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)), check_files=False)
    problem = _find(problems, "patient_id", 3, "leakage")
    assert "train (row 3) and test (row 7)" in problem.message and problem.severity == "error"
    assert "p2" not in str(problem)  # rows are named, never the patient id


def test_patient_in_two_folds(tmp_path):
    text = "image,label,patient_id,fold\na,pos,p1,0\nb,neg,p1,1\nc,pos,p2,1\nd,neg,p3,0\n"
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)), check_files=False)
    assert "0 (row 2) and 1 (row 3)" in _find(problems, "patient_id", 2, "2 folds").message


def test_class_absent_from_a_split(tmp_path):
    text = """
image,label,patient_id,split
a,pos,p1,train
b,pos,p2,train
c,neg,p3,val
d,pos,p4,test
e,neg,p5,test
"""
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)), check_files=False)
    assert _find(problems, "split", None, "class 'neg' has no case in split train").severity == "error"
    assert _find(problems, "split", None, "class 'pos' has no case in split val").severity == "warning"


def test_no_val_split_warned(tmp_path):
    text = "image,label,patient_id,split\na,pos,p1,train\nb,neg,p2,train\nc,pos,p3,test\nd,neg,p4,test\n"
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)), check_files=False)
    assert _find(problems, "split", None, "no case is in the val split").severity == "warning"


def test_bad_weights(tmp_path):
    text = GOOD.replace("split,site", "split,weight").replace(",x\n", ",1\n").replace(",y\n", ",2\n")
    lines = text.strip().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",heavy"
    lines[3] = lines[3].rsplit(",", 1)[0] + ",-1"
    problems = validate_manifest(load_manifest(_manifest(tmp_path, "\n".join(lines))), check_files=False)
    _find(problems, "weight", 3, "'heavy' is not a number")
    _find(problems, "weight", 4, "'-1' is not a number >= 0")
    zero = GOOD.replace("split,site", "split,weight").replace(",x\n", ",0\n").replace(",y\n", ",0\n")
    problems = validate_manifest(load_manifest(_manifest(tmp_path, zero)), check_files=False)
    _find(problems, "weight", None, "every weight is 0")


def test_empty_patient_id(tmp_path):
    problems = validate_manifest(load_manifest(_manifest(tmp_path, GOOD.replace("p4", ""))), check_files=False)
    _find(problems, "patient_id", 5, "patient id is empty")


def test_problem_text_names_row_column_and_fix():
    text = str(Problem("error", 4, "label", "label is empty", "fill it in"))
    assert text == "error: row 4, column 'label': label is empty; fix: fill it in"


def test_cli_exit_codes_and_summary(tmp_path, capsys):
    good = _manifest(tmp_path, GOOD, GOOD_IMAGES)
    assert main(["validate-manifest", str(good)]) == 0
    out = capsys.readouterr().out
    assert "task binary" in out and "no problems found" in out
    assert "train" in out and "pos" in out and "6 case(s), 6 patient(s)" in out
    rows = "\n".join(f"missing{i}.nii.gz,pos,p{i},train" for i in range(30))
    bad = tmp_path / "bad"
    bad.mkdir()
    path = _manifest(bad, "image,label,patient_id,split\n" + rows)
    assert main(["validate-manifest", str(path)]) == 2
    out = capsys.readouterr().out
    assert out.count("file not found") == 20 and "... and" in out


def test_cli_with_config(tmp_path, capsys):
    path = _manifest(tmp_path, GOOD, GOOD_IMAGES)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  classes: [neg, pos, other]\n  task: multiclass\n")
    assert main(["validate-manifest", str(path), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "class 'other' of data.classes has no case" in out and "no case in split" not in out


# --- untrusted paths and files (issue 19, items 2 and 4) ---


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _real_nifti(path, shape=(32, 32, 16)):
    """A NIfTI of noise (compresses poorly, so a cut lands inside the voxels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.random.default_rng(0).normal(0, 40, shape) + 100).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_paths_leaving_the_manifest_folder_are_warnings_and_errors_when_strict(tmp_path, capsys):
    data = tmp_path / "study"
    _nifti(tmp_path / "elsewhere" / "b.nii.gz")
    _nifti(tmp_path / "absolute" / "c.nii.gz")
    text = (f"image,label,patient_id,split\na.nii.gz,pos,p1,train\n../elsewhere/b.nii.gz,neg,p2,train\n"
            f"{tmp_path / 'absolute' / 'c.nii.gz'},pos,p3,val\nd.nii.gz,neg,p4,val\n")
    path = _manifest(data, text, ["a.nii.gz", "d.nii.gz"])
    assert main(["validate-manifest", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 error(s), 2 warning(s)" in out and "outside the manifest's folder" in out and "absolute path" in out
    assert main(["validate-manifest", str(path), "--strict"]) == 2
    assert "2 error(s), 0 warning(s)" in capsys.readouterr().out

    path.write_text(text + "../../../../etc/passwd,neg,p5,train\n")
    problems = validate_manifest(load_manifest(path), check_files=False)
    outside = _find(problems, "image", 3, "outside the manifest's folder")
    assert outside.severity == "warning" and "rows 3, 6" in outside.message
    assert _find(problems, "image", 4, "absolute path").severity == "warning"
    strict = validate_manifest(load_manifest(path), check_files=False, strict=True)
    assert [p.severity for p in strict] == ["error", "error"]


def test_files_that_are_not_images_are_never_read_as_images(tmp_path):
    (tmp_path / "notes.nii.gz").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "report.dcm").write_bytes(b"%PDF-1.4\n" + bytes(300))
    text = "image,label,patient_id\nnotes.nii.gz,pos,p1\npasswd,neg,p2\nreport.dcm,pos,p3\n"
    if Path("/etc/passwd").is_file():
        text += "/etc/passwd,neg,p4\n"
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)))
    for row in range(2, text.count("\n") + 1):
        assert _find(problems, "image", row, "not an image file").severity == "error"


def test_truncated_nifti_fails_validation_naming_its_row(tmp_path, capsys):
    _truncate(_real_nifti(tmp_path / "cut.nii.gz"))
    _truncate(_real_nifti(tmp_path / "cut.nii"))
    _real_nifti(tmp_path / "whole.nii.gz")
    text = "image,label,patient_id\nwhole.nii.gz,pos,p1\ncut.nii.gz,neg,p2\ncut.nii,pos,p3\n"
    path = _manifest(tmp_path, text)
    problems = validate_manifest(load_manifest(path))
    assert "truncated" in _find(problems, "image", 3, "cut.nii.gz").message
    assert "truncated" in _find(problems, "image", 4, "cut.nii").message
    assert not [p for p in problems if p.row == 2]
    assert main(["validate-manifest", str(path)]) == 2
    out = capsys.readouterr().out
    assert "row 3" in out and "row 4" in out


def test_dicom_folder_holding_only_a_report_is_an_error(tmp_path):
    from pipeline.demo.synthetic_dicom import SeriesSpec, write_series, write_sr

    write_sr(tmp_path / "sr_only" / "SR000001")
    write_series(tmp_path / "ct", SeriesSpec(rows=8, cols=8, n_slices=4))
    (tmp_path / "ct" / "README.txt").write_text("exported by PACS\n")
    text = "image,label,patient_id\nct,pos,p1\nsr_only,neg,p2\n"
    problems = validate_manifest(load_manifest(_manifest(tmp_path, text)))
    assert "structured report" in _find(problems, "image", 3, "no DICOM image").message
    assert not [p for p in problems if p.row == 2]


def test_deep_check_decodes_every_voxel(tmp_path, capsys):
    damaged = _real_nifti(tmp_path / "damaged.nii.gz", shape=(32, 32, 32))
    data = bytearray(damaged.read_bytes())
    middle = len(data) * 2 // 3
    data[middle:middle + 64] = bytes(64)  # the gzip trailer (size, CRC) stays: only a full decode sees it
    damaged.write_bytes(bytes(data))
    _real_nifti(tmp_path / "whole.nii.gz")
    text = "image,label,patient_id,split\nwhole.nii.gz,pos,p1,train\ndamaged.nii.gz,neg,p2,train\n"
    path = _manifest(tmp_path, text)
    assert main(["validate-manifest", str(path)]) == 0
    capsys.readouterr()
    assert main(["validate-manifest", str(path), "--deep"]) == 2
    out = capsys.readouterr().out
    assert "row 3" in out and "damaged.nii.gz" in out and "1 error(s)" in out


# --- CSV shapes (issue 19, item 8) ---


def test_semicolon_separated_manifest_is_named_and_read_with_sep(tmp_path, capsys):
    path = _manifest(tmp_path, GOOD.replace(",", ";"), GOOD_IMAGES)
    with pytest.raises(ManifestError, match=r"looks like ';'-separated.*--sep ';'"):
        load_manifest(path)
    assert main(["validate-manifest", str(path), "--sep", ";"]) == 0
    assert "no problems found" in capsys.readouterr().out
    out = tmp_path / "split.csv"
    assert main(["split", str(path), "--sep", ";", "--out", str(out), "--val", "0", "--test", "0.34"]) == 0
    assert load_manifest(out)["split"].tolist()  # written with commas


def test_duplicated_header_column_is_an_error(tmp_path):
    path = _manifest(tmp_path, "image,label,patient_id,label\na.nii.gz,pos,p1,neg\n")
    with pytest.raises(ManifestError, match=r"column 'label' appears twice in the header \(columns 2 and 4"):
        load_manifest(path)


def test_ragged_row_names_the_row_and_the_cell_counts(tmp_path):
    text = "image,label,patient_id,site\n" + "".join(f"i{i}.nii.gz,pos,p{i},x\n" for i in range(2, 14))
    text += "i14.nii.gz,pos,p14,site b, annex\n"
    with pytest.raises(ManifestError) as e:
        load_manifest(_manifest(tmp_path, text))
    assert "row 14 has 5 cells, the header has 4" in str(e.value) and "UTF-8" not in str(e.value)
    first_row_long = "image,label,patient_id\na.nii.gz,pos,p1,extra\nb.nii.gz,neg,p2,\n"
    with pytest.raises(ManifestError, match="row 2 has 4 cells, the header has 3"):
        load_manifest(_manifest(tmp_path, first_row_long))  # pandas would silently make 'image' the index


def test_without_a_config_the_class_order_is_said_to_come_from_the_config(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("image,label,patient_id\na.nii.gz,normal,p1\nb.nii.gz,lesion,p2\n")
    main(["validate-manifest", str(path), "--no-file-check"])
    out = capsys.readouterr().out
    assert "classes ['lesion', 'normal'] in sorted order, so the positive class would be 'normal'" in out
    assert "comes from the config" in out and "data.classes: [normal, lesion] makes 'lesion' the positive" in out
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  classes: [normal, lesion]\n  task: binary\n")
    main(["validate-manifest", str(path), "--no-file-check", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert "classes ['normal', 'lesion'], positive class 'lesion'" in out and "comes from the config" not in out
