from __future__ import annotations

import csv

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import ImageReadError, ManifestError, RunError
from pipeline.infer.evaluate import evaluate
from predict_helpers import read_rows, volume, write_nifti
from predict_helpers import write_run as make_run


_read = read_rows


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    run = make_run(root / "run")
    rows = []
    for i in range(6):
        write_nifti(root / "data" / "imgs" / f"c{i}.nii.gz", volume(i))
        rows.append({"image": f"imgs/c{i}.nii.gz", "label": "yes" if i % 2 else "no", "patient_id": f"p{i}",
                     "split": "test" if i >= 2 else "train", "site": f"site-{i % 3}"})
    write_nifti(root / "data" / "imgs" / "sym.nii.gz", volume(7, symmetric=True))
    rows.append({"image": "imgs/sym.nii.gz", "label": "no", "patient_id": "p7", "split": "testing", "site": "site-0"})
    manifest = root / "data" / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, run, manifest


def test_evaluate_carries_manifest_columns_and_probabilities_sum_to_one(study):
    root, run, manifest = study
    out = root / "preds.csv"
    summary = evaluate(run, manifest, out, split="test", workers=0, batch_size=2)
    rows = _read(out)
    assert summary.n_cases == len(rows) == 5 and summary.split == "test"
    assert list(rows[0]) == ["image", "label", "patient_id", "split", "site", "pred", "threshold", "prob_no",
                            "prob_yes"]
    assert [r["image"] for r in rows] == ["imgs/c2.nii.gz", "imgs/c3.nii.gz", "imgs/c4.nii.gz", "imgs/c5.nii.gz",
                                          "imgs/sym.nii.gz"]
    assert [r["site"] for r in rows] == ["site-2", "site-0", "site-1", "site-2", "site-0"]
    probs = np.array([[float(r["prob_no"]), float(r["prob_yes"])] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=2e-6)
    assert [r["pred"] for r in rows] == [("yes" if p[1] >= 0.5 else "no") for p in probs]
    assert len({r["prob_yes"] for r in rows}) > 1


def test_tta_is_the_mean_over_flips_and_a_no_op_for_a_symmetric_volume(study):
    root, run, manifest = study
    data = volume(3)
    names = ["orig"] + [f"flip{axis}" for axis in range(3)]
    arrays = [data] + [np.flip(data, axis).copy() for axis in range(3)]
    with open(root / "data" / "flips.csv", "w", newline="") as f:
        f.write("image,label\n")
        for name, array in zip(names, arrays):
            write_nifti(root / "data" / "flips" / f"{name}.nii.gz", array)
            f.write(f"flips/{name}.nii.gz,no\n")
        f.write("imgs/sym.nii.gz,no\n")
    plain = _read(evaluate(run, root / "data" / "flips.csv", root / "plain.csv", tta=False, workers=0).out)
    tta = _read(evaluate(run, root / "data" / "flips.csv", root / "tta.csv", tta=True, workers=0).out)
    p_plain = np.array([float(r["prob_yes"]) for r in plain])
    p_tta = np.array([float(r["prob_yes"]) for r in tta])
    assert p_tta[0] == pytest.approx(p_plain[:4].mean(), abs=3e-6)
    assert np.ptp(p_plain[:4]) > 1e-5  # the flips do change the model's answer ...
    assert p_tta[4] == pytest.approx(p_plain[4], abs=3e-6)  # ... but not for a flip-symmetric volume


def test_missing_split_and_unreadable_cases_are_reported(study, tmp_path):
    root, run, manifest = study
    with pytest.raises(ManifestError, match="no row of split 'val'"):
        evaluate(run, manifest, tmp_path / "x.csv", split="val", workers=0)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,label\n{root}/data/imgs/c1.nii.gz,no\nmissing.nii.gz,yes\n")
    with pytest.raises(ImageReadError, match="1 of 2 case"):
        evaluate(run, bad, tmp_path / "x.csv", workers=0)
    assert not (tmp_path / "x.csv").exists()


def test_cli_evaluate_and_incomplete_run(study, tmp_path, capsys):
    root, run, manifest = study
    out = tmp_path / "cli.csv"
    assert main(["evaluate", "--run", str(run), "--manifest", str(manifest), "--out", str(out), "--workers", "0"]) == 0
    assert len(_read(out)) == 5
    broken = make_run(tmp_path / "broken")
    (broken / "checkpoints" / "best.pt").unlink()
    assert main(["evaluate", "--run", str(broken), "--manifest", str(manifest), "--out", str(out)]) == 2
    assert "best.pt is missing" in capsys.readouterr().err
    with pytest.raises(RunError):
        evaluate(broken, manifest, out)


def test_evaluate_a_run_written_by_train(tmp_path):
    from predict_helpers import make_run as train_run

    run = train_run(tmp_path / "trained", n_cases=6)
    manifest = tmp_path / "trained-data" / "manifest.csv"
    rows = _read(evaluate(run, manifest, tmp_path / "val.csv", split="val", workers=0).out)
    assert [r["image"] for r in rows] == ["t2.nii.gz", "t3.nii.gz", "t4.nii.gz", "t5.nii.gz"]
    assert list(rows[0]) == ["image", "label", "patient_id", "split", "pred", "threshold", "prob_no", "prob_yes"]
    np.testing.assert_allclose([float(r["prob_no"]) + float(r["prob_yes"]) for r in rows], 1.0, atol=2e-6)


def test_a_missing_image_file_is_named_with_its_row_not_a_reader_advice(study, tmp_path, capsys):
    root, run, manifest = study
    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,label\n{root}/data/imgs/c1.nii.gz,no\ngone/missing.nii.gz,yes\n")
    assert main(["evaluate", "--run", str(run), "--manifest", str(bad), "--out", str(tmp_path / "x.csv"),
                 "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "row 3: file not found:" in err and "missing.nii.gz" in err
    assert "object at 0x" not in err and "reader" not in err.lower() and "install" not in err


def _run_copy(run, dest, **sections):
    """A copy of ``run`` whose config sections are updated with ``sections`` (``eval={"tta": True}``, ...)."""
    import shutil

    import yaml

    shutil.copytree(run, dest)
    config = yaml.safe_load((dest / "config.yaml").read_text())
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return dest


def test_predict_averages_as_evaluate_does_with_the_runs_tta(study, tmp_path):
    from pipeline.infer.predict import predict

    root, run, _ = study
    tta_run = _run_copy(run, tmp_path / "run", eval={"tta": True, "tta_views": "dihedral"})
    flat = tmp_path / "cases.csv"
    flat.write_text("image\n" + "".join(f"{root / 'data' / 'imgs' / f'c{i}.nii.gz'}\n" for i in range(3)))
    evaluated = _read(evaluate(tta_run, flat, tmp_path / "ev.csv", workers=0).out)
    predicted = {r["image"]: r for r in _read(predict(tta_run, flat, tmp_path / "pr.csv", workers=0).out)}
    plain = {r["image"]: r for r in _read(predict(tta_run, flat, tmp_path / "plain.csv", workers=0, tta=False).out)}
    for row in evaluated:
        assert float(predicted[row["image"]]["prob_yes"]) == pytest.approx(float(row["prob_yes"]), abs=1e-6)
    assert any(abs(float(plain[r["image"]]["prob_yes"]) - float(r["prob_yes"])) > 1e-5 for r in evaluated)


def test_train_flips_tta_averages_over_the_runs_flip_axes_only(study, tmp_path):
    """A run trained with ``transforms.flip_axes: [1]`` averages each case with its flip along axis 1 alone."""
    root, run, _ = study
    tta_run = _run_copy(run, tmp_path / "run", transforms={"flip_axes": [1]},
                        eval={"tta": True, "tta_views": "train-flips"})
    data = volume(3)
    sheet = tmp_path / "flips.csv"
    with open(sheet, "w", newline="") as f:
        f.write("image,label\n")
        for name, array in (("orig", data), ("flip1", np.flip(data, 1).copy()), ("flip0", np.flip(data, 0).copy())):
            write_nifti(tmp_path / "flips" / f"{name}.nii.gz", array)
            f.write(f"flips/{name}.nii.gz,no\n")
    def probs(name, **options):
        return [float(r["prob_yes"]) for r in _read(evaluate(tta_run, sheet, tmp_path / name, workers=0, **options).out)]

    plain, tta = probs("p.csv", tta=False), probs("t.csv")
    assert tta[0] == pytest.approx((plain[0] + plain[1]) / 2, abs=3e-6)
    assert abs(tta[0] - (plain[0] + plain[2]) / 2) > 1e-6  # axis 0 is not one of the run's flips
