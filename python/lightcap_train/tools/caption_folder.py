"""A captioned image set in COCO and Karpathy formats that is not a scenes split: the test data
of the recipe's general (any captioned data) path.

    python -m lightcap_train.tools.caption_folder --out DIR [--count 64] [--seed 7]

writes DIR/images/NNNNNN.jpg (scene renders, as the real data is: JPEG at odd, mostly
non-square sizes; about one in five stored sideways or upside down with an EXIF Orientation
tag that puts it upright; one PNG; the last image a truncated, undecodable JPEG),
DIR/captions_train.json and DIR/captions_val.json (COCO captions format, about 75% / 25%),
and DIR/dataset_coco.json (Karpathy's format: the same images, train + restval = the COCO
train file, val + test = the COCO val file). References are the scene's five captions
reworded with capitals and punctuation, 3 to 7 per image; a few images have one reference of
more than 40 words. There is no objects.json: nothing here is specific to scenes.

The output is deterministic (same arguments, same bytes). A marker file lists what was
written; a non-empty folder without it is refused, so nothing of a user is overwritten.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re

import numpy as np
from PIL import Image

from lightcap_train.data.scenes import make_scene

#: The renderer's stream of the images: image `index` is make_scene(SCENE_SPLIT, seed, index).
SCENE_SPLIT = "train"
RENDER_SIDE = 256
#: Stored (upright) sizes, cycled by index: mostly non-square, one square, some larger.
SIZES = ((300, 217), (181, 263), (257, 257), (640, 480), (333, 250), (212, 320), (480, 360))
#: EXIF orientations used, cycled; the transpose that stores the upright image so that
#: ImageOps.exif_transpose (which applies ROTATE_180 / ROTATE_270 / ROTATE_90) undoes it.
ORIENTATIONS = (6, 8, 3)
STORE_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                   8: Image.Transpose.ROTATE_270}
JPEG_QUALITY = 90
CORRUPT_BYTES = 200  # the corrupt image: the first bytes of a real JPEG (the header, cut short)
PNG_INDEX = 1
MIN_COUNT, MAX_COUNT = 8, 10000
LONG_WORDS = 40  # an over-long reference has more words than this

MARKER = ".lightcap-caption-folder"
#: The only names a rewrite may delete (the marker's file list is checked against them).
_OWN_FILE = re.compile(r"(images/\d{6}\.(jpg|png)|captions_train\.json|captions_val\.json"
                       r"|dataset_coco\.json)")


# ----------------------------------------------------------------------------------------------
# What each image is


def image_id(index: int) -> int:
    """COCO-like ids: unique (7919 is prime to 100003) and out of index order (loaders sort)."""
    return 100 + (index * 7919) % 100003


def stored_size(index: int) -> tuple[int, int]:
    """(width, height) of the upright image."""
    return SIZES[index % len(SIZES)]


def plan(count: int) -> list[dict]:
    """The role of every image: COCO file, Karpathy split, storage format, EXIF orientation."""
    corrupt = count - 1
    long_refs = {4, count // 2 + 1, count - 5} - {corrupt}
    rows = []
    for i in range(count):
        val = i % 4 == 3 and i != corrupt
        if val:
            karpathy = "test" if (i // 4) % 3 == 2 else "val"
        else:
            karpathy = "restval" if i % 10 == 5 else "train"
        rotated = i % 5 == 2 and i != corrupt
        orientation = ORIENTATIONS[(i // 5) % len(ORIENTATIONS)] if rotated else None
        fmt = "png" if i == PNG_INDEX else "jpg"
        rows.append({"index": i, "id": image_id(i), "file_name": f"{i:06d}.{fmt}",
                     "coco": "val" if val else "train", "karpathy": karpathy,
                     "orientation": orientation, "corrupt": i == corrupt, "long": i in long_refs})
    return rows


def scene_image(index: int, seed: int) -> tuple[Image.Image, list[str]]:
    """(upright picture, the scene's five captions) of image `index`: the scene render resized
    to the image's size."""
    _, pixels, caps = make_scene(SCENE_SPLIT, seed, index, RENDER_SIDE)
    return Image.fromarray(pixels).resize(stored_size(index), Image.Resampling.BICUBIC), caps


def upright_image(index: int, seed: int) -> Image.Image:
    """The picture image `index` shows once upright (what a correct loader must return)."""
    return scene_image(index, seed)[0]


def encode(img: Image.Image, fmt: str, orientation: int | None) -> bytes:
    """The file bytes: PNG, or JPEG (quality 90) stored transposed with an Orientation tag."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    elif orientation is None:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation  # Orientation
        img.transpose(STORE_TRANSPOSE[orientation]).save(buf, format="JPEG", quality=JPEG_QUALITY,
                                                          exif=exif.tobytes())
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# References


def _styled(caption: str, style: int) -> str:
    sentence = caption[0].upper() + caption[1:]
    if style == 1:
        return sentence  # no full stop
    if style == 2:
        return sentence + " ."  # tokenizer-spaced full stop
    if style == 3:
        return " ".join(w[0].upper() + w[1:] for w in caption.split()) + "."
    if style == 4:
        return caption.upper() + "!"
    if style == 5:
        return sentence + ". "  # trailing blank
    return sentence + "."


_VARIATIONS = ("an image of {}", "a picture showing {}", "{}, seen from above", "in this photo: {}",
               "{} in a plain frame")


def references(captions: list[str], index: int, seed: int, long: bool) -> list[str]:
    """3 to 7 references from the scene's five captions: some dropped or reworded variations
    added, each styled (mostly "Capital first, full stop."); one over-long when `long`."""
    rng = np.random.default_rng([seed, index, 1])
    n = 3 + (3 * index + seed) % 5
    if n <= len(captions):
        chosen = [captions[k] for k in sorted(rng.choice(len(captions), n, replace=False))]
    else:
        # variations of the families that read as a noun phrase (not "there is ... picture")
        bases = [c for c in captions if not c.startswith("there is")]
        extra = [_VARIATIONS[rng.integers(len(_VARIATIONS))].format(bases[rng.integers(len(bases))])
                 for _ in range(n - len(captions))]
        chosen = list(captions) + extra
    styles = rng.choice(6, size=n, p=[0.55, 0.1, 0.1, 0.1, 0.05, 0.1])
    refs = [_styled(c, int(s)) for c, s in zip(chosen, styles)]
    if long:
        clauses, k = [], 0
        while sum(len(c.split()) for c in clauses) <= LONG_WORDS:
            clauses.append(captions[k % len(captions)])
            k += 1
        refs[-1] = _styled(", and ".join(clauses), 0)
    return refs


def tokens(caption: str) -> list[str]:
    """Karpathy-style tokens: lowercase words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


# ----------------------------------------------------------------------------------------------
# Writing


def _prepare(out: str) -> None:
    """Creates `out`, or empties the files of an earlier run in it; refuses any other non-empty
    folder (and a file in its place)."""
    marker = os.path.join(out, MARKER)
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(marker):
            raise FileExistsError(f"{out} is not empty and was not written by caption_folder "
                                  f"(no {MARKER}): refusing to write into it")
        try:
            with open(marker) as f:
                previous = json.load(f)["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FileExistsError(f"{marker} is unreadable ({e}): refusing to write into {out}") \
                from None
        for rel in previous:
            if isinstance(rel, str) and _OWN_FILE.fullmatch(rel):
                path = os.path.join(out, rel)
                if os.path.isfile(path):
                    os.remove(path)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)


def _dump(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def write_caption_folder(out: str, count: int = 64, seed: int = 7) -> dict:
    """Writes the folder (see the module docstring); returns a summary: counts, the corrupt
    file's path, the ids of the EXIF-rotated images and of those with an over-long reference."""
    if not MIN_COUNT <= count <= MAX_COUNT:
        raise ValueError(f"count must be {MIN_COUNT}..{MAX_COUNT}, got {count}")
    rows = plan(count)
    files = ([f"images/{r['file_name']}" for r in rows]
             + ["captions_train.json", "captions_val.json", "dataset_coco.json"])
    _prepare(out)
    # The marker goes first: an interrupted run leaves a folder a rerun may overwrite.
    _dump(os.path.join(out, MARKER), {"tool": "lightcap_train.tools.caption_folder",
                                      "count": count, "seed": seed, "files": files})

    coco = {"train": ([], []), "val": ([], [])}  # images, (reference number, annotation)
    karpathy = []
    for r in rows:
        i = r["index"]
        img, caps = scene_image(i, seed)
        data = encode(img, "png" if r["file_name"].endswith(".png") else "jpg", r["orientation"])
        if r["corrupt"]:
            data = data[:CORRUPT_BYTES]
        with open(os.path.join(out, "images", r["file_name"]), "wb") as f:
            f.write(data)
        refs = references(caps, i, seed, r["long"])
        r["references"] = refs
        width, height = img.size
        images, annotations = coco[r["coco"]]
        images.append({"id": r["id"], "file_name": r["file_name"], "width": width,
                       "height": height})
        annotations.extend((k, r["id"], c) for k, c in enumerate(refs))
        karpathy.append({
            "filepath": "images", "filename": r["file_name"], "imgid": i, "split": r["karpathy"],
            "cocoid": r["id"],
            "sentids": [10 * i + k for k in range(len(refs))],
            "sentences": [{"tokens": tokens(c), "raw": c, "imgid": i, "sentid": 10 * i + k}
                          for k, c in enumerate(refs)],
        })

    # As in COCO, annotations are not grouped by image (here: every image's first reference,
    # then every second one, ...); annotation ids are unique across both files.
    next_id = 1
    info = {"description": "LightCap caption folder (scene renders)", "count": count, "seed": seed}
    for name in ("train", "val"):
        images, annotations = coco[name]
        ordered = []
        for k, image, caption in sorted(annotations, key=lambda a: a[0]):
            ordered.append({"id": next_id, "image_id": image, "caption": caption})
            next_id += 1
        _dump(os.path.join(out, f"captions_{name}.json"),
              {"info": {**info, "split": name}, "licenses": [], "type": "captions",
               "images": images, "annotations": ordered})
    _dump(os.path.join(out, "dataset_coco.json"), {"dataset": "coco", "images": karpathy})

    corrupt = rows[-1]
    return {
        "out": os.path.abspath(out),
        "count": count,
        "coco": {name: len(coco[name][0]) for name in coco},
        "karpathy": {s: sum(r["karpathy"] == s for r in rows)
                     for s in ("train", "restval", "val", "test")},
        "references": sum(len(r["references"]) for r in rows),
        "corrupt": os.path.abspath(os.path.join(out, "images", corrupt["file_name"])),
        "png": os.path.abspath(os.path.join(out, "images", rows[PNG_INDEX]["file_name"])),
        "exif_rotated": [r["id"] for r in rows if r["orientation"]],
        "long_references": [r["id"] for r in rows if r["long"]],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to create (or one this tool wrote)")
    p.add_argument("--count", type=int, default=64, help="number of images")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    try:
        summary = write_caption_folder(args.out, args.count, args.seed)
    except (FileExistsError, ValueError) as e:
        p.exit(2, f"caption_folder: {e}\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
