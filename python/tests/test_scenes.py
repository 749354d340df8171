"""Scenes data (docs: ../shared/SCENES.md): determinism, grammar, template families, geometry."""

import json
import math
import re

import numpy as np
import pytest

from lightcap_train.data import scenes as S


def obj(shape="circle", colour="red", size="small", x=50.0, y=50.0, r=20.0):
    return S.SceneObject(shape, colour, size, (x, y), r, 0.0, S.COLOURS[colour])


def scene(*objects, background="white"):
    return S.Scene(background, tuple(sorted(objects, key=lambda o: o.centre[0])), 256)


def test_split_is_byte_identical_for_the_same_seed(tmp_path):
    S.write_split("test", 7, 6, str(tmp_path / "a"), image_size=64, progress=False)
    S.write_split("test", 7, 6, str(tmp_path / "b"), image_size=64, progress=False)
    S.write_split("test", 8, 6, str(tmp_path / "c"), image_size=64, progress=False)
    for name in ["captions.json", "objects.json"] + [f"images/{i:06d}.png" for i in range(6)]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "captions.json").read_bytes() != (tmp_path / "c" / "captions.json").read_bytes()
    coco = json.loads((tmp_path / "a" / "captions.json").read_text())
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 30
    assert {a["image_id"] for a in coco["annotations"]} == set(range(6))
    meta = json.loads((tmp_path / "a" / "objects.json").read_text())["images"]
    assert all(set(o) >= {"shape", "colour", "size", "centre", "radius", "rotation"}
               for m in meta for o in m["objects"])


def test_splits_use_disjoint_streams():
    a = S.make_scene("train", 5, 0)[2]
    b = S.make_scene("test", 5, 0)[2]
    c = S.make_scene("val", 5, 0)[2]
    assert a != b and b != c and a != c


def test_geometry_and_image():
    counts = {1: 0, 2: 0, 3: 0, 4: 0}
    for i in range(300):
        sc, image, _ = S.make_scene("train", 3, i, image_size=128)
        counts[len(sc.objects)] += 1
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        xs = [o.centre[0] for o in sc.objects]
        assert xs == sorted(xs)
        for o in sc.objects:
            lo, hi = S.SIZES[o.size]
            assert lo * 128 <= o.radius <= hi * 128
            assert o.radius <= o.centre[0] <= 128 - o.radius and o.radius <= o.centre[1] <= 128 - o.radius
            assert abs(o.rotation) <= 20 and (o.rotation == 0 or o.shape not in ("circle", "ring"))
            assert all(abs(c - b) <= 12 for c, b in zip(o.rgb, S.COLOURS[o.colour]))
        for i1, a in enumerate(sc.objects):
            for b in sc.objects[i1 + 1:]:
                assert math.dist(a.centre, b.centre) > a.radius + b.radius
    assert all(v > 30 for v in counts.values()), counts


def test_rendering_draws_the_shape_antialiased_with_noise():
    sc = scene(obj("square", "blue", "large", 64, 64, 40), background="black")
    image = S.render(sc, np.random.default_rng(0)).astype(float)
    centre = image[60:68, 60:68].mean((0, 1))
    assert np.allclose(centre, S.COLOURS["blue"], atol=3)
    corner = image[:8, :8].reshape(-1, 3)
    assert np.allclose(corner.mean(0), S.BACKGROUNDS["black"], atol=2)
    assert 3.0 < corner.std(0).mean() < 5.0  # sigma-4 noise
    clean = S.render(sc, np.random.default_rng(0)) - 0  # edge pixels mix the two colours
    blue = clean[..., 2].astype(float)
    edge = blue[64, :].tolist()
    assert any(40 < v < 200 for v in edge), "no intermediate (anti-aliased) value on the edge"
    ring = S.render(scene(obj("ring", "red", "large", 64, 64, 40), background="white"),
                    np.random.default_rng(0)).astype(float)
    assert np.allclose(ring[62:66, 62:66].mean((0, 1)), S.BACKGROUNDS["white"], atol=4)  # the hole
    assert np.allclose(ring[64, 30:36].mean(0), S.COLOURS["red"], atol=4)


def test_articles_and_single_object_templates():
    caps = S.captions(scene(obj("star", "orange", "large"), background="gray"))
    assert caps == ["a large orange star", "an orange star on a gray background",
                    "there is a large orange star in the picture", "a single orange star",
                    "one large star that is orange"]


