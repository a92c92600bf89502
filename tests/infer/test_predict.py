from __future__ import annotations

import json

import pydicom
import pytest

import pipeline.infer.predict as predict_module
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.infer.predict import predict
from pipeline.infer.prediction_file import done_marker, part_path
from pipeline.infer.dicom_inputs import SeriesSelection, choose_series, load_selection
from pipeline.pseudonym import Pseudonymiser
from pipeline.demo.synthetic_export import write_new_scans
from predict_helpers import read_rows, volume, write_nifti
from predict_helpers import write_run as make_run


@pytest.fixture(autouse=True)
def _secret(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path_factory.getbasetemp() / "secret.key"))


_read = read_rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def nifti_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nifti") / "in"
    for i in range(7):
        write_nifti(folder / ("sub" if i % 2 else "") / f"case{i}.nii.gz", volume(i))
    write_nifti(folder / "flat.nii.gz", volume(9, (20, 20)))
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file")
    cut = write_nifti(folder / "truncated.nii.gz", volume(11))  # header fine, data cut: fails in the chain
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def baseline(run, nifti_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "preds.csv"
    predict(run, nifti_dir, out, batch_size=3, workers=0)
    return out


def test_dicom_export_one_row_per_series_with_statuses(run, tmp_path):
    scans = write_new_scans(tmp_path / "scans", n_series=2, n_slices=12)
    out = tmp_path / "preds.csv"
    summary = predict(run, scans.scan_dir, out, batch_size=2, workers=2)
    rows = _read(out)
    keys = Pseudonymiser()
    by_uid = {keys.key(s["series_uid"], "series"): "ok" for s in scans.good_series}
    by_uid[keys.key(scans.gap_series_uid, "series")] = "error"
    assert {r["series_id"]: r["status"] for r in rows} == by_uid
    assert [r["series_id"] for r in rows] == sorted(by_uid)
    gap = next(r for r in rows if r["status"] == "error")
    assert "missing slice" in gap["error"] and gap["pred"] == "" and gap["prob_yes"] == ""
    for r in rows:
        if r["status"] == "ok":
            assert r["pred"] in ("no", "yes") and float(r["prob_no"]) + float(r["prob_yes"]) == pytest.approx(1, abs=2e-6)
            assert r["patient_key"].startswith("P-") and r["study_key"].startswith("ST-") and r["modality"] == "CT"
    skipped = {r["file"]: r["reason"] for r in _read(summary.skipped_file)}
    rel = lambda p: p.relative_to(scans.scan_dir).as_posix()  # noqa: E731
    assert set(skipped) == {rel(scans.corrupt_file), rel(scans.sr_file)}
    assert skipped[rel(scans.sr_file)].startswith("non-image object")
    assert summary.n_rows == 3 and summary.n_ok == 2 and summary.n_skipped == 2
    # every file is accounted for: in a predicted series or in the skipped list
    index = _read(tmp_path / "preds.scan" / "index.csv")
    assert sum(int(r["n_files"]) for r in index) + len(skipped) == scans.n_files
    # no identifier in clear in anything predict wrote
    phi = set()
    for path in scans.scan_dir.rglob("*"):
        if path.is_file() and path != scans.corrupt_file:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            phi |= {str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber}
    written = "".join(p.read_text(errors="ignore") for p in tmp_path.glob("preds*") if p.is_file())
    assert not [v for v in phi if v and v in written]


def test_nifti_folder_statuses_and_skipped_list(baseline):
    rows = {r["series_id"]: r for r in _read(baseline)}
    assert sorted(rows) == ["broken.nii.gz", "case0.nii.gz", "case2.nii.gz", "case4.nii.gz", "case6.nii.gz",
                            "flat.nii.gz", "sub/case1.nii.gz", "sub/case3.nii.gz", "sub/case5.nii.gz",
                            "truncated.nii.gz"]
    assert [k for k, r in rows.items() if r["status"] == "error"] == ["broken.nii.gz", "flat.nii.gz",
                                                                      "truncated.nii.gz"]
    assert rows["truncated.nii.gz"]["error"].startswith("in LoadImaged: ")
    assert "wrong dimensionality" in rows["flat.nii.gz"]["error"] and "2D" in rows["flat.nii.gz"]["error"]
    assert "NIfTI header" in rows["broken.nii.gz"]["error"] and str(baseline.parent) not in rows["broken.nii.gz"]["error"]
    assert _read(baseline.with_name("preds.skipped.csv")) == [
        {"file": "notes.txt", "series_key": "",
         "reason": "not a NIfTI image (.nii / .nii.gz) or picture (.png, .jpg, .jpeg, .tif, .tiff, .bmp)"}]
    marker = json.loads(done_marker(baseline).read_text())
    assert marker["rows"] == 10 and marker["status_counts"] == {"ok": 7, "error": 3}


def _same_predictions(a, b):
    ra, rb = _read(a), _read(b)
    assert [r["series_id"] for r in ra] == [r["series_id"] for r in rb]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if not k.startswith("prob_")} == \
               {k: v for k, v in y.items() if not k.startswith("prob_")}
        for k in x:
            if k.startswith("prob_") and x[k]:
                assert float(x[k]) == pytest.approx(float(y[k]), abs=2e-6)


