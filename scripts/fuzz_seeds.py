#!/usr/bin/env python3
"""(Re)writes the fuzz targets' seed corpora under Fuzzing/seeds/<target>/ (docs/FUZZING.md).

Every seed is a real, valid input made from the repository's own files: the default model
(models/default), the example images and their COCO captions (examples/), safetensors files as the
reference's `safetensors` library writes them, images as Pillow (which the reference preprocesses
with) writes them. No third-party data. The corpus stays small (about 150 KB): the fuzzers mutate
structure, not bulk.

    .venv/bin/python scripts/fuzz_seeds.py        # needs numpy, Pillow, safetensors, torch (.venv)
"""
import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save as save_numpy
from safetensors.torch import save as save_torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Fuzzing" / "seeds"
MODEL = ROOT / "models" / "default"
# Fuzz.separator in Fuzzing/Sources/FuzzSupport/FuzzSupport.swift: keeps the files of one input apart.
SEPARATOR = b"\n--lightcap-fuzz-part--\n"


def write(target, name, data):
    path = OUT / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def default_subset(count):
    """A safetensors file of the default model's `count` smallest tensors (real names, shapes, values)."""
    with safe_open(MODEL / "model.safetensors", "np") as f:
        keys = sorted(f.keys(), key=lambda k: (int(np.prod(f.get_slice(k).get_shape())), k))[:count]
        return save_numpy({k: f.get_tensor(k) for k in keys}, metadata={"format": "pt"})


def safetensors_seeds():
    rng = np.random.default_rng(2026)
    write("safetensors", "f32_i64.safetensors", save_numpy({
        "weight": rng.standard_normal((3, 4)).astype(np.float32),
        "ids": np.arange(5, dtype=np.int64),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }, metadata={"format": "pt", "note": "fuzz seed"}))
    write("safetensors", "f16_bf16.safetensors", save_torch({
        "half": torch.randn(2, 3, generator=torch.Generator().manual_seed(1)).half(),
        "brain": torch.randn(4, generator=torch.Generator().manual_seed(2)).bfloat16(),
        "visual.0.weight": torch.ones(2, 2),
    }))
    write("safetensors", "default_subset.safetensors", default_subset(8))
    # An INT8 convolution's tensors, as `lightcap quantize` writes them (docs/FORMAT.md).
    write("safetensors", "int8_conv.safetensors", save_numpy({
        "visual.conv2.weight": rng.integers(-127, 128, (4, 2, 3, 3), dtype=np.int8),
        "visual.conv2.weight_scale": rng.uniform(0.01, 0.1, 4).astype(np.float32),
        "visual.conv2.bias": rng.standard_normal(4).astype(np.float32),
        "visual.conv2.input_scale": np.array([0.02], dtype=np.float32),
    }))


def config_seeds():
    config = json.loads((MODEL / "config.json").read_text())
    write("configuration", "default.json", (MODEL / "config.json").read_text())
    no_concepts = json.loads(json.dumps(config))
    no_concepts["concepts"]["enabled"] = False
    no_concepts["modulator"]["enabled"] = False
    write("configuration", "no_concepts.json", json.dumps(no_concepts, indent=1))
    positions = json.loads(json.dumps(config))
    positions["fusion"]["visual_position_embeddings"] = True
    positions["visual"]["attention_pool"] = True
    write("configuration", "positions.json", json.dumps(positions, separators=(",", ":")))


def model_directory_seeds():
    parts = [(MODEL / name).read_bytes() for name in ("config.json", "model.safetensors", "vocab.txt", "concepts.txt")]
    parts[1] = default_subset(6)
    write("model-directory", "default_subset", SEPARATOR.join(parts))
    config = json.loads(parts[0])
    config["concepts"]["enabled"] = False
    config["modulator"]["enabled"] = False
    write("model-directory", "no_concepts", SEPARATOR.join([json.dumps(config).encode(), parts[1], parts[2]]))


def small_scene():
    """A 32x24 crop of examples/scene1.png (a real scene), RGB."""
    with Image.open(ROOT / "examples" / "scene1.png") as im:
        return im.convert("RGB").resize((64, 64), Image.BICUBIC).crop((8, 16, 40, 40))


