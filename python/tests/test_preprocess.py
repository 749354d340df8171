"""The reference image preprocessing (lightcap_train.reference.preprocess) against the peers it stands for:
open_clip's eval transform and torchvision's Resize/CenterCrop/ToTensor/Normalize."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from lightcap_train.tools import image_fixtures as fx
from lightcap_train.reference import preprocess as pp

SIZES = [(451, 300), (300, 451), (224, 224), (225, 227), (1, 7), (640, 427), (97, 61), (1200, 5)]


def image(w, h, seed=0):
    return Image.fromarray(fx.gradient(w, h, seed))


@pytest.mark.parametrize("w,h", SIZES)
def test_matches_open_clip_eval_transform(open_clip, w, h):
    transform = open_clip.image_transform(224, is_train=False)   # what create_model_and_transforms returns
    img = image(w, h, w + h)
    want = transform(img)
    got = pp.clip_preprocess(img, 224, as_torch=True)
    assert got.shape == want.shape == (3, 224, 224)
    assert torch.equal(got, want), (got - want).abs().max()


@pytest.mark.parametrize("w,h", SIZES)
def test_matches_torchvision(open_clip, w, h):   # open_clip fixture: torchvision importable
    import torchvision.transforms as T
    t = T.Compose([T.Resize(96, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(96), T.ToTensor(),
                   T.Normalize(pp.CLIP_MEAN, pp.CLIP_STD)])
    img = image(w, h, 3)
    assert torch.equal(pp.clip_preprocess(img, 96, as_torch=True), t(img))


def test_alpha_composited_on_white():
    rgba = np.random.default_rng(0).integers(0, 256, (9, 11, 4)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    got = np.asarray(pp.load_image(io.BytesIO(buf.getvalue()))).astype(int)
    c, a = rgba[..., :3].astype(int), rgba[..., 3:].astype(int)
    t = c * a + 255 * (255 - a) + 128
    assert np.array_equal(got, ((t >> 8) + t) >> 8)
    assert np.abs(got - (c * a + 255 * (255 - a)) / 255).max() <= 0.5 + 1e-9


def test_sixteen_bit_gray_keeps_high_byte():
    g = np.random.default_rng(1).integers(0, 65536, (5, 6)).astype(np.uint16)
    img = pp.load_image(io.BytesIO(fx.png_from_array(g[..., None], 0)))
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img)[..., 1], (g >> 8).astype(np.uint8))


@pytest.mark.parametrize("orientation,op", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270),
                                            (8, Image.Transpose.ROTATE_90)])
def test_exif_orientation_applied(orientation, op):
    img = image(13, 7, 5)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    assert np.array_equal(np.asarray(pp.load_image(io.BytesIO(buf.getvalue()))), np.asarray(img.transpose(op)))


def test_output_size_and_crop_rounding():
    assert pp.resized_size(640, 427, 224) == (int(224 * 640 / 427), 224)
    assert pp.crop_origin(225, 227, 224) == (0, 2)   # round(0.5) == 0, round(1.5) == 2


def test_draft_side_decodes_large_jpegs_at_pillows_draft_scale_only():
    """load_image(draft_side=S): a JPEG at least 2S on its shorter side is decoded as Pillow's
    draft((S, S)) decodes it; a smaller JPEG, and any PNG, exactly as without it."""
    buf = io.BytesIO()
    image(640, 480, 3).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    full = np.asarray(pp.load_image(io.BytesIO(jpeg)))
    assert np.array_equal(np.asarray(pp.load_image(io.BytesIO(jpeg), draft_side=241)), full)  # 480 // 241 = 1
    half = pp.load_image(io.BytesIO(jpeg), draft_side=240)
    assert half.size == (320, 240)
    with Image.open(io.BytesIO(jpeg)) as im:
        im.draft("RGB", (320, 240))
        assert np.array_equal(np.asarray(half), np.asarray(im.convert("RGB")))
    assert pp.load_image(io.BytesIO(jpeg), draft_side=60).size == (80, 60)
    png = io.BytesIO()
    image(640, 480, 3).save(png, "PNG")
    assert pp.load_image(io.BytesIO(png.getvalue()), draft_side=60).size == (640, 480)