def _killed_after_first_batch(run, nifti_dir, out, monkeypatch):
    """``predict`` into ``out``, killed once its first batch is written."""
    real = predict_module.iterate_predictions

    def dies_after_first_batch(loader, predictor):
        batches = real(loader, predictor)
        yield next(batches)
        raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(predict_module, "iterate_predictions", dies_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        predict(run, nifti_dir, out, batch_size=3, workers=0)
    monkeypatch.undo()


def test_killed_run_resumes_to_the_uninterrupted_result(run, nifti_dir, baseline, tmp_path, monkeypatch):
    out = tmp_path / "preds.csv"
    real = predict_module.iterate_predictions
    _killed_after_first_batch(run, nifti_dir, out, monkeypatch)
    written = _read(out)
    assert 1 <= len(written) < 10 and not done_marker(out).exists()
    with open(out, "a") as f:
        f.write("sub/case5.nii.gz,yes,0.49")  # killed in the middle of a line
    calls = []
    monkeypatch.setattr(predict_module, "iterate_predictions",
                        lambda loader, predictor: calls.append(len(loader.dataset)) or real(loader, predictor))
    summary = predict(run, nifti_dir, out, batch_size=3, workers=0)
    assert calls == [10 - len(written)]  # only what was missing ran again
    assert summary.n_resumed == len(written) and summary.n_rows == 10
    _same_predictions(out, baseline)


def test_shards_merge_to_the_unsharded_result(run, nifti_dir, baseline, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    sizes = []
    for i in range(3):
        summary = predict(run, nifti_dir, out, batch_size=2, workers=1, shard=(i, 3))
        assert summary.out == part_path(out, i, 3)
        sizes.append(summary.n_rows)
    assert sum(sizes) == 10 and max(sizes) < 10
    assert main(["predict-merge", "--out", str(out)]) == 0
    assert "10 series from 3 part(s)" in capsys.readouterr().out
    _same_predictions(out, baseline)
    assert out.with_name("preds.skipped.csv").read_text() == baseline.with_name("preds.skipped.csv").read_text()


def test_manifest_input_carries_columns(run, nifti_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,site,patient_id\n"
                        f"{nifti_dir}/case0.nii.gz,a,p0\n"
                        f"{nifti_dir}/sub/case1.nii.gz,b,p1\n"
                        "missing/nothere.nii.gz,c,p2\n")
    out = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), str(manifest), "--out", str(out), "--workers", "0"]) == 0
    rows = {r["site"]: r for r in _read(out)}
    assert list(_read(out)[0])[:4] == ["series_id", "image", "site", "patient_id"]
    assert rows["a"]["status"] == "ok" and rows["b"]["status"] == "ok" and rows["a"]["image"].endswith("case0.nii.gz")
    assert rows["c"]["status"] == "error" and "not found" in rows["c"]["error"]
    assert rows["c"]["series_id"] == "missing/nothere.nii.gz"


