"""Reference image loading and CLIP preprocessing (Pillow), the behaviour LightCapImage matches.

load_image: open, EXIF-transpose (ImageOps.exif_transpose), alpha composited on white with
Pillow's paste (DIV255 rounding), 16-bit samples reduced to their high byte, RGB.
clip_preprocess: open_clip/torchvision's Resize(S, BICUBIC) -> CenterCrop(S) -> ToTensor ->
Normalize, written out step by step with the same arithmetic (Pillow resize with
reducing_gap=None, torchvision's output size and crop rounding, float32 normalisation).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def has_alpha(img: Image.Image) -> bool:
    """Whether the image carries transparency (alpha band, or a tRNS/transparency entry)."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB 8-bit: alpha composited on white; 16-bit gray keeps its high byte.

    Pillow's own convert("RGB") clips 16-bit gray at 255 (a 16-bit photo turns white) and ignores
    alpha, so both are handled explicitly here. Pillow already keeps the high byte of 16-bit RGB,
    RGBA and LA PNG samples.
    """
    if img.mode in _SIXTEEN_BIT_GRAY:
        arr = np.asarray(img).astype(np.uint32) >> 8
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if has_alpha(img):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def load_image(path, draft_side: int | None = None) -> Image.Image:
    """Opens `path` (any Pillow-readable file or file object), upright and RGB. With
    `draft_side` S (the model's input size), a JPEG at least twice as large is decoded at a
    reduced DCT scale by Pillow's draft (1/2, 1/4 or 1/8, the shorter side staying >= S), as the
    Swift engine decodes model inputs (JPEGScale.choose)."""
    with Image.open(path) as img:
        if draft_side and img.format == "JPEG":
            img.draft("RGB", (draft_side, draft_side))
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision Resize(size): shorter side -> size, longer -> int(size * long / short)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Pillow BICUBIC (antialiased, reducing_gap=None) to `resized_size`."""
    return img.resize(resized_size(img.width, img.height, size), Image.Resampling.BICUBIC,
                      reducing_gap=None)


def crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision CenterCrop: int(round((side - size) / 2.0)), Python's round (half to even)."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def center_crop(img: Image.Image, size: int) -> Image.Image:
    left, top = crop_origin(img.width, img.height, size)
    return img.crop((left, top, left + size, top + size))


def normalize(img: Image.Image, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """ToTensor + Normalize in float32: (v / 255 - mean) / std, layout [3, H, W]."""
    arr = np.asarray(img, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((arr - m) / s)


def clip_preprocess(img: Image.Image, size: int, mean=CLIP_MEAN, std=CLIP_STD, as_torch: bool = False):
    """The CLIP input [3, size, size] float32 (numpy, or a torch tensor with as_torch=True)."""
    out = normalize(center_crop(resize_shorter(to_rgb(img), size), size), mean, std)
    if as_torch:
        import torch
        return torch.from_numpy(out)
    return out
