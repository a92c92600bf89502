from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.train.outputs import probabilities
from pipeline.infer.batching import (
    Case,
    CaseDataset,
    Predictor,
    collate_cases,
    describe_error,
    expected_input_shape,
    iterate_predictions,
    make_case_loader,
    prediction_columns,
    prediction_fields,
)


def _load(inputs):
    """A toy chain: 'good:<v>' gives a 1x4x4 image of value v, 'shape' a wrong shape, anything else fails."""
    path = inputs["image"]
    if path.startswith("good:"):
        return {"image": torch.full((1, 4, 4), float(path[5:]))}
    if path == "shape":
        return {"image": torch.zeros((1, 4, 4, 4))}
    if path == "nan":
        return {"image": torch.full((1, 4, 4), float("nan"))}
    try:
        raise FileNotFoundError(f"no such file {path}")
    except FileNotFoundError as e:
        raise RuntimeError("applying transform <monai.transforms.io.dictionary.LoadImaged object at 0x7f>") from e


def _cases():
    return [Case("a", {"image": "good:1"}), Case("b", {"image": "/export/DOE^JOHN/x.dcm"}), Case("c", {"image": "shape"}),
            Case("d", {"image": "good:2"}), Case("e", error="scan: series has missing slices"),
            Case("f", {"image": "nan"})]


def test_dataset_returns_error_records_instead_of_raising():
    ds = CaseDataset(_cases(), _load, expected_shape=(1, 4, 4), scrub=lambda t: t.replace("/export/DOE^JOHN", "<input>"))
    batch = collate_cases([ds[i] for i in range(len(ds))])
    assert batch.ids == ["a", "d"] and batch.images.shape == (2, 1, 4, 4)
    errors = dict(batch.errors)
    assert errors["b"] == "in LoadImaged: FileNotFoundError: no such file <input>/x.dcm"
    assert "wrong dimensionality" in errors["c"] and "3 spatial dims" in errors["c"]
    assert errors["e"] == "scan: series has missing slices"
    assert "NaN" in errors["f"]


def test_loader_with_workers_keeps_order_and_errors():
    ds = CaseDataset(_cases(), _load, expected_shape=(1, 4, 4))
    loader = make_case_loader(ds, batch_size=4, workers=2)
    predictor = Predictor(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), "multiclass")
    seen, errors = [], []
    for batch, probs in iterate_predictions(loader, predictor):
        seen += batch.ids
        errors += [i for i, _ in batch.errors]
        assert probs.shape == (len(batch.ids), 3) if batch.ids else probs.size == 0
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert seen == ["a", "d"] and errors == ["b", "c", "e", "f"]


def test_tta_is_exact_for_a_flip_invariant_input_and_changes_an_asymmetric_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    symmetric = torch.rand(1, 1, 8, 8)
    symmetric = symmetric + symmetric.flip(2)
    symmetric = symmetric + symmetric.flip(3)
    plain, tta = Predictor(model, "binary"), Predictor(model, "binary", tta=True)
    np.testing.assert_allclose(tta(symmetric), plain(symmetric), atol=1e-6)
    ramp = torch.arange(64.0).view(1, 1, 8, 8) / 64
    manual = np.mean([plain(ramp), plain(ramp.flip(2)), plain(ramp.flip(3))], axis=0)
    np.testing.assert_allclose(tta(ramp), manual, atol=1e-6)
    assert np.abs(tta(ramp) - plain(ramp)).max() > 1e-4


def test_probabilities_per_task():
    logits = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(probabilities(logits, "binary").sum(1).numpy(), [1, 1], atol=1e-6)
    single = probabilities(torch.tensor([[0.0], [100.0]]), "binary")
    np.testing.assert_allclose(single.numpy(), [[0.5, 0.5], [0, 1]], atol=1e-6)
    np.testing.assert_allclose(probabilities(logits, "multilabel").numpy(), torch.sigmoid(logits).numpy())
    assert torch.equal(probabilities(logits, "regression"), logits)


def test_prediction_fields():
    assert prediction_fields("binary", ["neg", "pos"], np.array([0.4, 0.6])) == {
        "prob_neg": "0.400000", "prob_pos": "0.600000", "pred": "pos", "threshold": "argmax"}
    assert prediction_fields("multiclass", ["a", "b", "c"], np.array([0.2, 0.1, 0.7]))["pred"] == "c"
    assert prediction_fields("multilabel", ["x", "y"], np.array([0.9, 0.6]))["pred"] == "x;y"
    assert prediction_fields("regression", [], np.array([12.345678])) == {"pred": "12.3457"}