def test_cli_predict_refuses_a_broken_run_with_the_reason(run, nifti_dir, tmp_path, capsys):
    broken = make_run(tmp_path / "broken")
    (broken / "labels.json").write_text('{"task": "multiclass", "classes": ["a", "b"], "label_columns": ["label"]}')
    assert main(["predict", "--run", str(broken), str(nifti_dir), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "radpipe predict: error:" in err and "labels.json" in err
    assert main(["predict", "--run", str(run), str(nifti_dir), "--out", str(tmp_path / "p.csv"), "--shard", "3/3"]) == 2
    assert "0 <= i < n" in capsys.readouterr().err
    assert main(["predict-merge", "--out", str(tmp_path / "none.csv")]) == 2


def _index_row(key, study, modality="CT", n_slices=30, status="ok", problems="", description="axial"):
    return {"series_key": key, "study_key": study, "modality": modality, "n_slices": str(n_slices), "n_files":
            str(n_slices), "status": status, "problems": problems, "series_description": description}


def test_series_selection_rules(run, tmp_path):
    rows = [_index_row("a1", "A", n_slices=40), _index_row("a2", "A", n_slices=2, problems="localizer (scout)"),
            _index_row("a3", "A", n_slices=60, status="error", problems="duplicate slice positions"),
            _index_row("a4", "A", n_slices=20, description="bone"), _index_row("b1", "B", modality="MR"),
            _index_row("c1", "C", n_slices=50, status="error")]
    chosen, skipped = choose_series(rows, SeriesSelection("modality in ['CT']", "largest-series", "test"))
    assert [r["series_key"] for r in chosen] == ["a1", "c1"]  # an error series only when its study has nothing else
    reasons = {r["series_key"]: r["reason"] for r in skipped}
    assert "localizer" in reasons["a2"] and "does not match" in reasons["b1"] and "rule largest-series" in reasons["a3"]
    chosen, skipped = choose_series(rows, SeriesSelection("", "description:bone", "test"))
    assert [r["series_key"] for r in chosen] == ["a4"]
    reasons = {r["series_key"]: r["reason"] for r in skipped}
    assert "no series of its study matches" in reasons["b1"] and "is chosen by" in reasons["a1"]
    chosen, _ = choose_series(rows, SeriesSelection("", "all", "test"))
    assert [r["series_key"] for r in chosen] == ["a1", "a3", "a4", "b1", "c1"]
    from pipeline.train.run_dir import load_run

    cfg = load_run(run).cfg
    assert load_selection(run, cfg) == SeriesSelection("modality in ['CT']", "all",
                                                       "run config, transforms.intensity: ct-abdomen")
    (tmp_path / "selection.json").write_text('{"where": "modality == \'MR\'", "select": "first"}')
    assert load_selection(tmp_path, cfg).select == "first"
    assert load_selection(tmp_path, cfg, modality="any").where == ""
    with pytest.raises(ConfigError, match="unknown"):
        load_selection(tmp_path, cfg, rule="biggest")


def test_export_paths_are_scrubbed_from_error_messages(tmp_path):
    from pipeline.infer.dicom_inputs import export_scrubber

    scrub = export_scrubber(tmp_path / "export")
    text = (f"in LoadImaged: DicomReadError: {tmp_path}/export/DOE^JANE 1970/CT abdomen/IM0001: cannot read; "
            f"see {tmp_path}/export/x.dcm")
    assert scrub(text) == "in LoadImaged: DicomReadError: <export>/IM0001: cannot read; see <export>/x.dcm"


def test_the_same_job_spelled_another_way_resumes(run, nifti_dir, baseline, tmp_path, monkeypatch):
    out = tmp_path / "preds.csv"
    _killed_after_first_batch(run, nifti_dir, out, monkeypatch)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again_run = run.parent / "sub" / ".." / run.name
    (run.parent / "sub").mkdir(exist_ok=True)
    again_input = nifti_dir / "sub" / ".."
    summary = predict(again_run, again_input, "../preds.csv", batch_size=3, workers=0)
    assert summary.n_resumed >= 1 and summary.n_rows == 10
    _same_predictions(out, baseline)


def test_a_second_predict_into_the_same_file_stops_with_the_holder(run, nifti_dir, tmp_path, capsys):
    from pipeline.locks import output_lock

    out = tmp_path / "preds.csv"
    with output_lock(out, "predict"):
        assert main(["predict", "--run", str(run), str(nifti_dir), "--out", str(out), "--workers", "0"]) == 2
    assert "another predict is writing" in capsys.readouterr().err and not out.exists()


def test_a_nifti_bomb_is_one_error_row_naming_the_limit(run, tmp_path, monkeypatch):
    import gzip

    import nibabel as nib
    import numpy as np

    monkeypatch.setenv("RADPIPE_MAX_VOXELS", "100000")  # the good case has 4,000 voxels
    folder = tmp_path / "in"
    write_nifti(folder / "good.nii.gz", volume(0))
    header = nib.Nifti1Header()
    header.set_data_shape((200, 200, 100))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    # 8 MB of zeros in about 8 KB: a valid header and data, compressed about 1000:1
    (folder / "bomb.nii.gz").write_bytes(gzip.compress(header.binaryblock + bytes(4), 9)
                                         + gzip.compress(bytes(1 << 20), 9) * 8)
    out = tmp_path / "preds.csv"
    summary = predict(run, folder, out, batch_size=2, workers=0)
    rows = {r["series_id"]: r for r in _read(out)}
    assert rows["good.nii.gz"]["status"] == "ok" and rows["bomb.nii.gz"]["status"] == "error"
    error = rows["bomb.nii.gz"]["error"]
    assert "200x200x100 int16" in error and "100,000 voxels" in error and "RADPIPE_MAX_VOXELS" in error
    assert summary.n_ok == 1 and summary.n_rows == 2


def test_the_progress_counts_series_not_batches(run, nifti_dir, tmp_path, monkeypatch):
    import contextlib

    seen = {"advances": []}

    @contextlib.contextmanager
    def recording(total, desc="", every_s=10.0):
        seen["total"] = total
        yield seen["advances"].append

    monkeypatch.setattr(predict_module, "progress_of", recording)
    summary = predict(run, nifti_dir, tmp_path / "p.csv", batch_size=3, workers=0)
    assert seen["total"] == summary.n_rows == sum(seen["advances"]) and len(seen["advances"]) > 1
