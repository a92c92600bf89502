from __future__ import annotations

import json

import pytest
from predict_helpers import write_run

from pipeline.cli import main
from pipeline.demo.synthetic_export import write_new_scans
from pipeline.errors import ConfigError
from pipeline.infer.dicom_inputs import SeriesSelection, choose_series, load_selection


@pytest.fixture(autouse=True)
def _secret(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))


def _row(key, study, modality="CT", n_slices=30, description="axial"):
    return {"series_key": key, "study_key": study, "modality": modality, "n_slices": str(n_slices),
            "n_files": str(n_slices), "status": "ok", "problems": "", "series_description": description}


def test_selection_json_where_runs_no_code_and_predict_exits_2(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    scans = write_new_scans(tmp_path / "scans", n_series=1, n_slices=8)
    marker = tmp_path / "marker"
    payload = f"@pd.io.common.os.system('touch {marker}') == 0 or modality == \"CT\""
    (run / "selection.json").write_text(json.dumps({"where": payload, "select": "all"}))
    out = tmp_path / "preds.csv"
    code = main(["predict", "--run", str(run), str(scans.scan_dir), "--out", str(out), "--workers", "0"])
    assert code == 2 and not marker.exists() and not out.exists()
    err = capsys.readouterr().err
    assert f"filter {payload!r}: '@pd' (a pandas @-variable) is not allowed" in err and "selection.json" in err


def test_selection_where_is_the_filter_language(tmp_path):
    from pipeline.config import config_from_dict

    cfg = config_from_dict({"data": {"task": "binary", "classes": ["no", "yes"]},
                            "transforms": {"spatial_dims": 3, "size": [8, 8, 8], "intensity": "ct-abdomen"}})
    (tmp_path / "selection.json").write_text(json.dumps({"where": "len(modality) == 2", "select": "all"}))
    with pytest.raises(ConfigError, match=r"selection.json: filter 'len\(modality\) == 2': 'len\(modality\)' "
                                          r"\(call of len\(\); only contains\(\) and matches\(\) are allowed\)"):
        load_selection(tmp_path, cfg)
    (tmp_path / "selection.json").write_text(json.dumps({"where": "n_slice > 2", "select": "all"}))
    with pytest.raises(ConfigError, match="selection.json: filter 'n_slice > 2': unknown column 'n_slice' "
                                          "\\(did you mean 'n_slices'\\?\\); columns: patient_key"):
        load_selection(tmp_path, cfg)
    (tmp_path / "selection.json").write_text(json.dumps({"where": "modality == 'MR' and n_slices > 2"}))
    assert load_selection(tmp_path, cfg) == SeriesSelection("modality == 'MR' and n_slices > 2", "all",
                                                            "selection.json")
    rows = [_row("a1", "A", n_slices=40), _row("a2", "A", n_slices=12, description="bone"),
            _row("b1", "B", modality="MR"), _row("c1", "C", n_slices=25, description="Abdomen")]
    rule = "modality in ['CT'] and n_slices >= 20 and not contains(series_description, 'ABD')"
    chosen, skipped = choose_series(rows, SeriesSelection(rule, "all", "test"))
    assert [r["series_key"] for r in chosen] == ["a1"]
    assert {r["series_key"] for r in skipped} == {"a2", "b1", "c1"}
    with pytest.raises(ConfigError, match="unknown column 'n_slice' \\(did you mean 'n_slices'\\?\\)"):
        choose_series(rows, SeriesSelection("n_slice > 2", "all", "test"))
