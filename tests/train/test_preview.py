"""radpipe preview: a PNG montage of the eval and train chains' outputs."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.cli import main
from pipeline.config import config_from_dict
from pipeline.errors import ManifestError
from pipeline.train.preview import figure_size_px, write_preview


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    rows = ["image,label,patient_id,split"]
    for i in range(5):
        vol = rng.normal(-900.0, 30.0, (24, 24, 6)).astype(np.float32)
        vol[6:18, 8:16] = 60.0 + 20 * i
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "images" / f"case{i}.nii.gz"))
        rows.append(f"images/case{i}.nii.gz,{'pneumonia' if i % 2 else 'normal'},Doe^John{i},"
                    f"{'test' if i == 4 else 'train'}")
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("dims, extra", [(2, {"windows": ["ct-lung", "ct-bone"], "slice_mode": "slab"}),
                                         (3, {"intensity": "ct-abdomen"})])
def test_preview_png_has_expected_size_and_content(tmp_path, manifest, dims, extra):
    size = [16, 16] if dims == 2 else [16, 16, 6]
    cfg = config_from_dict({"transforms": {"spatial_dims": dims, "size": size, "augment": "heavy",
                                           "augment_prob": 1.0, **extra}})
    out = write_preview(cfg, manifest, tmp_path / "p" / "preview.png", n=3, split="train", seed=1)
    pixels = imread(out)
    assert pixels.shape[:2] == figure_size_px(3)[::-1] == (400, 480)
    assert pixels[..., :3].var() > 0.001


def test_titles_never_show_patient_identifiers(manifest):
    from pipeline.train.preview import _case_names
    from pipeline.manifest.reading import load_manifest

    cfg = config_from_dict({})
    names = _case_names(load_manifest(manifest, cfg.data), cfg)
    assert len(set(names)) == 5
    assert all(name.startswith("P-") and "Doe" not in name for name in names)


def test_cli_writes_preview_and_reports_empty_split(tmp_path, manifest, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("transforms:\n  spatial_dims: 2\n  size: [16, 16]\n  intensity: ct-lung\n")
    out = tmp_path / "preview.png"
    assert main(["preview", "--config", str(cfg), "--manifest", str(manifest), "--out", str(out), "--n", "16"]) == 0
    assert imread(out).shape[:2] == (400, 4 * 160)  # the 4 train cases
    code = main(["preview", "--config", str(cfg), "--manifest", str(manifest), "--out", str(out), "--split", "val"])
    assert code == 2
    assert "no rows in split 'val'" in capsys.readouterr().err
    with pytest.raises(ManifestError):
        write_preview(config_from_dict({}), manifest, out, split="val")


@pytest.mark.parametrize("orientation, white_on_top", [("", True), ("RAS", False)])
def test_pictures_are_drawn_upright_unless_reoriented(tmp_path, monkeypatch, orientation, white_on_top):
    """A picture (row 0 at the top) is drawn as a viewer shows it; a reoriented image has its y axis going up."""
    from PIL import Image

    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(tmp_path / "secret.key"))
    picture = np.zeros((32, 32), np.uint8)
    picture[:8] = 255  # a white band along the top
    Image.fromarray(picture).save(tmp_path / "p.png")
    (tmp_path / "m.csv").write_text("image,label,split\np.png,a,train\n")
    cfg = config_from_dict({"transforms": {"spatial_dims": 2, "size": [32, 32], "orientation": orientation,
                                           "intensity": "minmax", "augment": "none"}})
    grey = imread(write_preview(cfg, tmp_path / "m.csv", tmp_path / "out.png", n=1))[..., :3].mean(axis=2)
    tile = grey[40:200, :]  # the eval row: below the title, 160 px
    top, bottom = tile[5:40].mean(), tile[-40:-5].mean()
    assert (top > bottom + 0.5) if white_on_top else (bottom > top + 0.5)
