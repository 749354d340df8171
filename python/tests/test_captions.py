"""Captioned image sets (data/captions.py), concept mining (data/concepts.py) and the caption
folder test data (tools/caption_folder.py)."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from lightcap_train.data import captions as C
from lightcap_train.data import concepts as K
from lightcap_train.reference.preprocess import load_image
from lightcap_train.tools import caption_folder as F

COUNT, SEED = 32, 7


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("captions") / "set"
    summary = F.write_caption_folder(str(out), COUNT, SEED)
    return out, summary


def coco_splits(out):
    return (C.load_coco(str(out / "captions_train.json"), str(out / "images"), "train"),
            C.load_coco(str(out / "captions_val.json"), str(out / "images"), "val"))


def by_id(split):
    return {i: (p, r) for i, p, r in zip(split.image_ids, split.paths, split.references)}


# ----------------------------------------------------------------------------------------------
# Loading the caption folder


def test_load_coco_reads_the_folder(folder):
    out, summary = folder
    train, val = coco_splits(out)
    assert (len(train), len(val)) == (summary["coco"]["train"], summary["coco"]["val"])
    assert len(train) + len(val) == COUNT and len(val) >= COUNT // 5
    assert train.name == "train" and val.name == "val"
    assert not set(train.image_ids) & set(val.image_ids)
    for split in (train, val):
        assert split.image_ids == sorted(split.image_ids)  # the file lists them out of order
        assert all(3 <= len(r) <= 7 for r in split.references)
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in split.paths)
        assert [os.path.basename(p) for p in split.paths] == split.file_names
    counts = [len(r) for r in train.references + val.references]
    assert min(counts) == 3 and max(counts) == 7
    assert sum(counts) == summary["references"]
    assert summary["corrupt"] in train.paths
    assert any(p.endswith(".png") for p in train.paths + val.paths)
    long = {i for s in (train, val) for i, r in zip(s.image_ids, s.references)
            if any(len(c.split()) > 40 for c in r)}
    assert long == set(summary["long_references"]) and 2 <= len(long) <= 3
    # References keep capitals and punctuation (the recipe normalises them, not the loader).
    refs = [c for r in train.references for c in r]
    assert all(c[0].isupper() for c in refs) and any(c.endswith(".") for c in refs)


def test_load_karpathy_matches_coco(folder):
    out, summary = folder
    train, val = coco_splits(out)
    splits = C.load_karpathy(str(out / "dataset_coco.json"), str(out))
    assert set(splits) == {"train", "val", "test"}
    assert len(splits["train"]) == summary["karpathy"]["train"] + summary["karpathy"]["restval"]
    assert (len(splits["val"]), len(splits["test"])) == (summary["karpathy"]["val"],
                                                         summary["karpathy"]["test"])
    raw = json.loads((out / "dataset_coco.json").read_text())["images"]
    restval = {e["cocoid"] for e in raw if e["split"] == "restval"}
    assert restval and restval <= set(splits["train"].image_ids)
    # The same image has the same id, path and references in both formats.
    assert by_id(splits["train"]) == by_id(train)
    assert by_id(splits["val"]) | by_id(splits["test"]) == by_id(val)
    assert splits["train"].file_names[0].startswith("images/")


def test_karpathy_imgid_fallback_no_filepath_and_empty_splits(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": [
        {"filename": "b.jpg", "imgid": 5, "split": "restval", "sentences": [{"raw": "Two cats."}]},
        {"filename": "a.jpg", "imgid": 2, "split": "train",
         "sentences": [{"raw": "A dog.", "tokens": ["a", "dog"]}, {"tokens": ["a", "puppy"]}]},
    ]}))
    splits = C.load_karpathy(str(path), str(tmp_path / "root"))
    assert list(splits) == ["train"]  # no val or test images: those splits are left out
    s = splits["train"]
    assert s.image_ids == [2, 5] and s.file_names == ["a.jpg", "b.jpg"]
    assert s.paths == [str(tmp_path / "root" / "a.jpg"), str(tmp_path / "root" / "b.jpg")]
    assert s.references == [["A dog.", "a puppy"], ["Two cats."]]


IMG = {"id": 1, "file_name": "a.jpg"}
ANN = {"id": 10, "image_id": 1, "caption": "A dog."}

BAD_COCO = [
    ("not json", "{'images': ", "not JSON"),
    ("not an object", "[]", "top level"),
    ("no images", json.dumps({"annotations": [ANN]}), "no 'images'"),
    ("no annotations", json.dumps({"images": [IMG]}), "no 'annotations'"),
    ("images not a list", json.dumps({"images": {"1": IMG}, "annotations": []}), "not a list"),
    ("image without id", json.dumps({"images": [{"file_name": "a.jpg"}], "annotations": []}),
     "no integer 'id'"),
    ("string id", json.dumps({"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []}),
     "no integer 'id'"),
    ("image without file_name", json.dumps({"images": [{"id": 1}], "annotations": [ANN]}),
     "image 1 (images[0]) has no 'file_name'"),
    ("duplicate ids", json.dumps({"images": [IMG, {"id": 1, "file_name": "b.jpg"}],
                                  "annotations": [ANN]}), "duplicate image id 1"),
    ("unknown image", json.dumps({"images": [IMG], "annotations": [ANN, {"id": 11, "image_id": 9,
                                                                         "caption": "x"}]}),
     "annotation 11 refers to unknown image id 9"),
    ("annotation without image_id", json.dumps({"images": [IMG], "annotations": [{"caption": "x"}]}),
     "annotations[0] has no integer 'image_id'"),
    ("empty caption", json.dumps({"images": [IMG], "annotations": [{**ANN, "caption": "  "}]}),
     "annotation 10 (image 1) has no caption"),
    ("numeric caption", json.dumps({"images": [IMG], "annotations": [{**ANN, "caption": 5}]}),
     "has no caption"),
    ("missing caption", json.dumps({"images": [IMG], "annotations": [{"id": 10, "image_id": 1}]}),
     "has no caption"),
    ("image without captions", json.dumps({"images": [IMG, {"id": 2, "file_name": "b.jpg"}],
                                           "annotations": [ANN]}), "image 2 ('b.jpg') has no caption"),
]


@pytest.mark.parametrize("text,problem", [c[1:] for c in BAD_COCO], ids=[c[0] for c in BAD_COCO])
def test_malformed_coco_names_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "bad_captions.json"
    path.write_text(text)
    with pytest.raises(C.DataSetError) as e:
        C.load_coco(str(path), str(tmp_path))
    assert str(path) in str(e.value) and problem in str(e.value)
    assert isinstance(e.value, ValueError)


def test_missing_caption_file_is_a_data_set_error(tmp_path):
    with pytest.raises(C.DataSetError, match="nothing.json: cannot read"):
        C.load_coco(str(tmp_path / "nothing.json"), str(tmp_path))
    with pytest.raises(C.DataSetError, match="nothing.json: cannot read"):
        C.load_karpathy(str(tmp_path / "nothing.json"), str(tmp_path))


def kimg(**changes):
    entry = {"filepath": "val2014", "filename": "a.jpg", "cocoid": 1, "split": "train",
             "sentences": [{"raw": "A dog.", "tokens": ["a", "dog"]}]}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


BAD_KARPATHY = [
    ("not json", "nope", "not JSON"),
    ("no images", json.dumps({"dataset": "coco"}), "no 'images'"),
    ("no filename", json.dumps({"images": [kimg(filename=None)]}), "images[0] has no 'filename'"),
    ("no id", json.dumps({"images": [kimg(cocoid=None)]}), "'a.jpg' (images[0]) has no integer"),
    ("bad split", json.dumps({"images": [kimg(split="dev")]}), "split 'dev'"),
    ("no split", json.dumps({"images": [kimg(split=None)]}), "split None"),
    ("no sentences", json.dumps({"images": [kimg(sentences=[])]}), "has no caption"),
    ("sentence without raw", json.dumps({"images": [kimg(sentences=[{"raw": ""}])]}),
     "sentences[0] has no 'raw'"),
    ("sentence not an object", json.dumps({"images": [kimg(sentences=["A dog."])]}),
     "sentences[0] has no 'raw'"),
    ("duplicate ids", json.dumps({"images": [kimg(), kimg(filename="b.jpg", split="val")]}),
     "duplicate image id 1"),
    ("bad filepath", json.dumps({"images": [kimg(filepath=3)]}), "'filepath' that is not a string"),
]


@pytest.mark.parametrize("text,problem", [c[1:] for c in BAD_KARPATHY], ids=[c[0] for c in BAD_KARPATHY])
def test_malformed_karpathy_names_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "dataset_bad.json"
    path.write_text(text)
    with pytest.raises(C.DataSetError) as e:
        C.load_karpathy(str(path), str(tmp_path))
    assert str(path) in str(e.value) and problem in str(e.value)


# ----------------------------------------------------------------------------------------------
# Splits and image checks


def test_held_out_is_a_deterministic_disjoint_carve(folder):
    train, _ = coco_splits(folder[0])
    rest, held = C.held_out(train, 5, seed=3)
    again_rest, again_held = C.held_out(train, 5, seed=3)
    assert held.image_ids == again_held.image_ids and rest.image_ids == again_rest.image_ids
    assert len(held) == 5 and len(rest) == len(train) - 5
    assert held.name == "val" and rest.name == "train"
    assert sorted(held.image_ids + rest.image_ids) == train.image_ids
    assert held.image_ids == sorted(held.image_ids) and rest.image_ids == sorted(rest.image_ids)
    assert by_id(held).items() <= by_id(train).items()
    others = {tuple(C.held_out(train, 5, seed=s)[1].image_ids) for s in range(4, 8)}
    assert len(others | {tuple(held.image_ids)}) > 1
    for bad in (0, len(train)):
        with pytest.raises(ValueError):
            C.held_out(train, bad, seed=3)


def test_check_images_finds_the_corrupt_and_a_deleted_file(tmp_path):
    out = tmp_path / "set"
    summary = F.write_caption_folder(str(out), 8, SEED)
    train, val = coco_splits(out)
    deleted = train.paths[0]
    os.remove(deleted)
    assert deleted != summary["corrupt"]
    bad = C.check_images(train)
    assert [p for p, _ in bad] == [p for p in train.paths if p in (deleted, summary["corrupt"])]
    reasons = dict(bad)
    assert reasons[deleted] == "missing"
    assert reasons[summary["corrupt"]] and summary["corrupt"] not in reasons[summary["corrupt"]]
    assert C.check_images(train, workers=2) == bad
    assert C.check_images(val) == []
    clean = C.without(train, reasons)
    assert len(clean) == len(train) - 2 and C.check_images(clean) == []
    assert set(clean.image_ids) == set(train.image_ids) - {
        i for i, p in zip(train.image_ids, train.paths) if p in reasons}


def test_check_images_reports_odd_files_in_split_order(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 3), (1, 2, 3)).save(good)
    wide = tmp_path / "wide.png"
    Image.new("L", (C.MAX_SIDE + 1, 1)).save(wide)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    paths = [str(wide), str(good), str(tmp_path), str(text), str(tmp_path / "gone.jpg")]
    split = C.CaptionSplit("x", list(range(5)), [os.path.basename(p) for p in paths], paths,
                           [["A thing."]] * 5)
    bad = C.check_images(split)
    assert [p for p, _ in bad] == [str(wide), str(tmp_path), str(text), str(tmp_path / "gone.jpg")]
    reasons = [r for _, r in bad]
    assert "absurd size" in reasons[0] and str(C.MAX_SIDE + 1) in reasons[0]
    assert reasons[1] == "not a file"
    assert "cannot identify image file" in reasons[2]
    assert reasons[3] == "missing"


def test_exif_rotated_images_load_upright(folder):
    out, summary = folder
    train, val = coco_splits(out)
    names = dict(zip(train.image_ids + val.image_ids, train.paths + val.paths))
    rotated = summary["exif_rotated"]
    assert len(rotated) >= COUNT // 6
    sideways = 0
    for image_id in rotated:
        path = names[image_id]
        index = int(os.path.basename(path)[:6])
        upright = np.asarray(F.upright_image(index, SEED), dtype=np.float32)
        with Image.open(path) as raw:
            assert raw.getexif().get(0x0112) in (3, 6, 8)
            stored = raw.convert("RGB")
        loaded = np.asarray(load_image(path), dtype=np.float32)
        assert loaded.shape == upright.shape
        assert np.abs(loaded - upright).mean() < 5  # JPEG loss only
        if stored.size != (upright.shape[1], upright.shape[0]):
            sideways += 1
            stored = stored.resize((upright.shape[1], upright.shape[0]))
        assert np.abs(np.asarray(stored, dtype=np.float32) - upright).mean() > 10
    assert sideways >= 2


# ----------------------------------------------------------------------------------------------
# Concepts


@pytest.mark.parametrize("plural,singular", [
    ("dogs", "dog"), ("boxes", "box"), ("buses", "bus"), ("glasses", "glass"), ("benches", "bench"),
    ("ponies", "pony"), ("leaves", "leaf"), ("knives", "knife"), ("people", "person"),
    ("men", "man"), ("women", "woman"), ("children", "child"), ("mice", "mouse"),
    ("teeth", "tooth"), ("feet", "foot"), ("geese", "goose"), ("sheep", "sheep"),
    ("glass", "glass"), ("bus", "bus"), ("tennis", "tennis"), ("dog", "dog"), ("horses", "horse"),
    ("dishes", "dish"), ("crosses", "cross"), ("ties", "tie"), ("gloves", "glove"),
])
def test_fold_plural(plural, singular):
    assert K.fold_plural(plural) == singular
    assert K.fold_plural(singular) == singular


def test_concept_words():
    assert K.concept_words("Two dogs on a bench.") == ["dog", "bench"]
    assert K.concept_words("A dog sits.") == ["dog", "sit"]
    assert K.concept_words("The PEOPLE'S photo of 3 glasses, near two more glasses!") == [
        "person", "glass", "glass"]
    assert K.concept_words("It's a picture of an image: a view") == []
    assert K.concept_words("x y zebras") == ["zebra"]
    assert {"the", "a", "of", "on", "is", "two", "one", "image", "picture", "photo", "view",
            "they", "and"} <= K.STOP_WORDS


def test_mine_concepts_counts_images_not_mentions():
    refs = [["Two dogs on a bench.", "A dog sits."], ["A cat."]]
    # every word is named by one image: ties are alphabetical
    assert K.mine_concepts(refs, 2) == ["bench", "cat"]
    assert K.mine_concepts(refs, 10) == ["bench", "cat", "dog", "sit"]
    refs = [["A dog.", "Dogs, dogs, dogs.", "A bench."], ["A dog and a cat."], ["Cats."], ["A cat."]]
    assert K.mine_concepts(refs, 10) == ["cat", "dog", "bench"]
    assert K.mine_concepts(refs, 10, min_images=2) == ["cat", "dog"]
    assert K.mine_concepts(refs, 1, min_images=3) == ["cat"]
    assert K.mine_concepts(refs, 5, min_images=4) == []


def test_image_labels_and_min_refs():
    refs = [["Two dogs on a bench.", "A dog sits."], ["A cat."], []]
    concepts = ["dog", "cat", "bench", "sit"]
    one = K.image_labels(refs, concepts)
    assert one.dtype == np.float32 and one.shape == (3, 4)
    np.testing.assert_array_equal(one, [[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    two = K.image_labels(refs, concepts, min_refs=2)
    np.testing.assert_array_equal(two, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])  # "A cat.": 1 of 1
    np.testing.assert_array_equal(K.image_labels(refs, concepts, min_refs=9), two)
    # stop words can be concepts; concepts are folded like captions; phrases match in a row
    refs = [["A circle above a square."], ["Fire hydrants near a red car."], ["A car, red."]]
    labels = K.image_labels(refs, ["above", "Dogs", "fire hydrant", "red car", "squares"])
    np.testing.assert_array_equal(labels, [[1, 0, 0, 0, 1], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match="min_refs"):
        K.image_labels(refs, ["dog"], min_refs=0)
    with pytest.raises(ValueError, match="same"):
        K.image_labels(refs, ["dog", "dogs"])
    with pytest.raises(ValueError, match="'1'"):
        K.image_labels(refs, ["dog", "1"])


def test_read_concepts(tmp_path):
    good = tmp_path / "concepts.txt"
    good.write_text("dog\n  cat  \n\nfire hydrant\n")
    assert K.read_concepts(str(good)) == ["dog", "cat", "fire hydrant"]
    dup = tmp_path / "dup.txt"
    dup.write_text("dog\ncat\n dog\n")
    with pytest.raises(ValueError, match=r"dup\.txt: line 3: concept 'dog' repeats line 1"):
        K.read_concepts(str(dup))
    for name, text in (("empty.txt", ""), ("blank.txt", "\n  \n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=rf"{name}: no concepts"):
            K.read_concepts(str(tmp_path / name))


def test_mined_concepts_of_the_folder(folder):
    train, _ = coco_splits(folder[0])
    concepts = K.mine_concepts(train.references, 30, min_images=2)
    assert {"shape", "background", "circle", "square"} & set(concepts)
    assert not set(concepts) & K.STOP_WORDS
    labels = K.image_labels(train.references, concepts, min_refs=2)
    assert labels.shape == (len(train), len(concepts)) and 0 < labels.mean() < 1


# ----------------------------------------------------------------------------------------------
# The caption folder writer


def tree(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def test_caption_folder_is_deterministic(tmp_path):
    a = F.write_caption_folder(str(tmp_path / "a"), 10, SEED)
    b = F.write_caption_folder(str(tmp_path / "b"), 10, SEED)
    c = F.write_caption_folder(str(tmp_path / "c"), 10, SEED + 1)
    ta, tb, tc = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert len(ta) == 10 + 4 and ta == tb
    assert ta["dataset_coco.json"] != tc["dataset_coco.json"]
    assert {k: v for k, v in a.items() if k not in ("out", "corrupt", "png")} == \
        {k: v for k, v in b.items() if k not in ("out", "corrupt", "png")}
    assert not (tmp_path / "a" / "objects.json").exists()
    assert c["count"] == 10


def test_caption_folder_refuses_a_foreign_folder(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        F.write_caption_folder(str(user), 8, SEED)
    assert os.listdir(user) == ["keep.txt"] and (user / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as e:
        F.main(["--out", str(user), "--count", "8"])
    assert e.value.code == 2
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        F.write_caption_folder(str(a_file), 8, SEED)
    # An empty folder is fine; a folder it wrote is rewritten, its own stale files removed only.
    own = tmp_path / "own"
    own.mkdir()
    F.write_caption_folder(str(own), 10, SEED)
    (own / "images" / "notes.txt").write_text("left alone")
    F.write_caption_folder(str(own), 8, SEED)
    assert sorted(os.listdir(own / "images")) == [f"{i:06d}.{'png' if i == 1 else 'jpg'}"
                                                  for i in range(8)] + ["notes.txt"]
    assert tree(own) == {**tree_of_fresh(tmp_path / "fresh"), "images/notes.txt": b"left alone"}
    with pytest.raises(ValueError, match="count"):
        F.write_caption_folder(str(tmp_path / "small"), 3, SEED)


def tree_of_fresh(path):
    F.write_caption_folder(str(path), 8, SEED)
    return tree(path)
