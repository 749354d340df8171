"""Image fixtures for LightCapImage's parity and hostile-input tests.

    python -m lightcap_train.tools.image_fixtures --out .fixtures/images

Writes, for every case, the encoded file plus what Pillow (through lightcap_train.reference.preprocess) makes
of it: `<case>.decoded.rgb` (upright RGB8 after alpha-on-white), `<case>.resized.rgb` (the shorter
side resized to S, only when small), `<case>.cropped.rgb` (S x S) and `<case>.input.f32`
([3, S, S] little-endian float32). Sources: the photos shipped inside the scikit-image wheel
(no download) and synthetic edge cases. `manifest.json` lists cases and hostile files.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from lightcap_train.reference import preprocess as pp

SIZE = 224
MAX_RESIZED_BYTES = 4 << 20


# --- a minimal PNG writer (Pillow cannot write 16-bit RGB, and hostile headers need hand-made chunks)

def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes, extra=()) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for kind, payload in extra:
        out += png_chunk(kind, payload)
    return out + png_chunk(b"IDAT", zlib.compress(raw_rows)) + png_chunk(b"IEND", b"")


def png_from_array(arr: np.ndarray, color_type: int) -> bytes:
    """8- or 16-bit PNG (filter 0 on every row) from an HxWxC array."""
    h, w = arr.shape[:2]
    depth = 16 if arr.dtype == np.uint16 else 8
    data = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    rows = b"".join(b"\x00" + data[y].tobytes() for y in range(h))
    return png_bytes(w, h, depth, color_type, rows)


def png_filtered(arr: np.ndarray, filters: list[int]) -> bytes:
    """8-bit RGB (3 channels) or RGBA (4) PNG whose row y uses filter type filters[y % len(filters)]."""
    h, w, c = arr.shape
    a = arr.reshape(h, w * c).astype(np.int32)
    rows = []
    for y in range(h):
        cur = a[y]
        up = a[y - 1] if y > 0 else np.zeros_like(cur)
        left = np.concatenate([np.zeros(c, np.int32), cur[:-c]])
        upleft = np.concatenate([np.zeros(c, np.int32), up[:-c]])
        f = filters[y % len(filters)]
        if f == 0:
            pred = np.zeros_like(cur)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = up
        elif f == 3:
            pred = (left + up) >> 1
        else:
            pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([f]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes())
    return png_bytes(w, h, 8, 6 if c == 4 else 2, b"".join(rows))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photos() -> dict[str, Path]:
    import skimage.data
    root = Path(os.path.dirname(skimage.data.__file__))
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
             "camera.png", "hubble_deep_field.jpg", "retina.jpg"]
    return {n: root / n for n in names if (root / n).exists()}


def gradient(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with some texture (resampling on it exercises every weight)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = 127 + 120 * np.sin(x / max(w, 1) * 6.28 * 2 + y / max(h, 1) * 3)
    g = 127 + 120 * np.cos(y / max(h, 1) * 6.28 * 1.5)
    b = (x * 7 + y * 13) % 256
    arr = np.stack([r, g, b], -1) + rng.integers(-20, 21, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def cases() -> list[tuple[str, str, bytes, dict]]:
    """(name, extension, encoded bytes, notes) for every parity case."""
    out = []
    src = photos()
    for name, path in src.items():
        stem, ext = name.rsplit(".", 1)
        out.append((f"photo_{stem}", ext, path.read_bytes(), {"lossless": ext == "png"}))
    chelsea = pp.load_image(src["chelsea.png"])
    coffee = pp.load_image(src["coffee.png"])
    astronaut = pp.load_image(src["astronaut.png"])
    camera = Image.open(src["camera.png"]).convert("L")

    # JPEG variants
    out.append(("jpeg_baseline_420", "jpg", encode(chelsea, "JPEG", quality=90), {}))
    out.append(("jpeg_baseline_444", "jpg", encode(coffee, "JPEG", quality=95, subsampling=0), {}))
    out.append(("jpeg_progressive", "jpg", encode(coffee, "JPEG", quality=85, progressive=True), {}))
    out.append(("jpeg_gray", "jpg", encode(camera, "JPEG", quality=90), {}))
    cmyk = encode(astronaut.convert("CMYK"), "JPEG", quality=90)
    out.append(("jpeg_cmyk", "jpg", cmyk, {}))
    app14 = cmyk.index(b"\xff\xee")                  # drop the Adobe segment: Pillow still assumes inverted
    out.append(("jpeg_cmyk_no_adobe", "jpg", cmyk[:app14] + cmyk[app14 + 2 + struct.unpack(">H", cmyk[app14 + 2:app14 + 4])[0]:], {}))
    small = chelsea.resize((97, 61), Image.Resampling.BICUBIC)   # asymmetric, odd sizes
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        out.append((f"jpeg_exif_{o}", "jpg", encode(small, "JPEG", quality=92, exif=exif.tobytes()), {}))
    exif6 = Image.Exif()
    exif6[0x0112] = 6
    out.append(("png_exif_6", "png", encode(small, "PNG", exif=exif6.tobytes()), {"lossless": True}))
    exif3 = Image.Exif()
    exif3[0x0112] = 3
    out.append(("webp_exif_3", "webp", encode(small, "WEBP", lossless=True, exif=exif3.tobytes()),
                {"lossless": True}))

    # PNG variants
    alpha = np.clip(np.mgrid[0:300, 0:451][1] * 255 // 450, 0, 255).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([np.asarray(chelsea), alpha]), "RGBA")
    out.append(("png_rgba", "png", encode(rgba, "PNG"), {"lossless": True}))
    la = Image.fromarray(np.dstack([np.asarray(camera.resize((200, 150))), alpha[:150, :200]]), "LA")
    out.append(("png_gray_alpha", "png", encode(la, "PNG"), {"lossless": True}))
    out.append(("png_gray8", "png", encode(camera.resize((257, 191)), "PNG"), {"lossless": True}))
    g16 = (np.asarray(camera.resize((203, 170)), dtype=np.uint16) * 257
           + np.random.default_rng(1).integers(0, 256, (170, 203))).astype(np.uint16)
    out.append(("png_gray16", "png", png_from_array(g16[..., None], 0), {"lossless": True}))
    rgb16 = (np.asarray(coffee, dtype=np.uint16) * 257
             + np.random.default_rng(2).integers(0, 256, (400, 600, 3))).astype(np.uint16)
    out.append(("png_rgb16", "png", png_from_array(rgb16, 2), {"lossless": True}))
    rgba16 = np.dstack([rgb16[:200, :300], (np.mgrid[0:200, 0:300][1] * 218).astype(np.uint16)])
    out.append(("png_rgba16", "png", png_from_array(rgba16, 6), {"lossless": True}))
    for f in range(5):
        out.append((f"png_filter_{f}", "png", png_filtered(gradient(67, 45, f), [f]), {"lossless": True}))
    out.append(("png_filter_mixed_rgba", "png",
                png_filtered(np.dstack([gradient(53, 41, 9), gradient(53, 41, 10)[..., :1]]), [4, 3, 2, 1, 0]),
                {"lossless": True}))
    pal = astronaut.quantize(64)
    out.append(("png_palette", "png", encode(pal, "PNG"), {"lossless": True}))
    pal16 = coffee.resize((151, 99)).quantize(16)
    out.append(("png_palette_4bit", "png", encode(pal16, "PNG", bits=4), {"lossless": True}))
    out.append(("png_palette_trns", "png", encode(pal16, "PNG", transparency=3), {"lossless": True}))
    out.append(("png_1bit", "png", encode(camera.resize((123, 77)).convert("1"), "PNG"), {"lossless": True}))
    out.append(("png_gray_trns", "png", encode(camera.resize((90, 70)), "PNG", transparency=128),
                {"lossless": True}))

    # WebP variants
    out.append(("webp_lossy", "webp", encode(chelsea, "WEBP", quality=80), {}))
    out.append(("webp_lossless", "webp", encode(coffee, "WEBP", lossless=True), {"lossless": True}))
    out.append(("webp_lossy_alpha", "webp", encode(rgba, "WEBP", quality=80), {}))
    out.append(("webp_lossless_alpha", "webp", encode(rgba, "WEBP", lossless=True, exact=True),
                {"lossless": True}))

    # Edge sizes (lossless PNG so only the resize is tested)
    for name, (w, h) in {"1x1": (1, 1), "1x7": (1, 7), "7x1": (7, 1), "2x3": (2, 3), "odd_333x217": (333, 217),
                         "wide_1200x5": (1200, 5), "tall_5x900": (5, 900), "exact_224x300": (224, 300),
                         "exact_224x224": (224, 224), "up_100x150": (100, 150), "half_225x449": (225, 449)}.items():
        out.append((f"size_{name}", "png", encode(Image.fromarray(gradient(w, h, w * 7 + h)), "PNG"),
                    {"lossless": True}))
    return out


def write_rgb(path: Path, img: Image.Image) -> list[int]:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    path.write_bytes(arr.tobytes())
    return [img.width, img.height]


def draft_cases(out: Path) -> list[dict]:
    """A large JPEG decoded by Pillow's draft() at 1/2, 1/4, 1/8 (libjpeg DCT scaling)."""
    big = pp.load_image(photos()["astronaut.png"]).resize((1601, 1203), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    (out / "draft_big.jpg").write_bytes(data)
    rows = []
    for s in (2, 4, 8):
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (im.width // s, im.height // s))
            im.load()
            size = write_rgb(out / f"draft_big.s{s}.rgb", im)
        rows.append({"file": "draft_big.jpg", "denom": s, "pixels": f"draft_big.s{s}.rgb", "size": size})
    return rows


def draft_sides(out: Path) -> list[dict]:
    """The size reference.preprocess.load_image(draft_side=S) decodes draft_big.jpg (1601x1203)
    at, for sides S around each scale's boundary: the engine must pick the same DCT scale."""
    rows = []
    for side in (100, 150, 151, 200, 224, 300, 301, 600, 601, 1203, 1204, 5000):
        img = pp.load_image(out / "draft_big.jpg", draft_side=side)
        rows.append({"side": side, "size": [img.width, img.height]})
    return rows


def hostile(out: Path, good: dict[str, bytes]) -> list[dict]:
    """Malformed inputs, each with the ImageError case the decoder must throw
    ("recoverable": damage libjpeg repairs, as in Pillow; decoding or any ImageError is fine)."""
    h = []

    def add(name: str, data: bytes, error: str):
        (out / name).write_bytes(data)
        h.append({"file": name, "error": error})

    jpg, png, webp = good["jpeg_baseline_420"], good["png_rgba"], good["webp_lossy"]
    add("empty.png", b"", "empty")
    add("text.jpg", b"this is not an image, just some text\n" * 4, "unrecognizedFormat")
    add("short_magic.png", b"\x89PNG", "unrecognizedFormat")
    add("truncated.jpg", jpg[: len(jpg) // 2], "truncated")
    add("truncated_header.jpg", jpg[:40], "truncated")
    add("truncated.png", png[: len(png) // 2], "truncated")
    add("truncated.webp", webp[: len(webp) // 2], "truncated")
    bad_crc = bytearray(png)
    bad_crc[len(png) // 2] ^= 0xFF
    add("corrupt_crc.png", bytes(bad_crc), "corrupt")
    garbage = png_bytes(64, 64, 8, 2, b"", ())
    i = garbage.index(b"IDAT") - 4
    garbage = garbage[:i] + png_chunk(b"IDAT", b"\x78\x9c" + bytes(range(256)) * 4) + png_chunk(b"IEND", b"")
    add("corrupt_idat.png", garbage, "corrupt")
    add("corrupt_ihdr.png", png_bytes(16, 16, 7, 2, b"\x00" * 16 * 49), "corrupt")
    bad_jpg = bytearray(jpg)
    sos = bad_jpg.index(b"\xff\xda")
    for k in range(sos + 20, min(sos + 2020, len(bad_jpg) - 2)):
        bad_jpg[k] = 0xFF if k % 2 else 0xD0 + (k % 8)      # a scan full of bogus markers
    # libjpeg resynchronises on restart markers; Pillow decodes this too. It must not crash.
    add("damaged_scan.jpg", bytes(bad_jpg), "recoverable")
    bad_sof = bytearray(jpg)
    k = next(i for i in range(len(bad_sof) - 1) if bad_sof[i] == 0xFF and bad_sof[i + 1] in (0xC0, 0xC1, 0xC2))
    bad_sof[k + 4] = 13                                       # 13-bit sample precision
    add("corrupt_sof.jpg", bytes(bad_sof), "corrupt")
    bad_dht = bytearray(jpg)
    dht = bad_dht.index(b"\xff\xc4")
    bad_dht[dht + 5: dht + 21] = b"\xff" * 16                # Huffman table with impossible counts
    add("corrupt_dht.jpg", bytes(bad_dht), "corrupt")
    bad_webp = bytearray(webp)
    for k in range(40, min(len(bad_webp), 400)):
        bad_webp[k] ^= 0x5A
    add("corrupt.webp", bytes(bad_webp), "corrupt")
    add("zero_width.png", png_bytes(0, 16, 8, 2, b""), "invalidDimensions")
    add("zero_height.png", png_bytes(16, 0, 8, 2, b""), "invalidDimensions")
    add("huge.png", png_bytes(100000, 100000, 8, 2, zlib.compress(b"\x00" * 1000)), "tooLarge")
    sof = bytearray(jpg)
    k = next(i for i in range(len(sof) - 1) if sof[i] == 0xFF and sof[i + 1] in (0xC0, 0xC1, 0xC2))
    sof[k + 5: k + 9] = struct.pack(">HH", 60000, 60000)
    add("huge.jpg", bytes(sof), "tooLarge")
    zero = bytearray(jpg)
    zero[k + 5: k + 9] = struct.pack(">HH", 16, 0)
    add("zero_height.jpg", bytes(zero), "corrupt")
    # VP8L header: 0x2f, then 14 bits (width-1), 14 bits (height-1), alpha, version 0.
    bits = (16383) | (16383 << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 32
    add("huge.webp", b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8l)) + b"WEBP" + b"VP8L"
        + struct.pack("<I", len(vp8l)) + vp8l, "tooLarge")
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".fixtures/images")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"size": SIZE, "mean": list(pp.CLIP_MEAN), "std": list(pp.CLIP_STD), "cases": []}
    good = {}
    for name, ext, data, notes in cases():
        good[name] = data
        path = out / f"{name}.{ext}"
        path.write_bytes(data)
        img = pp.load_image(path)
        resized = pp.resize_shorter(img, SIZE)
        cropped = pp.center_crop(resized, SIZE)
        tensor = pp.normalize(cropped)
        row = {"name": name, "file": path.name, "lossless": bool(notes.get("lossless", False)),
               "decoded": write_rgb(out / f"{name}.decoded.rgb", img),
               "resized_size": [resized.width, resized.height], "resized": None,
               "cropped": write_rgb(out / f"{name}.cropped.rgb", cropped)}
        if resized.width * resized.height * 3 <= MAX_RESIZED_BYTES:
            write_rgb(out / f"{name}.resized.rgb", resized)
            row["resized"] = f"{name}.resized.rgb"
        tensor.astype("<f4").tofile(out / f"{name}.input.f32")
        manifest["cases"].append(row)
    manifest["draft"] = draft_cases(out)
    manifest["draft_sides"] = draft_sides(out)
    # The same PNG under a JPEG name: the decoder must sniff the bytes.
    (out / "png_named.jpg").write_bytes(good["png_rgba"])
    manifest["wrong_extension"] = {"file": "png_named.jpg", "same_as": "png_rgba"}
    manifest["hostile"] = hostile(out, good)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"image fixtures: {len(manifest['cases'])} cases, {len(manifest['hostile'])} hostile files -> {out}")


if __name__ == "__main__":
    main()
