"""Scenes: rendered images of simple shapes with five reference captions each.

The data specification is docs/SCENES.md; this module follows it exactly. Everything is deterministic from (split, seed, index): the same arguments give
byte-identical PNG files and captions.

    python -m lightcap_train.data.scenes --split test --seed 2026 --count 1000 --out data/test

writes DIR/images/000000.png ..., DIR/captions.json (COCO captions format) and DIR/objects.json
(per-image object metadata: the region-level labels of the concept extractor).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

# ----------------------------------------------------------------------------------------------
# The vocabulary of the world

BACKGROUNDS = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 210, 40), "purple": (140, 60, 190), "orange": (245, 140, 30),
    "pink": (240, 120, 180), "cyan": (40, 200, 210),
}
SIZES = {"small": (0.09, 0.13), "large": (0.20, 0.26)}  # bounding radius / image side
RELATION_WORDS = ("left", "right", "above", "below")
PLURALS = {s: (s + "es" if s.endswith("ss") else s + "s") for s in SHAPES}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

#: The 25 concepts, in the order of concepts.txt.
CONCEPTS = (list(SHAPES) + list(COLOURS) + list(SIZES) + list(BACKGROUNDS)
            + list(RELATION_WORDS))

SPLITS = {"train": 0, "val": 1, "test": 2}
#: The seed of the committed test split (1,000 images); see docs/RESULTS.md.
TEST_SEED = 2026
TEST_COUNT = 1000

NOISE_SIGMA = 4.0
COLOUR_JITTER = 12
MAX_ROTATION = 20.0
SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # pixels, x to the right, y down
    radius: float  # bounding radius, pixels
    rotation: float  # degrees, counter-clockwise on screen; 0 for circle and ring
    rgb: tuple[int, int, int]  # colour after jitter

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]  # left to right (by centre x)
    image_size: int


# ----------------------------------------------------------------------------------------------
# Sampling


def scene_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """The random generator of one image; splits never share a stream whatever the seeds."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([SPLITS[split], seed, index])))


def sample_scene(rng: np.random.Generator, image_size: int = 256) -> Scene:
    """Draws a background and 1-4 objects whose bounding circles do not overlap."""
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    count = int(rng.integers(1, 5))
    while True:  # restart the whole layout if a placement fails (rare: about 1 in 1000)
        objects = []
        for _ in range(count):
            placed = _place(rng, objects, image_size)
            if placed is None:
                break
            objects.append(placed)
        if len(objects) == count:
            break
    objects.sort(key=lambda o: o.centre[0])
    return Scene(background, tuple(objects), image_size)


def _place(rng, placed, side) -> SceneObject | None:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    size = list(SIZES)[rng.integers(len(SIZES))]
    lo, hi = SIZES[size]
    radius = float(rng.uniform(lo, hi)) * side
    rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)) if shape not in ("circle", "ring") else 0.0
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    rgb = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[colour], jitter))
    for _ in range(200):
        x, y = rng.uniform(radius, side - radius, size=2)
        if all(math.hypot(x - o.centre[0], y - o.centre[1]) > radius + o.radius for o in placed):
            return SceneObject(shape, colour, size, (float(x), float(y)), radius, rotation, rgb)
    return None


# ----------------------------------------------------------------------------------------------
# Rendering


def shape_polygon(shape: str, radius: float) -> np.ndarray:
    """Outline of a shape centred at the origin, y up, every vertex within `radius` (V, 2)."""
    r = radius
    if shape == "square":
        a = np.deg2rad([45, 135, 225, 315])
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "triangle":
        a = np.deg2rad([90, 210, 330])
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "hexagon":
        a = np.deg2rad(np.arange(6) * 60.0)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "star":
        a = np.deg2rad(90 + np.arange(10) * 36.0)
        rr = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return np.stack([rr * np.cos(a), rr * np.sin(a)], 1)
    if shape == "diamond":
        return np.array([[0, r], [-0.6 * r, 0], [0, -r], [0.6 * r, 0]])
    if shape == "cross":
        w = 0.35 * r  # half of the arm width (0.7 of the radius)
        l = math.sqrt(r * r - w * w)  # arm ends touch the bounding circle
        return np.array([[w, w], [w, l], [-w, l], [-w, w], [-l, w], [-l, -w], [-w, -w],
                         [-w, -l], [w, -l], [w, -w], [l, -w], [l, w]])
    raise ValueError(f"no polygon for shape {shape!r}")


