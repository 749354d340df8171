"""Objects data (docs/OBJECTS.md): the tables, determinism, captions, splits and styles."""

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from lightcap_train.data import objects as O

# English plurals and articles that a plain rule gets wrong; every other word of the table must
# follow the rule (so a typo in words.tsv fails here, not in a caption).
IRREGULAR_PLURALS = {
    "deer": "deer", "bison": "bison", "sheep": "sheep", "fish": "fish", "pufferfish": "pufferfish",
    "jellyfish": "jellyfish", "shrimp": "shrimp", "squid": "squid", "mouse": "mice",
    "goose": "geese", "cactus": "cacti", "leaf": "leaves", "knife": "knives", "scarf": "scarves",
    "snowman": "snowmen", "die": "dice", "mosquito": "mosquitoes", "mango": "mangoes",
    "tomato": "tomatoes", "potato": "potatoes", "volcano": "volcanoes", "tornado": "tornadoes",
}
ARTICLE_EXCEPTIONS = {"ufo": "a", "hourglass": "an"}
RELATIONS = ("to the left of", "to the right of", "above", "below")


def regular_plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        last = IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def emoji_groups() -> dict[str, str]:
    """Each fully-qualified emoji of Unicode's emoji-test.txt (Debian unicode-data) -> its group."""
    groups, group = {}, ""
    with open("/usr/share/unicode/emoji/emoji-test.txt", encoding="utf-8") as f:
        for line in f:
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif "; fully-qualified" in line:
                code = line.split(";")[0].split()
                groups["".join(chr(int(c, 16)) for c in code)] = group
    return groups


def test_word_table_is_large_varied_and_grammatical():
    things = O.things()
    words = [t.word for t in things]
    assert len(set(words)) == len(words) >= 400
    categories = Counter(t.category for t in things)
    for c in ("animals", "plants", "food", "drink", "vehicles", "tools", "household", "clothing",
              "sports"):
        assert categories[c] >= 10, (c, categories[c])
    for t in things:
        assert re.fullmatch(r"[a-z]+( [a-z]+)?", t.word), t.word
        assert t.plural == regular_plural(t.word), (t.word, t.plural)
        assert t.article == ARTICLE_EXCEPTIONS.get(t.word, "an" if t.word[0] in "aeiou" else "a"), t.word
        group = emoji_groups()[t.emoji]
        assert group not in ("Smileys & Emotion", "People & Body", "Flags", "Symbols"), (t.name, group)
        assert not re.search(r"(face$|clock)", t.name), t.name
    # no object word is also a word of a background phrase (a caption must say which is which)
    scene_words = {w for b in O.backgrounds() for p in (b.phrase, b.place, b.alt_place) for w in p.split()}
    assert not {w for t in things for w in (t.word + " " + t.plural).split()} & scene_words


@pytest.mark.parametrize("style", ["noto", "openmoji", "twemoji"])
def test_every_thing_renders_in_every_style(style):
    for t in O.things():
        g = O.glyph(t.emoji, style)
        assert g.mode == "RGBA" and max(g.size) == O.GLYPH_SIDE, (t.word, style)
        assert g.getchannel("A").getextrema()[1] == 255, (t.word, style)


def test_backgrounds_are_the_allowed_packages_and_load():
    allowed = {"lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
               "plasma-workspace-wallpapers", "scikit-image"}
    assert len(O.backgrounds()) >= 10
    for b in O.backgrounds():
        assert b.package in allowed, b
        image = O.background_image(b.source)
        assert min(image.size) == O.BACKGROUND_SIDE and image.mode == "RGB", b.source


def test_split_is_byte_identical_for_the_same_seed(tmp_path):
    for name, seed, workers in (("a", 7, 1), ("b", 7, 2), ("c", 8, 1)):
        O.write_split("test", seed, 5, str(tmp_path / name), words=60, size=96, progress=False, workers=workers)
    for name in ["captions.json", "objects.json", "instances.json", "concepts.txt"] + \
            [f"images/{i:06d}.jpg" for i in range(5)]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "captions.json").read_bytes() != (tmp_path / "c" / "captions.json").read_bytes()
    coco = json.loads((tmp_path / "a" / "captions.json").read_text())
    assert len(coco["images"]) == 5 and len(coco["annotations"]) == 25
    assert len(coco["info"]["words"]) == 60


