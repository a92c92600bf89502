from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.errors import ManifestError
from pipeline.manifest.reading import load_manifest
from pipeline.manifest.validation import validate_manifest
from pipeline.manifest.split import assign_folds, assign_splits, greedy_group_assignment


def _cohort(n_patients=120, seed=0, probs=(0.6, 0.3, 0.1)):
    """Patients with 1-3 cases each, one label per patient: about 240 cases."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = str(rng.choice(["a", "b", "c"], p=list(probs)))
        for k in range(int(rng.integers(1, 4))):
            rows.append({"image": f"img/p{p}_{k}.nii.gz", "label": label, "patient_id": f"p{p}"})
    return pd.DataFrame(rows)


def _sides_per_patient(df, sides):
    return df.assign(side=sides).groupby("patient_id")["side"].nunique()


def test_patients_never_on_two_sides():
    df = _cohort()
    sides = assign_splits(df, "patient_id", ["label"], val=0.1, test=0.2, seed=0)
    assert (_sides_per_patient(df, sides) == 1).all()
    assert set(sides) == {"train", "val", "test"}


def test_class_ratios_and_sizes_follow_the_fractions():
    df = _cohort()
    assert len(df) >= 200
    sides = pd.Series(assign_splits(df, "patient_id", ["label"], val=0.15, test=0.25, seed=1))
    overall = df["label"].value_counts(normalize=True)
    for side, share in (("train", 0.6), ("val", 0.15), ("test", 0.25)):
        part = df[sides.values == side]
        assert abs(len(part) / len(df) - share) < 0.05
        ratios = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (ratios - overall).abs().max() < 0.1, (side, ratios.to_dict())


def test_same_seed_same_split_other_seed_other_split():
    df = _cohort()
    a = assign_splits(df, "patient_id", ["label"], seed=7)
    assert a == assign_splits(df, "patient_id", ["label"], seed=7)
    assert a != assign_splits(df, "patient_id", ["label"], seed=8)


def test_every_class_reaches_every_side_when_it_has_three_patients():
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(23)],
                       "label": ["rare"] * 3 + ["common"] * 20})
    sides = assign_splits(df, "patient_id", ["label"], seed=0)
    rare = {s for s, lab in zip(sides, df["label"]) if lab == "rare"}
    assert rare == {"train", "val", "test"}


def test_too_few_patients_of_a_class_is_an_error():
    df = pd.DataFrame({"patient_id": ["p1", "p1", "p2", "p3", "p4", "p5"],
                       "label": ["rare", "rare", "x", "x", "x", "x"]})
    with pytest.raises(ManifestError, match=r"class 'rare' has 1 patient\(s\), fewer than the 3 sides"):
        assign_splits(df, "patient_id", ["label"])
    with pytest.raises(ManifestError, match="fewer than the 3 folds"):
        assign_folds(df, "patient_id", ["label"], folds=3)
    sides = assign_splits(df, "patient_id", [], val=0.0, test=0.4)  # no stratification: fine
    assert (_sides_per_patient(df, sides) == 1).all()


def test_bad_inputs():
    df = _cohort(20)
    with pytest.raises(ManifestError, match="val \\+ test < 1"):
        assign_splits(df, "patient_id", ["label"], val=0.5, test=0.5)
    with pytest.raises(ManifestError, match="--group column 'patient' is not in the manifest.*patient_id"):
        assign_splits(df, "patient", ["label"])
    with pytest.raises(ManifestError, match="--stratify column 'lable'"):
        assign_splits(df, "patient_id", ["lable"])
    empty = df.assign(patient_id=[""] + list(df["patient_id"][1:]))
    with pytest.raises(ManifestError, match="row 2, column 'patient_id': patient id is empty"):
        assign_splits(empty, "patient_id", ["label"])


def test_k_folds_grouped_stratified_deterministic():
    df = _cohort()
    folds = assign_folds(df, "patient_id", ["label"], folds=5, seed=0)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert (_sides_per_patient(df, folds) == 1).all()
    overall = df["label"].value_counts(normalize=True)
    for k in range(5):
        part = df[np.array(folds) == k]
        ratios = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (ratios - overall).abs().max() < 0.1
    assert folds == assign_folds(df, "patient_id", ["label"], folds=5, seed=0)
    assert folds != assign_folds(df, "patient_id", ["label"], folds=5, seed=1)


def test_multilabel_stratification_uses_every_column():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(300)],
                       "effusion": rng.random(300) < 0.3, "nodule": rng.random(300) < 0.1}).astype(
        {"effusion": int, "nodule": int})
    sides = np.array(assign_splits(df, "patient_id", ["effusion", "nodule"], seed=0))
    for column in ("effusion", "nodule"):
        for side in ("train", "val", "test"):
            assert abs(df[column][sides == side].mean() - df[column].mean()) < 0.1


def test_greedy_assignment_respects_zero_fractions():
    targets = np.eye(2)[np.random.default_rng(0).integers(0, 2, 50)]
    side = greedy_group_assignment(targets, [0.8, 0.0, 0.2], seed=0)
    assert set(side) == {0, 2}


def test_regression_labels_are_binned():
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(200)], "label": [f"{v:.3f}" for v in
                                                                             np.linspace(0, 100, 200)]})
    sides = np.array(assign_splits(df, "patient_id", ["label"], seed=0))
    values = df["label"].astype(float)
    for side in ("train", "test"):
        assert abs(values[sides == side].mean() - values.mean()) < 8


def test_cli_writes_split_and_rebases_paths(tmp_path, capsys):
    src = tmp_path / "data"
    src.mkdir()
    _cohort(60).to_csv(src / "manifest.csv", index=False)
    out = tmp_path / "splits" / "split.csv"
    assert main(["split", str(src / "manifest.csv"), "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "val" in printed and "test" in printed
    written = pd.read_csv(out, dtype=str)
    assert written["image"][0] == "../data/img/p0_0.nii.gz"
    df = load_manifest(out)
    assert df["image"][0] == str(src / "img" / "p0_0.nii.gz")
    assert not [p for p in validate_manifest(df, check_files=False) if p.severity == "error"]
    again = tmp_path / "splits" / "again.csv"
    main(["split", str(src / "manifest.csv"), "--out", str(again), "--seed", "3"])
    assert again.read_text() == out.read_text()


def test_cli_folds_with_held_out_test(tmp_path, capsys):
    _cohort(60).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "folds.csv"
    assert main(["split", str(tmp_path / "m.csv"), "--out", str(out), "--folds", "3", "--test", "0.2"]) == 0
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    test = df["split"] == "test"
    assert (df.loc[test, "fold"] == "").all()
    assert set(df.loc[~test, "fold"]) == {"0", "1", "2"}
    assert not set(df.loc[test, "patient_id"]) & set(df.loc[~test, "patient_id"])
    problems = validate_manifest(load_manifest(out), check_files=False)
    assert not [p for p in problems if p.severity == "error"], [str(p) for p in problems]
    assert main(["split", str(tmp_path / "m.csv"), "--out", str(out), "--folds", "3", "--val", "0.1"]) == 2