def exif(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def image_seeds():
    rgb = small_scene()
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    images = {
        "rgb.png": encode(rgb, "PNG"),                                  # the fast path
        "rgba_exif6.png": encode(rgba, "PNG", exif=exif(6)),             # fast path, alpha, eXIf
        "palette.png": encode(rgb.quantize(16), "PNG"),                   # libspng
        "gray16.png": encode(rgb.convert("I").point(lambda v: v * 200).convert("I;16"), "PNG"),
        "gray_alpha.png": encode(rgba.convert("LA"), "PNG"),
        "baseline.jpg": encode(rgb, "JPEG", quality=60),
        "progressive_exif3.jpg": encode(rgb, "JPEG", quality=50, progressive=True, exif=exif(3)),
        "gray.jpg": encode(rgb.convert("L"), "JPEG", quality=50),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=50),
        "444_exif8.jpg": encode(rgb, "JPEG", quality=50, subsampling=0, exif=exif(8)),
        "lossy.webp": encode(rgb, "WEBP", quality=40),
        "lossless_alpha.webp": encode(rgba, "WEBP", lossless=True),
        "lossy_exif6.webp": encode(rgb, "WEBP", quality=40, exif=exif(6)),
    }
    # The first byte picks the limits and the JPEG scale (Fuzzing/Sources/FuzzImage); 0x32: the second limits, scale to >= 16.
    for i, (name, data) in enumerate(sorted(images.items())):
        write("image", name, bytes([0x00 if i % 2 == 0 else 0x32]) + data)
    return images


CAPTIONS = [
    "a small red circle above a large blue square",
    "Three shapes: a small cyan cross, a large cyan star and a small cyan circle.",
    "The dog's ball -- can't you see it? It's \"there\" (left) ... 3.5 m away!",
    "naïve café, CRÈME brûlée; 東京 and Ελλάδα & emoji 🙂",
    "[CLS] a [MASK] triangle [SEP] [PAD]",
]


def text_seeds():
    annotations = json.loads((ROOT / "examples" / "captions.json").read_text())
    example_captions = [a["caption"] for a in annotations["annotations"]]
    for i, caption in enumerate(CAPTIONS + example_captions[:3]):
        write("wordpiece", f"caption{i}.txt", caption)
    write("ptb", "captions.txt", "\n".join(CAPTIONS + example_captions[:3]))
    write("ptb", "quotes.txt", "He said, \"it's 5 o'clock\" -- isn't it?\r\nOK... {braces} <tags> & co. U.S.A.\n'tis gonna")
    results = [{"image_id": img["id"], "caption": caption}
               for img, caption in zip(annotations["images"], example_captions[::-1])]
    write("coco", "examples", (ROOT / "examples" / "captions.json").read_bytes() + SEPARATOR + json.dumps(results).encode())
    string_ids = {"images": [{"id": "a"}, {"id": "b"}],
                  "annotations": [{"image_id": "a", "caption": CAPTIONS[0]}, {"image_id": "b", "caption": CAPTIONS[2]},
                                  {"image_id": "a", "caption": CAPTIONS[3]}]}
    write("coco", "string_ids", json.dumps(string_ids).encode() + SEPARATOR
          + json.dumps([{"image_id": "a", "caption": "a red circle"}, {"image_id": "b", "caption": CAPTIONS[1]}]).encode())


def request_seeds(images):
    png, jpeg = images["rgb.png"], images["baseline.jpg"]

    def request(target, headers, body):
        return target.encode() + SEPARATOR + "\n".join(headers).encode() + SEPARATOR + body

    write("request", "raw_png", request("/v1/caption?beam=3&max_length=20", ["Content-Type: image/png"], png))
    write("request", "octet_jpeg", request("/v1/caption", ["Content-Type: application/octet-stream",
                                                           f"Content-Length: {len(jpeg)}"], jpeg))
    boundary = "----lightcap0123"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + png + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}--\r\n").encode()
    write("request", "multipart", request("/v1/caption?beam=1", [f"Content-Type: multipart/form-data; boundary={boundary}"], form))
    batch = b"".join((f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n").encode() + data + b"\r\n"
                     for data in (png, jpeg)) + f"--{boundary}--\r\n".encode()
    write("request", "batch", request("/v1/captions?max_length=12",
                                      [f"Content-Type: multipart/form-data; boundary=\"{boundary}\""], batch))
    body = json.dumps({"image": base64.b64encode(png).decode(), "beam": 2, "max_length": 16}).encode()
    write("request", "json", request("/v1/caption", ["Content-Type: application/json; charset=utf-8"], body))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    safetensors_seeds()
    config_seeds()
    model_directory_seeds()
    images = image_seeds()
    text_seeds()
    request_seeds(images)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    count = sum(1 for p in OUT.rglob("*") if p.is_file())
    print(f"{count} seeds, {total} bytes, in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
