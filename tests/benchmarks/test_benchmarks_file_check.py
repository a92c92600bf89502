"""benchmarks/file_check.py: both contenders check the same files, and the table is printed."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "file_check.py"


def test_file_check_times_both_contenders_on_the_manifest_files(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    rows = []
    for i, split in enumerate(["train"] * 30 + ["val"] * 6 + ["test"] * 4):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 1), np.uint8), np.eye(4)), str(tmp_path / "img" / f"c{i}.nii.gz"))
        rows.append({"image": f"img/c{i}.nii.gz", "label": "a", "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    spec = importlib.util.spec_from_file_location("bench_file_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert module.main(["--manifest", str(tmp_path / "manifest.csv"), "--repeats", "2"]) == 0
    finally:
        del sys.modules[spec.name]
    out = capsys.readouterr().out
    assert out.startswith("36 files of ")  # train + val only
    assert "adaptive (radpipe)" in out and "pool of 8 (before)" in out