def test_binary_pred_applies_the_operating_point_to_the_written_probability():
    low = np.array([0.8610004, 0.1389996])  # written as 0.139000: called positive at 0.139, as a reader would
    assert prediction_fields("binary", ["no", "yes"], low, threshold=0.139)["pred"] == "yes"
    assert prediction_fields("binary", ["no", "yes"], low, threshold=0.139)["threshold"] == "0.139"
    assert prediction_fields("binary", ["no", "yes"], np.array([0.87, 0.13]), threshold=0.139)["pred"] == "no"
    assert prediction_fields("binary", ["no", "yes"], np.array([0.6, 0.4]))["pred"] == "no"  # argmax
    assert prediction_columns("binary", ["no", "yes"]) == ["pred", "threshold", "prob_no", "prob_yes"]
    assert prediction_columns("multiclass", ["a", "b", "c"]) == ["pred", "prob_a", "prob_b", "prob_c"]


def test_expected_input_shape_and_describe_error():
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.ReLU())
    assert expected_input_shape(model, (8, 8, 4)) == (2, 8, 8, 4)
    assert expected_input_shape(nn.Linear(2, 2), (8, 8)) is None
    try:
        raise ValueError("line one\nline two")
    except ValueError as e:
        assert describe_error(e) == "ValueError: line one line two"


def _distinct(views):
    return {tuple(v.flatten().tolist()) for v in views}


def test_dihedral_views_are_the_eight_turns_and_flips_of_a_square_plane():
    from pipeline.infer.batching import tta_views

    square = torch.arange(9.0).view(1, 1, 3, 3)
    views = list(tta_views(square, "dihedral"))
    assert len(views) == 8 and len(_distinct(views)) == 8 and torch.equal(views[0], square)
    expected = {torch.rot90(square, k, (2, 3)) for k in range(4)} | {torch.rot90(square.flip(3), k, (2, 3))
                                                                      for k in range(4)}
    assert _distinct(views) == _distinct(expected)
    wide = torch.arange(6.0).view(1, 1, 2, 3)  # no quarter turn: training never turns a non-square plane
    assert _distinct(tta_views(wide, "dihedral")) == _distinct([wide, wide.flip(2), wide.flip(3), wide.flip(2, 3)])
    volume = torch.arange(27.0).view(1, 1, 3, 3, 3)
    views3 = list(tta_views(volume, "dihedral"))
    assert len(views3) == 16 and len(_distinct(views3)) == 16
    assert len(list(tta_views(volume, "flips"))) == 4


def test_dihedral_tta_is_the_mean_over_its_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    plain, tta = Predictor(model, "binary"), Predictor(model, "binary", tta="dihedral")
    ramp = torch.arange(64.0).view(1, 1, 8, 8) / 64
    views = [torch.rot90(r, k, (2, 3)) for r in (ramp, ramp.flip(3)) for k in range(4)]
    np.testing.assert_allclose(tta(ramp), np.mean([plain(v) for v in views], axis=0), atol=1e-6)


def test_train_flips_views_are_the_flips_training_makes():
    from pipeline.infer.batching import tta_views

    image = torch.arange(12.0).view(1, 1, 3, 4)
    views = list(tta_views(image, "train-flips", (1,)))
    assert len(views) == 2 and torch.equal(views[0], image) and torch.equal(views[1], image.flip(3))
    assert _distinct(tta_views(image, "train-flips", (0, 1))) == _distinct(tta_views(image, "flips"))
    assert len(list(tta_views(image, "train-flips", ()))) == 1
    volume = torch.arange(27.0).view(1, 1, 3, 3, 3)
    assert [v.tolist() for v in tta_views(volume, "train-flips", (2,))][1] == volume.flip(4).tolist()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 1 * 2, 2))
    plain, tta = Predictor(model, "binary"), Predictor(model, "binary", tta="train-flips", flip_axes=(1,))
    np.testing.assert_allclose(tta(image), (plain(image) + plain(image.flip(3))) / 2, atol=1e-6)