def test_two_object_relations_and_inverse():
    a, b = obj("circle", "red", "small", 40, 100), obj("cross", "blue", "large", 200, 120)
    caps = S.captions(scene(b, a))
    assert caps == ["a small red circle and a large blue cross",
                    "a small red circle to the left of a large blue cross",
                    "two shapes: a small red circle and a large blue cross",
                    "a red circle to the left of a blue cross",
                    "a large blue cross to the right of a small red circle"]
    above = S.captions(scene(obj("ring", "pink", x=100, y=20), obj("star", "cyan", x=110, y=200)))
    assert above[1] == "a small pink ring above a small cyan star"
    assert above[4] == "a small cyan star below a small pink ring"
    below = S.captions(scene(obj("ring", "pink", x=100, y=220), obj("star", "cyan", x=110, y=20)))
    assert below[3] == "a pink ring below a cyan star"


def test_identical_objects_are_grouped_with_plurals():
    caps = S.captions(scene(obj("cross", "blue", "large", 40, 60), obj("cross", "blue", "large", 200, 60)))
    assert caps[0] == "two large blue crosses"
    assert caps[2] == "two shapes: two large blue crosses"
    assert caps[1] == "a large blue cross to the left of a large blue cross"
    three = scene(obj("circle", "red", x=20), obj("star", "green", "large", x=120),
                  obj("circle", "red", x=220))
    caps = S.captions(three)
    assert caps[0] == "three shapes: two small red circles and a large green star"
    assert caps[2] == "two red circles and a green star"
    four = scene(*[obj("hexagon", "yellow", x=20 + 60 * i) for i in range(3)], obj("ring", "orange", "large", x=230, r=55))
    caps = S.captions(four)
    assert caps[0] == "four shapes: three small yellow hexagons and a large orange ring"
    assert caps[3] == "four shapes including a large orange ring"
    assert caps[4] == "a small yellow hexagon to the left of a small yellow hexagon and two more"


FAMILIES = {
    1: [r"an? \w+ \w+ \w+", r"an? \w+ \w+ on an? \w+ background",
        r"there is an? \w+ \w+ \w+ in the picture", r"a single \w+ \w+", r"one \w+ \w+ that is \w+"],
    2: [r"(an? \w+ \w+ \w+ and an? \w+ \w+ \w+|two \w+ \w+ \w+)", r"an? \w+ \w+ \w+ (REL) an? \w+ \w+ \w+",
        r"two shapes: (an? \w+ \w+ \w+ and an? \w+ \w+ \w+|two \w+ \w+ \w+)",
        r"an? \w+ \w+ (REL) an? \w+ \w+", r"an? \w+ \w+ \w+ (REL) an? \w+ \w+ \w+"],
    3: [r"(three|four) shapes: .+", r"(three|four) shapes on an? \w+ background", r"(an?|two|three|four) \w+ \w+.*",
        r"(three|four) shapes including an? \w+ \w+ \w+", r"an? \w+ \w+ \w+ (REL) an? \w+ \w+ \w+ and (one|two) more"],
}


def test_every_template_family_is_used_and_words_are_in_the_vocabulary():
    rel = "to the left of|to the right of|above|below"
    seen = set()
    vocab = set(S.vocabulary())
    for i in range(200):
        sc, caps = S.sample_scene(S.scene_rng("val", 1, i)), None
        caps = S.captions(sc)
        assert len(caps) == 5 and len(set(caps)) == 5
        n = min(len(sc.objects), 3)
        for family, (pattern, cap) in enumerate(zip(FAMILIES[n], caps)):
            assert re.fullmatch(pattern.replace("REL", rel), cap), (family, cap)
            assert cap == cap.lower() and not cap.endswith(".")
            words = cap.split()
            for w, nxt in zip(words, words[1:]):
                if w in ("a", "an"):
                    assert (w == "an") == (nxt[0] in "aeiou"), cap
            seen.add((len(sc.objects), family))
            assert set(cap.replace(":", " :").replace(",", " ,").split()) <= vocab, cap
    assert seen == {(n, f) for n in (1, 2, 3, 4) for f in range(5)}


def test_concepts_and_vocabulary():
    assert len(S.CONCEPTS) == 25 and len(set(S.CONCEPTS)) == 25
    v = S.vocabulary()
    assert v[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(v) == len(set(v)) and set(S.CONCEPTS) <= set(v)


def test_cli_writes_files(tmp_path):
    S.main(["--split", "test", "--seed", "1", "--count", "2", "--out", str(tmp_path), "--size", "32"])
    assert (tmp_path / "images" / "000001.png").exists()
    from PIL import Image
    assert Image.open(tmp_path / "images" / "000000.png").size == (32, 32)