def test_an_existing_data_set_is_never_overwritten(tmp_path):
    O.write_split("val", 1, 2, str(tmp_path), size=64, progress=False)
    before = (tmp_path / "captions.json").read_bytes()
    with pytest.raises(O.ObjectsError, match="already holds"):
        O.write_split("val", 2, 2, str(tmp_path), size=64, progress=False)
    assert (tmp_path / "captions.json").read_bytes() == before
    r = subprocess.run([sys.executable, "-m", "lightcap_train.data.objects", "--split", "val",
                        "--seed", "1", "--count", "2", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "already holds" in r.stderr


def test_words_option_picks_distinct_things_the_same_in_every_split():
    few = O.distinct_words(150)
    assert len({t.word for t in few}) == 150
    assert [t.word for t in few] == [t.word for t in O.distinct_words(150)]
    assert {t.word for t in O.distinct_words(40)} != {t.word for t in O.things()[:40]}
    with pytest.raises(O.ObjectsError, match="between 1 and"):
        O.distinct_words(len(O.things()) + 1)


def expected_phrase(thing: O.Thing, n: int) -> str:
    return f"{thing.article} {thing.word}" if n == 1 else f"{['', 'one', 'two', 'three', 'four'][n]} {thing.plural}"


def test_captions_name_every_object_with_counts_background_and_relation():
    seen_counts, seen_repeats, relations = Counter(), 0, 0
    for split in O.SPLITS:
        for i in range(60):
            picture, image = O.compose(split, 3, i, list(O.things()), size=128)
            assert image.size == (128, 128) and image.mode == "RGB"
            objs = picture.objects
            seen_counts[len(objs)] += 1
            assert [o.centre[0] for o in objs] == sorted(o.centre[0] for o in objs)
            for o in objs:
                assert 0 <= o.box[0] < o.box[2] <= 128 and 0 <= o.box[1] < o.box[3] <= 128
                assert o.style in O.SPLIT_STYLES[split]
            counts = Counter(o.thing for o in objs)
            seen_repeats += any(n > 1 for n in counts.values())
            refs = O.captions(picture)
            assert len(refs) == 5 and len(set(refs)) == 5
            for ref in refs:
                assert ref == ref.lower() and "  " not in ref and not ref.endswith(".")
                for thing, n in counts.items():
                    assert expected_phrase(thing, n) in ref, (ref, thing.word, n)
            bg = picture.background
            assert sum(bg.place in r or bg.alt_place in r or bg.phrase in r for r in refs) >= 4
            if len(objs) == 2 and len(counts) == 2:
                a, b = objs
                dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
                rel = ("to the left of" if dx < 0 else "to the right of") if abs(dx) > abs(dy) else \
                      ("above" if dy < 0 else "below")
                assert f"{expected_phrase(a.thing, 1)} {rel} {expected_phrase(b.thing, 1)}" in refs[0]
                relations += 1
            else:
                assert not any(f" {r} " in ref for ref in refs for r in RELATIONS if r != "above" and r != "below")
    assert all(seen_counts[n] >= 20 for n in (1, 2, 3, 4)), seen_counts
    assert seen_repeats >= 15 and relations >= 15


def test_every_split_and_style_present(tmp_path):
    styles = {}
    for split in O.SPLITS:
        out = tmp_path / split
        O.write_split(split, 11, 12, str(out), words=80, size=64, progress=False)
        meta = json.loads((out / "objects.json").read_text())
        assert meta["info"]["split"] == split
        styles[split] = {o["style"] for m in meta["images"] for o in m["objects"]}
        assert all(set(o) >= {"name", "emoji", "style", "box", "rotation"}
                   for m in meta["images"] for o in m["objects"])
        assert all(m["background"]["phrase"] for m in meta["images"])
    for split in ("train", "val", "test"):
        assert styles[split] == {"noto", "openmoji"}, (split, styles[split])
    assert styles["test-style"] == {"twemoji"}


def test_scores_read_things_counts_and_backgrounds_from_captions(tmp_path):
    from lightcap_train.data.objects.score import main, named_things, object_scores

    assert named_things("a hot dog and two dogs by a forest stream") == {"hot dog": 1, "dog": 2}
    assert named_things("three sheep, a mouse and mice") == {"sheep": 3, "mouse": 1}
    assert named_things("dogs on a patch of moss") == {"dog": 0}
    O.write_split("test", 5, 40, str(tmp_path), words=100, size=64, progress=False)
    objects = json.loads((tmp_path / "objects.json").read_text())
    coco = json.loads((tmp_path / "captions.json").read_text())
    first = {}
    for a in coco["annotations"]:
        first.setdefault(a["image_id"], a["caption"])
    perfect = object_scores(first, objects["images"])
    assert perfect == {"object_precision": 1.0, "object_recall": 1.0, "object_f1": 1.0,
                       "count_accuracy": 1.0, "background_accuracy": 1.0}
    # one image's things replaced by a wrong one, another's count and background wrong
    m0, m1 = objects["images"][0], objects["images"][1]
    wrong = dict(first)
    truth = {o["name"] for o in m0["objects"]}
    other = next(t for t in O.things() if t.word not in truth)
    wrong[m0["image_id"]] = f"{other.article} {other.word} {m0['background']['phrase']}"
    wrong[m1["image_id"]] = " and ".join(f"four {next(t.plural for t in O.things() if t.word == o['name'])}"
                                         for o in m1["objects"])
    s = object_scores(wrong, objects["images"])
    n_true = sum(len({o["name"] for o in m["objects"]}) for m in objects["images"])
    assert s["object_precision"] == pytest.approx((n_true - len(truth)) / (n_true - len(truth) + 1))
    assert s["object_recall"] == pytest.approx((n_true - len(truth)) / n_true)
    assert s["background_accuracy"] == pytest.approx(39 / 40)
    assert s["count_accuracy"] < 1.0
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in first.items()]))
    assert main(["--data", str(tmp_path), "--results", str(results), "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["object_f1"] == 1.0 and scores["CIDEr"] > 1.0
