from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import RunError
from pipeline.infer.cam import (
    CamMaker,
    cam_class_index,
    cam_layer_of,
    cam_peak,
    cam_stem,
    choose_cam_layer,
    most_salient_slice,
    save_cam,
)


class BlobNet(nn.Module):
    """Conv (box filter) -> ReLU -> global average -> linear: the score grows with bright voxels."""

    cam_layer = "features"

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.fill_(1.0 / 27)
        self.features = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cam_finds_the_blob_and_saves_aligned_nifti_and_png(tmp_path, spatial_dims):
    shape = (24, 20, 12)[:spatial_dims]
    image = torch.zeros((1, *shape))
    blob = (slice(3, 7), slice(12, 16), slice(8, 10))[:spatial_dims]
    image[(0, *blob)] = 5.0
    affine = torch.tensor([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1.0]],
                          dtype=torch.float64)
    cam = CamMaker(BlobNet(spatial_dims))(image, class_index=1)
    assert cam.shape == shape
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    assert all(s.start - 1 <= p <= s.stop for p, s in zip(peak, blob))
    if spatial_dims == 3:
        assert most_salient_slice(cam) in (7, 8, 9, 10)

    nifti, png = save_cam(tmp_path / "cam", "P-1/series 2", image, cam, affine, title="lesion 0.91")
    loaded = nib.load(nifti)
    assert loaded.shape == shape
    np.testing.assert_allclose(loaded.affine, affine.numpy())
    np.testing.assert_allclose(loaded.get_fdata(), cam, atol=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert nifti.name.startswith(cam_stem("P-1/series 2")) and "/" not in cam_stem("P-1/series 2")


def test_cam_layer_must_exist():
    net = BlobNet(2)
    net.cam_layer = "layer9"
    with pytest.raises(RunError, match=r"'layer9' is not one of the model's layers.*features\.0"):
        cam_layer_of(net)
    with pytest.raises(RunError, match="model.cam_layer"):
        CamMaker(BlobNet(2), layer="nope")


def test_cam_class_index():
    assert cam_class_index("binary", [0.9, 0.1]) == 1
    assert cam_class_index("multiclass", [0.1, 0.7, 0.2]) == 1
    assert cam_class_index("regression", [3.2]) == 0


def test_cam_leaves_inference_model_untouched():
    net = BlobNet(2)
    CamMaker(net)
    assert not net.features._forward_hooks and not net.features._backward_hooks


def test_predict_cam_is_on_the_preprocessed_grid(tmp_path):
    from predict_helpers import volume, write_nifti, write_run

    from pipeline.infer.predict import predict
    from pipeline.train.run_dir import load_run

    run = write_run(tmp_path / "run")
    source = write_nifti(tmp_path / "in" / "a.nii.gz", volume(1, (24, 20, 12)), spacing=(0.9, 1.1, 2.5))
    write_nifti(tmp_path / "in" / "flat.nii.gz", volume(2, (24, 20)))
    summary = predict(run, tmp_path / "in", tmp_path / "p.csv", workers=0, cam_dir=tmp_path / "cam")
    assert summary.n_ok == 1 and summary.n_error == 1
    expected = load_run(run).infer_transform({"image": str(source)})["image"]
    cam = nib.load(tmp_path / "cam" / "a.nii.gz.cam.nii.gz")
    assert cam.shape == tuple(expected.shape[1:]) == (16, 16, 8)
    np.testing.assert_allclose(cam.affine, expected.affine.numpy(), atol=1e-5)
    assert 0.0 <= cam.get_fdata().min() and cam.get_fdata().max() <= 1.0
    assert (tmp_path / "cam" / "a.nii.gz.cam.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["a.nii.gz.cam.nii.gz", "a.nii.gz.cam.png"]


class CoarseNet(nn.Module):
    """BlobNet's features, then a stage that pools to 1x1x1 (``cam_layer``, like a ResNet's last stage on 32 px)."""

    cam_layer = "coarse"

    def __init__(self) -> None:
        super().__init__()
        self.features = BlobNet(3).features
        self.coarse = nn.Sequential(nn.AvgPool3d(8), nn.AdaptiveAvgPool3d(1))
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.coarse(self.features(x)).flatten(1))


def test_cam_layer_chosen_by_feature_map_size_points_at_the_blob(tmp_path):
    image = torch.zeros((1, 32, 32, 24))
    image[0, 20:25, 6:11, 15:18] = 5.0
    net = CoarseNet()
    assert choose_cam_layer(net, image.shape) == "features"  # 32x32x24; "coarse" is 1x1x1
    coarse = CamMaker(net, layer="coarse")(image, 1)
    assert np.ptp(coarse) == 0.0  # what the model's own cam_layer gives: a map that points nowhere
    maker = CamMaker(net)
    cam = maker(image, 1)
    assert maker.layer == "features" and cam.shape == (32, 32, 24)
    peak = cam_peak(cam)
    assert 19 <= peak[0] <= 25 and 5 <= peak[1] <= 11 and 14 <= peak[2] <= 18
    assert most_salient_slice(cam) == peak[2]
    _, png = save_cam(tmp_path, "SE-1", image, cam, None, title="SE-1: lesion 0.97", layer=maker.layer)
    import matplotlib.image as mpimg

    height, width = mpimg.imread(png).shape[:2]
    assert width > 2.2 * height  # image | map | prediction side by side


def test_resnet10_on_demo_sized_input_uses_a_layer_of_at_least_8_voxels_per_axis():
    from models.factory import create_model

    net = create_model("resnet10", 3, 1, 2).eval()
    assert net.cam_layer == "net.layer4"  # 1x1x1 on a 32x32x24 input
    assert choose_cam_layer(net, (1, 32, 32, 24)) == "net.act"  # the stem, 16x16x12; layer1 is 8x8x6
    assert choose_cam_layer(net, (1, 128, 128, 128)) == "net.layer3"  # 8x8x8, deeper
    assert choose_cam_layer(net, (1, 64, 64, 4)) == "net.act"  # none keeps 4 slices: the most that keeps 2



def test_cam_layer_is_a_model_config_key(tmp_path):
    from pipeline.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: resnet10\n  cam_layer: net.layer2\n")
    assert load_config(path).model.cam_layer == "net.layer2"


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_ensemble_cam_adds_up_its_members(method):
    """A member whose head outputs nothing adds nothing: the ensemble's map is the other member's map."""
    from models.factory import create_model

    torch.manual_seed(0)
    model = create_model("resnet10", 2, 1, 2, small_input=True, widen_factor=0.25, members=2).eval()
    with torch.no_grad():
        model.members[1].classifier.fc.weight.zero_()
    image = torch.zeros(1, 24, 24)
    image[0, 4:9, 14:19] = 3.0
    together = CamMaker(model, layer="net.layer2", method=method)
    alone = CamMaker(model.members[0], layer="net.layer2", method=method)
    assert together._layers() == ["members.0.net.layer2", "members.1.net.layer2"]
    ensemble_map, member_map = together(image, 1), alone(image, 1)
    assert member_map.max() == pytest.approx(1.0)
    # hirescam: the members' G * A terms add up before the ReLU; gradcam: the members' maps are averaged and
    # rescaled to [0, 1]; either way member 1 (no gradient) adds nothing
    np.testing.assert_allclose(ensemble_map, member_map, atol=1e-5)