def coverage(shape: str, radius: float, rotation: float, fx: float, fy: float, side: int) -> np.ndarray:
    """Anti-aliased coverage [side, side] in 0..1 of a shape whose centre sits at (fx, fy) in a
    side x side pixel box: drawn at 4x supersampling, then box-filtered (pixel coverage)."""
    k = SUPERSAMPLE
    mask = Image.new("L", (side * k, side * k), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = fx * k, fy * k, radius * k
    if shape in ("circle", "ring"):
        # pixel centres sit at (i + 0.5): the ellipse box is in continuous coordinates
        draw.ellipse([cx - r - 0.5, cy - r - 0.5, cx + r - 0.5, cy + r - 0.5], fill=255)
        if shape == "ring":
            h = 0.5 * r
            draw.ellipse([cx - h - 0.5, cy - h - 0.5, cx + h - 0.5, cy + h - 0.5], fill=0)
    else:
        t = math.radians(rotation)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        pts = shape_polygon(shape, r) @ rot.T
        draw.polygon([(cx + px - 0.5, cy - py - 0.5) for px, py in pts], fill=255)  # y up -> rows down
    return np.asarray(mask.reduce(k), dtype=np.float32) / 255.0


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 image [S, S, 3]: each shape blended with its anti-aliased coverage into the
    background (bounding circles never overlap), then Gaussian noise on every pixel."""
    s = scene.image_size
    image = np.empty((s, s, 3), dtype=np.float32)
    image[:] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        x0 = max(0, int(math.floor(o.centre[0] - o.radius)) - 1)
        y0 = max(0, int(math.floor(o.centre[1] - o.radius)) - 1)
        x1 = min(s, int(math.ceil(o.centre[0] + o.radius)) + 2)
        y1 = min(s, int(math.ceil(o.centre[1] + o.radius)) + 2)
        side = max(x1 - x0, y1 - y0)
        a = coverage(o.shape, o.radius, o.rotation, o.centre[0] - x0, o.centre[1] - y0, side)
        a = a[:y1 - y0, :x1 - x0, None]
        patch = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = patch * (1 - a) + np.asarray(o.rgb, dtype=np.float32) * a
    noise = rng.standard_normal(image.shape, dtype=np.float32) * NOISE_SIGMA
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Captions


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


RELATIONS = ("to the left of", "to the right of", "above", "below")


def relation_of_centres(a, b) -> str:
    """Where a centre (x, y) is relative to another (y grows downwards in the image): left/right
    when the horizontal distance is the larger, else above/below."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) > abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where A is relative to B."""
    return relation_of_centres(a.centre, b.centre)


INVERSE = {"to the left of": "to the right of", "to the right of": "to the left of",
           "above": "below", "below": "above"}


def full(o: SceneObject) -> str:
    return f"{o.size} {o.colour} {o.shape}"


def colour_shape(o: SceneObject) -> str:
    return f"{o.colour} {o.shape}"


def grouped(objects, words) -> list[str]:
    """Noun phrases with identical objects (same size, colour, shape) grouped, first seen first:
    'a small red circle', 'two large blue crosses'."""
    groups: dict[tuple, list[SceneObject]] = {}
    for o in objects:
        groups.setdefault(o.identity, []).append(o)
    phrases = []
    for members in groups.values():
        text = words(members[0])
        if len(members) == 1:
            phrases.append(article(text))
        else:
            head, _, noun = text.rpartition(" ")
            phrases.append(f"{NUMBER_WORDS[len(members)]} {head} {PLURALS[noun]}".replace("  ", " "))
    return phrases


def listing(phrases: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def captions(scene: Scene) -> list[str]:
    """The five reference captions, one from each template family, in family order."""
    objs, bg = scene.objects, scene.background
    n = len(objs)
    if n == 1:
        (a,) = objs
        return [
            article(full(a)),
            f"{article(colour_shape(a))} on {article(bg)} background",
            f"there is {article(full(a))} in the picture",
            f"a single {colour_shape(a)}",
            f"one {a.size} {a.shape} that is {a.colour}",
        ]
    a, b = objs[0], objs[1]
    rel = relation(a, b)
    if n == 2:
        return [
            listing(grouped(objs, full)),
            f"{article(full(a))} {rel} {article(full(b))}",
            f"two shapes: {listing(grouped(objs, full))}",
            f"{article(colour_shape(a))} {rel} {article(colour_shape(b))}",
            f"{article(full(b))} {INVERSE[rel]} {article(full(a))}",
        ]
    largest = max(objs, key=lambda o: o.radius)
    return [
        f"{NUMBER_WORDS[n]} shapes: {listing(grouped(objs, full))}",
        f"{NUMBER_WORDS[n]} shapes on {article(bg)} background",
        listing(grouped(objs, colour_shape)),
        f"{NUMBER_WORDS[n]} shapes including {article(full(largest))}",
        f"{article(full(a))} {rel} {article(full(b))} and {NUMBER_WORDS[n - 2]} more",
    ]


def caption_words() -> list[str]:
    """Every word the captions can use (templates, attributes, plurals, numbers)."""
    template_words = ("a an and on background there is in the picture single one that two shapes "
                      "three four including more to left right of above below : ,").split()
    words = (template_words + list(SHAPES) + [PLURALS[s] for s in SHAPES] + list(COLOURS)
             + list(SIZES) + list(BACKGROUNDS) + list(RELATION_WORDS))
    return list(dict.fromkeys(words))


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def vocabulary() -> list[str]:
    """The domain WordPiece vocabulary of the tiny model: the specials (id 0..4), then every word
    of the captions and concepts (whole words: no word is ever split)."""
    words = caption_words() + [c for c in CONCEPTS if c not in caption_words()]
    return list(SPECIAL_TOKENS) + words


# ----------------------------------------------------------------------------------------------
# Writing a split


def scene_metadata(scene: Scene, image_id: int, file_name: str) -> dict:
    return {
        "image_id": image_id,
        "file_name": file_name,
        "width": scene.image_size,
        "height": scene.image_size,
        "background": scene.background,
        "objects": [
            {"shape": o.shape, "colour": o.colour, "size": o.size,
             "centre": [round(o.centre[0], 3), round(o.centre[1], 3)],
             "radius": round(o.radius, 3), "rotation": round(o.rotation, 3), "rgb": list(o.rgb)}
            for o in scene.objects
        ],
    }


def make_scene(split: str, seed: int, index: int, image_size: int = 256):
    """(scene, image uint8 [S,S,3], captions) of one image."""
    rng = scene_rng(split, seed, index)
    scene = sample_scene(rng, image_size)
    return scene, render(scene, rng), captions(scene)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_split(split: str, seed: int, count: int, out: str, image_size: int = 256,
                progress: bool = True) -> None:
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    images, annotations, metadata = [], [], []
    start = time.time()
    for i in range(count):
        scene, image, caps = make_scene(split, seed, i, image_size)
        name = f"{i:06d}.png"
        with open(os.path.join(out, "images", name), "wb") as f:
            f.write(png_bytes(image))
        images.append({"id": i, "file_name": name, "width": image_size, "height": image_size})
        for c in caps:
            annotations.append({"id": len(annotations), "image_id": i, "caption": c})
        metadata.append(scene_metadata(scene, i, name))
        if progress and (i + 1) % 500 == 0:
            print(f"scenes: {i + 1}/{count} ({(i + 1) / (time.time() - start):.0f} images/s)",
                  flush=True)
    info = {"description": "LightCap scenes", "split": split, "seed": seed, "count": count,
            "image_size": image_size}
    with open(os.path.join(out, "captions.json"), "w") as f:
        json.dump({"info": info, "type": "captions", "images": images,
                   "annotations": annotations}, f, indent=0)
    with open(os.path.join(out, "objects.json"), "w") as f:
        json.dump({"info": info, "images": metadata}, f, indent=0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=list(SPLITS), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = p.parse_args(argv)
    write_split(args.split, args.seed, args.count, args.out, args.size)


if __name__ == "__main__":
    main()
