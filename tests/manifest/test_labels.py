from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import DataConfig
from pipeline.errors import ManifestError
from pipeline.manifest.labels import LabelMap, normalise_label, numeric_aware_key


def _df(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"row": range(2, n + 2), **columns})


def test_numeric_labels_sort_numerically():
    df = _df(label=["10", "2", "1", "0", "2"])
    lm = LabelMap.from_manifest(df, DataConfig(task="multiclass"))
    assert lm.classes == ("0", "1", "2", "10")
    assert [lm.encode(r) for r in df.to_dict("records")] == [3, 2, 1, 0, 2]


def test_numbers_and_text_mixed_and_float_spelling():
    assert sorted(["b", "10", "a", "9"], key=numeric_aware_key) == ["9", "10", "a", "b"]
    assert normalise_label("1.0") == "1" and normalise_label(" 2 ") == "2" and normalise_label("0.5") == "0.5"
    lm = LabelMap("binary", ("0", "1"), ("label",))
    assert lm.encode({"label": "1.0"}) == 1 and lm.encode({"label": 0}) == 0


def test_config_classes_fix_the_order():
    df = _df(label=["benign", "malignant", "benign"])
    lm = LabelMap.from_manifest(df, DataConfig(classes=("malignant", "benign")))
    assert lm.encode({"label": "benign"}) == 1
    assert lm.decode(0) == "malignant"


def test_unknown_label_names_row_and_column():
    lm = LabelMap("binary", ("a", "b"), ("label",))
    with pytest.raises(ManifestError, match=r"row 7, column 'label': label 'c' is not one of"):
        lm.encode({"label": "c", "row": 7})


def test_binary_needs_two_classes():
    with pytest.raises(ManifestError, match="exactly 2 classes, found 3"):
        LabelMap.from_manifest(_df(label=["a", "b", "c"]), DataConfig(task="binary"))


def test_multilabel_and_regression_encoding():
    df = _df(effusion=["1", "0"], nodule=["0", "1.0"])
    lm = LabelMap.from_manifest(df, DataConfig(task="multilabel", label_columns=("effusion", "nodule")))
    assert lm.classes == ("effusion", "nodule") and lm.num_outputs == 2
    assert [lm.encode(r) for r in df.to_dict("records")] == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ManifestError, match="column 'nodule': expected 0 or 1"):
        lm.encode({"effusion": "1", "nodule": "maybe", "row": 3})
    reg = LabelMap.from_manifest(_df(label=["1.5", "3"]), DataConfig(task="regression"))
    assert reg.encode({"label": "1.5"}) == 1.5 and reg.num_outputs == 1
    with pytest.raises(ManifestError, match="expected a number"):
        reg.encode({"label": "n/a", "row": 4})
    with pytest.raises(ManifestError, match="no classes"):
        reg.decode(0)


def test_json_round_trip(tmp_path):
    lm = LabelMap("multiclass", ("0", "1", "10"), ("label",))
    assert LabelMap.from_json(lm.to_json()) == lm
    lm.save(tmp_path / "labels.json")
    assert LabelMap.load(tmp_path / "labels.json") == lm
    import json

    assert json.loads((tmp_path / "labels.json").read_text()) == {
        "task": "multiclass", "classes": ["0", "1", "10"], "label_columns": ["label"]
    }
    with pytest.raises(ManifestError, match="expected an object"):
        LabelMap.from_json('{"task": "binary"}')


def test_decode_out_of_range():
    lm = LabelMap("binary", ("a", "b"), ("label",))
    assert lm.decode(1) == "b"
    with pytest.raises(ManifestError, match="outside 0..1"):
        lm.decode(2)
