"""benchmarks/transfer.py: the label subsample, the per-run settings and the table (no training)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "transfer.py"


@pytest.fixture(scope="module")
def transfer():
    spec = importlib.util.spec_from_file_location("bench_transfer_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _manifest() -> pd.DataFrame:
    rows = []
    for i in range(100):  # 80 patients in train (2 cases each for the first 20), 30 % positive
        split = "train" if i < 80 else ("val" if i < 90 else "test")
        label = "pos" if i % 10 < 3 else "neg"
        for k in range(2 if i < 20 else 1):
            rows.append({"image": f"img_{i}_{k}.nii.gz", "label": label, "patient_id": f"p{i}", "split": split})
    return pd.DataFrame(rows)


def test_subsample_is_stratified_grouped_and_leaves_val_test(transfer):
    full = _manifest()
    sub = transfer.subsample(full, 0.25, seed=1)
    train = sub[sub["split"] == "train"]
    patients = train.groupby("patient_id")["label"].first()
    assert (patients == "pos").sum() == 6 and (patients == "neg").sum() == 14  # 25 % of 24 and of 56
    counts = full[full["split"] == "train"].groupby("patient_id").size()
    assert all(len(train[train["patient_id"] == p]) == counts[p] for p in patients.index)  # whole patients
    assert sub[sub["split"] != "train"].equals(full[full["split"] != "train"])
    assert transfer.subsample(full, 0.25, seed=1).equals(sub)
    assert not transfer.subsample(full, 0.25, seed=2).equals(sub)
    assert len(transfer.subsample(full, 1.0, seed=0)) == len(full)
    tiny = transfer.subsample(full, 0.001, seed=0)
    assert set(tiny[tiny["split"] == "train"]["label"]) == {"pos", "neg"}  # at least one patient per class


def test_cell_overrides_give_the_same_budget_to_every_arm(transfer, tmp_path):
    src = tmp_path / "src"
    sets = {arm: transfer.cell_overrides(transfer.Cell("t", 2, 0.1, 0, arm), 27, 100, 32, src)
            for arm in transfer.ARMS_2D}
    assert "train.epochs=100" in sets["scratch"] and "train.val_every=10" in sets["scratch"]
    assert all("train.epochs=100" in s and "train.seed=0" in s for s in sets.values())
    assert not any(s.startswith("model.pretrained") for s in sets["scratch"])
    assert f"model.pretrained=run:{src}" in sets["finetune"] and "transfer.strategy=finetune" in sets["finetune"]
    assert "transfer.strategy=linear-probe" in sets["linear-probe"]
    s3 = transfer.cell_overrides(transfer.Cell("t3", 3, 1.0, 2, "inflated-finetune"), 1188, 60, 16, src)
    assert "train.epochs=1" in s3 and "model.inflate=mean" in s3 and "model.small_input=false" in s3
    scratch3 = transfer.cell_overrides(transfer.Cell("t3", 3, 1.0, 2, "scratch"), 1188, 60, 16, src)
    model_2d = f"model.name={transfer.bench.protocol(2, 27)['model']}"
    assert model_2d in s3 and model_2d in scratch3 and model_2d in sets["finetune"]  # inflation needs the same layers
    assert "train.cpu_bf16=false" in s3 and "train.cpu_bf16=false" in scratch3
    assert "model.small_input=false" in sets["finetune"]
    assert all("model.members=1" in s for s in (*sets.values(), s3))  # single networks, whatever the recipe's rule


def test_union_source_joins_both_datasets_train_and_val_under_one_head(transfer, tmp_path, monkeypatch):
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = _manifest().assign(label=lambda d: d["label"].map({"pos": "sick", "neg": "well"}))
    source.to_csv(source_dir / "manifest.csv", index=False)
    target = transfer.subsample(_manifest(), 0.25, seed=1)
    calls = []
    monkeypatch.setattr(transfer.bench, "run_cli", lambda args, log, env: calls.append(args) or 1.0)
    run = transfer.union_source(target, tmp_path / "cell" / "union", source_dir, 2, 3, tmp_path / "log", {})
    assert run == tmp_path / "cell" / "union" / "run"
    union = pd.read_csv(tmp_path / "cell" / "union" / "manifest.csv")
    assert "test" not in set(union["split"])
    assert set(union["label"]) == {"source_sick", "source_well", "target_pos", "target_neg"}
    n_source = int(source["split"].isin(["train", "val"]).sum())
    n_target = int(target["split"].isin(["train", "val"]).sum())
    assert len(union) == n_source + n_target
    assert union["patient_id"].str.startswith(("source_", "target_")).all()
    assert str(source_dir.absolute()) in union["image"].iloc[0]
    args = calls[0]
    assert "data.classes=[source_sick,source_well,target_neg,target_pos]" in args and "data.task=multiclass" in args
    assert "train.seed=2" in args and "train.epochs=3" in args and "model.members=1" in args


def test_aggregate_means_spread_and_paired_difference(transfer):
    runs = [{"target": "b", "fraction": 0.1, "seed": s, "arm": arm, "n_train": 27, "steps": 100,
             "test_auc": auc, "test_acc": 0.5}
            for s, (a, b) in enumerate([(0.6, 0.7), (0.7, 0.7), (0.8, 0.95)])
            for arm, auc in (("scratch", a), ("finetune", b))]
    rows = {r["arm"]: r for r in transfer.aggregate(runs)}
    assert rows["scratch"]["auc_mean"] == pytest.approx(0.7) and rows["scratch"]["auc_std"] == pytest.approx(0.1)
    assert rows["finetune"]["diff_vs_scratch_mean"] == pytest.approx(0.25 / 3)
    assert rows["finetune"]["diff_vs_scratch_wins"] == "2/3"
    assert (rows["finetune"]["auc_min"], rows["finetune"]["auc_max"]) == (0.7, 0.95)
    assert "finetune" in transfer.format_table(list(rows.values()))
