"""Pictures (PNG, JPEG, TIFF, BMP) through the readers and the chain: values, orientation, modes, limits, channels."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage
from PIL import Image

from pipeline.config import config_from_dict
from pipeline.errors import ImageReadError
from transforms.chains import eval_chain
from transforms.channels import LUMA, resolve_channels, to_channels
from transforms.image_files import PictureReader, load_picture, picture_header
from transforms.limits import ImageTooLargeError
from transforms.readers import RadpipeReader, load_volume


def _ramp(rows=20, cols=30, scale=1, dtype=np.uint8):
    """A picture whose every pixel differs: value = (row * cols + col) * scale."""
    return ((np.arange(rows * cols).reshape(rows, cols) * scale) % (np.iinfo(dtype).max + 1)).astype(dtype)


def _load(path, reader=None):
    return LoadImage(reader=reader or RadpipeReader(), image_only=True, ensure_channel_first=True)(str(path))


@pytest.mark.parametrize("name, scale, dtype", [("g8.png", 1, np.uint8), ("g16.png", 97, np.uint16),
                                                ("g16.tif", 97, np.uint16), ("g8.bmp", 1, np.uint8)])
def test_grey_pictures_keep_values_and_orientation(tmp_path, name, scale, dtype):
    pixels = _ramp(scale=scale, dtype=dtype)
    Image.fromarray(pixels).save(tmp_path / name)
    array, affine, meta = load_picture(tmp_path / name)
    assert array.dtype == dtype and array.shape == (30, 20)  # (x = columns, y = rows)
    np.testing.assert_array_equal(array, pixels.T)
    assert array.max() == pixels.max() and (dtype is np.uint8 or pixels.max() > 255)  # 16 bits kept, not rescaled
    np.testing.assert_array_equal(affine, np.eye(4))
    assert meta["spatial_shape"].tolist() == [30, 20] and np.isnan(meta["original_channel_dim"])
    for reader in (RadpipeReader(), PictureReader()):
        loaded = _load(tmp_path / name, reader)
        assert tuple(loaded.shape) == (1, 30, 20)
        assert float(loaded[0, 7, 5]) == float(pixels[5, 7])  # column 7 of row 5: getpixel((7, 5))


def test_jpeg_decodes_like_pillow_with_the_picture_upright(tmp_path):
    pixels = np.full((20, 30), 10, np.uint8)
    pixels[:6, :8] = 240  # bright top-left corner
    Image.fromarray(pixels).save(tmp_path / "x.jpg", quality=95)
    array, _, _ = load_picture(tmp_path / "x.jpg")
    with Image.open(tmp_path / "x.jpg") as img:
        np.testing.assert_array_equal(array, np.asarray(img).T)
    assert array[2, 2] > 200 and array[25, 15] < 40


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.full((20, 30), 10, np.uint8)
    pixels[:6, :8] = 240  # stored top-left; orientation 6 shows the picture turned 90 degrees clockwise
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    array, _, _ = load_picture(tmp_path / "phone.jpg")
    assert array.shape == (20, 30)  # displayed 20 wide, 30 tall
    assert array[17, 2] > 200 and array[2, 2] < 40  # the corner is now top-right


def test_colour_palette_and_alpha(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[5, 7] = 200, (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    rgba = Image.fromarray(rgb).convert("RGBA")
    rgba.putalpha(40)
    rgba.save(tmp_path / "ca.png")
    for name in ("c.png", "ca.png"):
        array, _, meta = load_picture(tmp_path / name)
        assert array.shape == (30, 20, 3) and meta["original_channel_dim"] == -1
        assert array[7, 5].tolist() == [1, 2, 3] and array[0, 0].tolist() == [200, 0, 0]  # alpha dropped
        assert tuple(_load(tmp_path / name).shape) == (3, 30, 20)
    palette = Image.new("P", (30, 20))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    palette.putdata([1] * 300 + [2] * 300)
    palette.save(tmp_path / "p.png")
    array, _, _ = load_picture(tmp_path / "p.png")
    assert array[0, 0].tolist() == [255, 0, 0] and array[0, 19].tolist() == [0, 0, 255]  # colours, not indices
    grey = Image.new("P", (4, 3))
    grey.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    grey.putdata([0, 1, 2, 3] * 3)
    grey.save(tmp_path / "gp.png")
    array, _, _ = load_picture(tmp_path / "gp.png")
    assert array.shape == (4, 3) and array[:, 0].tolist() == [255, 254, 253, 252]


def test_colour_read_channel_first_equals_channel_last(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=90)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "g.png")
    for name in ("c.png", "c.jpg"):
        last, _, meta_last = load_picture(tmp_path / name)
        first, _, meta = load_picture(tmp_path / name, channel_first=True)
        assert first.shape == (3, 30, 20) and first.flags.c_contiguous and meta["original_channel_dim"] == 0
        np.testing.assert_array_equal(first, np.moveaxis(last, -1, 0))
        assert meta["spatial_shape"].tolist() == [30, 20] and meta["dim"].tolist() == meta_last["dim"].tolist()
        for reader in (RadpipeReader(), PictureReader()):
            np.testing.assert_array_equal(_load(tmp_path / name, reader).numpy(), np.moveaxis(last, -1, 0))
    np.testing.assert_array_equal(load_picture(tmp_path / "c.png", channel_first=True)[0][:, 7, 5], rgb[5, 7])
    grey, _, meta = load_picture(tmp_path / "g.png", channel_first=True)  # grey pictures stay (x, y)
    assert grey.shape == (30, 20) and np.isnan(meta["original_channel_dim"])
    pair = [str(tmp_path / "c.png")] * 2  # a list of pictures is stacked channel-last, as before
    stacked = LoadImage(reader=PictureReader(), image_only=True, ensure_channel_first=True)(pair)
    assert tuple(stacked.shape) == (2, 30, 20, 3)


def test_mixed_sizes_and_modes_batch_under_one_channel_rule(tmp_path):
    Image.fromarray(_ramp(20, 30)).save(tmp_path / "a.png")
    red = np.zeros((40, 10, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "b.jpg", quality=100)
    Image.fromarray(_ramp(12, 12, 300, np.uint16)).save(tmp_path / "c.tif")
    for rule, channels in (("rgb", 3), ("grey", 1)):
        cfg = config_from_dict({"transforms": {"spatial_dims": 2, "size": [16, 16], "orientation": "RAS",
                                               "channels": rule, "augment": "none"}})
        chain = eval_chain(cfg.transforms)
        out = [chain({"image": str(tmp_path / n), "label": 0})["image"] for n in ("a.png", "b.jpg", "c.tif")]
        assert all(tuple(o.shape) == (channels, 16, 16) for o in out)
        if rule == "grey":
            assert float(out[1].mean()) == pytest.approx(LUMA[0] * 255, abs=3)
        else:
            torch.testing.assert_close(out[0][1], out[0][0])  # grey repeated in R, G, B


def test_rgb_medmnist_layout_is_a_2d_colour_image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    nib.save(nib.Nifti1Image(rgb[:, :, None, :], np.eye(4)), str(tmp_path / "x.nii.gz"))
    for rule, channels in (("auto", 3), ("rgb", 3), ("grey", 1)):
        cfg = config_from_dict({"transforms": {"spatial_dims": 2, "size": [28, 28], "orientation": "",
                                               "channels": rule, "augment": "none"}})
        image = eval_chain(cfg.transforms)({"image": str(tmp_path / "x.nii.gz"), "label": 1})["image"]
        assert tuple(image.shape) == (channels, 28, 28)
        if channels == 3:
            np.testing.assert_array_equal(image.numpy().transpose(1, 2, 0), rgb)


def test_channel_rule_conversions_and_refusal():
    rgba = torch.tensor([10.0, 20.0, 30.0, 255.0]).reshape(4, 1, 1)
    assert to_channels(rgba, "rgb").flatten().tolist() == [10.0, 20.0, 30.0]
    assert to_channels(rgba, "grey").item() == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 30)
    assert to_channels(torch.ones(2, 3, 3), "rgb").shape == (3, 3, 3)  # grey + alpha -> grey repeated
    with pytest.raises(ImageReadError, match="x.tif: has 5 channels"):
        to_channels(torch.ones(5, 2, 2), "grey", "x.tif")


def test_auto_resolves_from_the_headers(tmp_path):
    Image.fromarray(_ramp()).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "c.jpg")
    assert resolve_channels("auto", [tmp_path / "g.png"], 2) == "grey"
    assert resolve_channels("auto", [tmp_path / "g.png", tmp_path / "c.jpg"], 2) == "rgb"
    assert resolve_channels("auto", [tmp_path / "c.jpg"], 3) == "grey"
    assert resolve_channels("grey", [tmp_path / "c.jpg"], 2) == "grey"


def test_size_checked_on_the_header_before_decoding(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setenv("RADPIPE_MAX_VOXELS", "20000")
    decoded = []
    monkeypatch.setattr(PILImage.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageTooLargeError, match=r"100x100x3 .*over the limit of 20,000"):
        picture_header(tmp_path / "big.png")
    assert PILImage.MAX_IMAGE_PIXELS == 20000  # Pillow's bomb guard follows the same limit
    with pytest.raises(ImageTooLargeError):  # MONAI's other readers are not tried
        _load(tmp_path / "big.png")
    assert not decoded


def test_damaged_and_multi_frame_pictures_are_refused(tmp_path):
    Image.fromarray(_ramp(64, 64)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png: cannot decode"):
        load_volume(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ImageReadError, match="text.png: not a picture Pillow can read"):
        load_volume(tmp_path / "text.png")
    frames = [Image.fromarray(_ramp()), Image.fromarray(_ramp())]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="holds 2 frames"):
        load_volume(tmp_path / "pages.tif")
    for reader in (RadpipeReader(), PictureReader()):  # MONAI's own readers would read the first page
        with pytest.raises(ImageReadError, match="holds 2 frames"):
            _load(tmp_path / "pages.tif", reader)


def test_imagenet_runs_after_the_resize_and_reads_16_bit_pictures_as_16_bit(tmp_path):
    from transforms.intensity import IMAGENET_GREY, ImageNetNormalised
    from transforms.spatial import Resize2Dd

    cfg = config_from_dict({"transforms": {"spatial_dims": 2, "size": [8, 8], "orientation": "", "channels": "grey",
                                           "intensity": "imagenet", "augment": "none"}})
    chain = eval_chain(cfg.transforms)
    kinds = [type(t) for t in chain.transforms]
    assert kinds.index(ImageNetNormalised) > kinds.index(Resize2Dd)  # on 64 pixels, not on the file's 600
    Image.fromarray(np.full((20, 30), 200, np.uint16)).save(tmp_path / "dim16.png")  # 16-bit, values below 255
    out = chain({"image": str(tmp_path / "dim16.png"), "label": 0})["image"]
    assert float(out.mean()) == pytest.approx((200 / 65535 - IMAGENET_GREY[0]) / IMAGENET_GREY[1], abs=1e-5)
