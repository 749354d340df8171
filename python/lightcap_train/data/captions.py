"""Captioned image sets in the field's formats: COCO captions and Karpathy's split file.

    split = load_coco("annotations/captions_train2014.json", "train2014")
    splits = load_karpathy("dataset_coco.json", "coco")  # {"train", "val", "test"}

A split is a list of images (id, file name, absolute path) with their raw reference captions
(as many as the file gives, at least one). Loading checks the structure of the file and names
the file and the problem in a `DataSetError`; `check_images` then finds the image files that
are missing or cannot be decoded, so that a training run can drop them (`without`) before it
starts rather than fail hours in. Nothing here ever writes into the data folders.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lightcap_train.data.concepts import image_labels, mine_concepts, read_concepts
from lightcap_train.data.features import ImageFiles
from lightcap_train.data.regions import BoxRegions, load_instances
from lightcap_train.reference.convert import read_bert_config
from lightcap_train.reference.preprocess import load_image
from lightcap_train.reference.wordpiece import WordPiece, basic_tokenize

#: Longest accepted image side in pixels; larger files are rejected by `check_images` (a
#: caption set of photos has nothing near it, a decompression bomb or a broken header does).
MAX_SIDE = 20000

#: The split names of Karpathy's file, and the split each one is loaded into.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


class DataSetError(ValueError):
    """A caption file that does not have the expected structure (the message names the file)."""


@dataclass
class CaptionSplit:
    name: str
    image_ids: list[int]
    file_names: list[str]  # as given by the caption file (Karpathy: filepath/filename)
    paths: list[str]  # absolute image paths
    references: list[list[str]]  # raw reference captions, at least one per image

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, indices) -> CaptionSplit:
        """The images at `indices`, in that order, under the same name."""
        indices = [int(i) for i in indices]
        return CaptionSplit(self.name, [self.image_ids[i] for i in indices],
                            [self.file_names[i] for i in indices], [self.paths[i] for i in indices],
                            [list(self.references[i]) for i in indices])


# ----------------------------------------------------------------------------------------------
# Reading caption files


def _read_json(path: str):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataSetError(f"{path}: cannot read the file ({e.strerror or e})") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataSetError(f"{path}: not JSON ({e})") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_caption(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _list_field(data, key: str, path: str) -> list:
    if not isinstance(data, dict):
        raise DataSetError(f"{path}: expected a JSON object at the top level, found "
                           f"{type(data).__name__}")
    if key not in data:
        raise DataSetError(f"{path}: no {key!r} list")
    if not isinstance(data[key], list):
        raise DataSetError(f"{path}: {key!r} is not a list")
    return data[key]


def load_coco(annotations: str, images: str, name: str = "train") -> CaptionSplit:
    """A COCO captions file ({"images": [{"id", "file_name"}], "annotations": [{"image_id",
    "caption"}]}) with its image folder; images sorted by id, references in file order."""
    data = _read_json(annotations)
    image_list = _list_field(data, "images", annotations)
    annotation_list = _list_field(data, "annotations", annotations)
    root = os.path.abspath(images)
    files: dict[int, str] = {}
    for n, entry in enumerate(image_list):
        if not isinstance(entry, dict):
            raise DataSetError(f"{annotations}: images[{n}] is not an object")
        if not _is_int(entry.get("id")):
            raise DataSetError(f"{annotations}: images[{n}] has no integer 'id'")
        image_id = entry["id"]
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DataSetError(f"{annotations}: image {image_id} (images[{n}]) has no 'file_name'")
        if image_id in files:
            raise DataSetError(f"{annotations}: duplicate image id {image_id} "
                               f"({files[image_id]!r} and {file_name!r})")
        files[image_id] = file_name
    refs: dict[int, list[str]] = {i: [] for i in files}
    for n, entry in enumerate(annotation_list):
        if not isinstance(entry, dict):
            raise DataSetError(f"{annotations}: annotations[{n}] is not an object")
        label = f"annotation {entry['id']}" if "id" in entry else f"annotations[{n}]"
        image_id = entry.get("image_id")
        if not _is_int(image_id):
            raise DataSetError(f"{annotations}: {label} has no integer 'image_id'")
        if image_id not in refs:
            raise DataSetError(f"{annotations}: {label} refers to unknown image id {image_id}")
        caption = entry.get("caption")
        if not _is_caption(caption):
            raise DataSetError(f"{annotations}: {label} (image {image_id}) has no caption: "
                               f"'caption' is {caption!r}, not a non-empty string")
        refs[image_id].append(caption)
    ids = sorted(files)
    for image_id in ids:
        if not refs[image_id]:
            raise DataSetError(f"{annotations}: image {image_id} ({files[image_id]!r}) has no "
                               "caption")
    return CaptionSplit(name, ids, [files[i] for i in ids],
                        [os.path.join(root, files[i]) for i in ids], [refs[i] for i in ids])


def _karpathy_sentence(sentence, path: str, label: str, k: int) -> str:
    """The raw text of a sentence entry; its tokens joined by spaces when it has no raw text."""
    if isinstance(sentence, dict):
        if _is_caption(sentence.get("raw")):
            return sentence["raw"]
        tokens = sentence.get("tokens")
        if "raw" not in sentence and isinstance(tokens, list) and tokens \
                and all(isinstance(t, str) for t in tokens):
            return " ".join(tokens)
    raise DataSetError(f"{path}: {label} sentences[{k}] has no 'raw' caption (a non-empty "
                       "string)")


def load_karpathy(path: str, image_root: str) -> dict[str, CaptionSplit]:
    """Karpathy's split file (dataset_coco.json, also dataset_flickr8k/30k.json): "train" (with
    "restval"), "val" and "test" splits, each sorted by image id; a split without images is
    left out. Image path = image_root/filepath/filename; image id = cocoid, else imgid."""
    data = _read_json(path)
    image_list = _list_field(data, "images", path)
    root = os.path.abspath(image_root)
    entries: dict[str, list[tuple[int, str, list[str]]]] = {}
    seen: dict[int, str] = {}
    for n, entry in enumerate(image_list):
        if not isinstance(entry, dict):
            raise DataSetError(f"{path}: images[{n}] is not an object")
        file_name = entry.get("filename")
        if not isinstance(file_name, str) or not file_name:
            raise DataSetError(f"{path}: images[{n}] has no 'filename'")
        label = f"image {file_name!r} (images[{n}])"
        folder = entry.get("filepath", "")
        if not isinstance(folder, str):
            raise DataSetError(f"{path}: {label} has a 'filepath' that is not a string")
        key = "cocoid" if "cocoid" in entry else "imgid"
        image_id = entry.get(key)
        if not _is_int(image_id):
            raise DataSetError(f"{path}: {label} has no integer 'cocoid' or 'imgid'")
        split = entry.get("split")
        if split not in KARPATHY_SPLITS:
            raise DataSetError(f"{path}: {label} has split {split!r}, not one of "
                               f"{', '.join(KARPATHY_SPLITS)}")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DataSetError(f"{path}: {label} has no caption ('sentences' is empty or missing)")
        refs = [_karpathy_sentence(s, path, label, k) for k, s in enumerate(sentences)]
        relative = os.path.join(folder, file_name) if folder else file_name
        if image_id in seen:
            raise DataSetError(f"{path}: duplicate image id {image_id} ({seen[image_id]!r} and "
                               f"{relative!r})")
        seen[image_id] = relative
        entries.setdefault(KARPATHY_SPLITS[split], []).append((image_id, relative, refs))
    out = {}
    for name in ("train", "val", "test"):
        if name in entries:
            rows = sorted(entries[name], key=lambda r: r[0])
            out[name] = CaptionSplit(name, [r[0] for r in rows], [r[1] for r in rows],
                                     [os.path.join(root, r[1]) for r in rows], [r[2] for r in rows])
    return out


# ----------------------------------------------------------------------------------------------
# Carving and cleaning splits


def held_out(split: CaptionSplit, count: int, seed: int,
             name: str = "val") -> tuple[CaptionSplit, CaptionSplit]:
    """(rest, held): `count` images drawn with `seed` (for a caption file given without a
    validation file). Both keep the split's order; the same split and seed give the same carve."""
    if not 0 < count < len(split):
        raise ValueError(f"cannot hold out {count} of the {len(split)} images of {split.name!r} "
                         "(at least one must remain on each side)")
    chosen = np.random.default_rng(seed).permutation(len(split))[:count]
    held = np.zeros(len(split), dtype=bool)
    held[chosen] = True
    rest = split.subset(np.flatnonzero(~held))
    kept = split.subset(np.flatnonzero(held))
    kept.name = name
    return rest, kept


def without(split: CaptionSplit, bad_paths) -> CaptionSplit:
    """The split less the images whose path is in `bad_paths` (e.g. those of `check_images`)."""
    bad = set(bad_paths)
    return split.subset([i for i, p in enumerate(split.paths) if p not in bad])


def image_problem(path: str) -> str | None:
    """Why the image at `path` cannot be used ("missing", the decoder's message, ...), or None.

    The header is read first so that an absurd size is reported without decoding it; then the
    file is decoded fully, upright and RGB, exactly as training will read it. Pillow's plugins
    raise many exception types on a damaged file (OSError, SyntaxError, ValueError, EOFError,
    struct.error, DecompressionBombError, ...): any exception is a reason to drop the image.
    """
    if not os.path.exists(path):  # also a dangling symbolic link
        return "missing"
    if not os.path.isfile(path):
        return "not a file"
    try:
        with Image.open(path) as img:
            width, height = img.size
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            return f"absurd size {width}x{height} (each side must be 1..{MAX_SIDE} pixels)"
        load_image(path)
    except Exception as e:  # noqa: BLE001 -- see the docstring
        return _reason(e, path)
    return None


def _reason(error: Exception, path: str) -> str:
    """The exception's message without the path (the caller reports the path beside it)."""
    text = str(error).replace(f"'{path}'", "").replace(path, "").strip(" :")
    return text or type(error).__name__


def check_images(split: CaptionSplit, workers: int = 1) -> list[tuple[str, str]]:
    """(path, reason) of every image of the split that is missing, unreadable, corrupt or of an
    absurd size, in the split's order. `workers` > 1 decodes in a pool of forked processes."""
    if workers > 1 and len(split) > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            problems = pool.map(image_problem, split.paths,
                                chunksize=max(1, min(64, len(split) // (4 * workers))))
    else:
        problems = [image_problem(p) for p in split.paths]
    return [(p, r) for p, r in zip(split.paths, problems) if r is not None]


# ----------------------------------------------------------------------------------------------
# The data set the recipe sees


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def mine_vocabulary(references: list[list[str]], size: int, required: list[str] = ()) -> list[str]:
    """A WordPiece vocabulary of whole words for a student trained without --bert: the special
    tokens, the `required` words (the concepts: every concept must be a token), then the `size`
    most frequent BERT-basic tokens of the captions (lowercased, punctuation apart), ties broken
    alphabetically. A word outside it is [UNK]."""
    counts = Counter(t for caps in references for c in caps for t in basic_tokenize(c, True))
    vocab = list(SPECIAL_TOKENS)
    for word in required:
        for piece in basic_tokenize(word, True):
            if piece not in vocab:
                vocab.append(piece)
    known = set(vocab)
    ranked = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in known]
    return vocab + ranked[:max(0, size - len(vocab))]


class CaptionData:
    """A captioned image set (COCO captions, Karpathy's file) for recipe.train, with the same
    methods as data.scenes_dataset.ScenesData. The data stage (`prepare`, main process) reads
    the caption files, checks every image, holds out a validation split where none is given,
    chooses the concepts and (without --bert) mines the vocabulary; the result is the run's
    DIR/data/final.pt, which every later stage and process reads. Reference captions are kept
    as written (any number per image); those longer than the caption segment are counted here
    and cut when batched."""

    kind = "captions"

    def __init__(self, r, run: str, log=print):
        self.r, self.run, self.log = r, run, log
        self._state = None

    # --- the data stage -------------------------------------------------------------------
    def read_splits(self) -> dict[str, CaptionSplit]:
        r = self.r
        if r.data == "karpathy":
            splits = load_karpathy(r.karpathy, r.image_root)
            if "train" not in splits:
                raise DataSetError(f"{r.karpathy}: no image of split train or restval")
        else:
            splits = {"train": load_coco(r.annotations, r.images, "train")}
            if r.val_annotations:
                splits["val"] = load_coco(r.val_annotations, r.val_images or r.images, "val")
            if r.test_annotations:
                splits["test"] = load_coco(r.test_annotations, r.test_images or r.images, "test")
        if "val" not in splits:
            train = splits["train"]
            count = min(r.val_count, max(1, len(train) // 5))
            self.log(f"data: no validation split given: {count} of the {len(train)} training images held out")
            splits["train"], splits["val"] = held_out(train, count, r.seed)
        seen: dict[int, str] = {}
        for name, split in splits.items():  # evaluation must not see training images
            for image_id in split.image_ids:
                if seen.setdefault(image_id, name) != name:
                    raise DataSetError(f"image id {image_id} is in both the {seen[image_id]} and the {name} split")
        return {name: splits[name] for name in ("train", "val", "test") if name in splits}

    def prepare(self, ctx) -> dict:
        r = self.r
        splits = self.read_splits()
        bad_all = []
        for name, split in splits.items():
            t0 = time.time()
            bad = check_images(split, r.workers)
            self.log(f"data: {name}: {len(split)} images checked in {time.time() - t0:.1f} s, {len(bad)} bad")
            for path, reason in bad:
                self.log(f"data: bad image {path}: {reason}")
            bad_all += [(name, path, reason) for path, reason in bad]
            if bad and r.skip_bad_images:
                splits[name] = without(split, [p for p, _ in bad])
        if bad_all:
            os.makedirs(os.path.join(self.run, "data"), exist_ok=True)
            listing = os.path.join(self.run, "data", "bad_images.tsv")
            with open(listing, "w") as f:
                f.writelines(f"{n}\t{p}\t{why}\n" for n, p, why in bad_all)
            if not r.skip_bad_images:
                raise DataSetError(f"{len(bad_all)} images are missing or unreadable (listed above and in {listing}); "
                                   "fix or remove them, or pass --skip-bad-images to train without them")
            self.log(f"data: {len(bad_all)} bad images left out (--skip-bad-images), listed in {listing}")
        train_refs = splits["train"].references
        if r.concepts_file:
            concepts = read_concepts(r.concepts_file)
        else:
            concepts = mine_concepts(train_refs, r.concept_count)
            if not concepts:
                raise DataSetError("no concept word found in the training captions (pass --concepts FILE)")
        vocab = None if r.bert else mine_vocabulary(train_refs, r.vocab_size, concepts)
        self._state = {"splits": {n: dataclasses.asdict(s) for n, s in splits.items()}, "vocab": vocab,
                       "concepts": concepts, "bad_images": bad_all, "regions": self.read_regions(splits["train"])}
        tok = self.tokenizer()
        unknown = [c for c in concepts if tok.token_id("[UNK]") in tok.encode(c)]
        if unknown:
            self.log(f"data: {len(unknown)} concepts have words outside the vocabulary ([UNK]): {', '.join(unknown[:10])}")
        limit = max(r.caption_tokens, r.max_length + 2) - 2
        for name, split in splits.items():
            lengths = np.array([len(tok.encode(c)) for refs in split.references for c in refs])
            per_image = np.array([len(refs) for refs in split.references])
            self.log(f"data: {name}: {len(split)} images, {per_image.min()}-{per_image.max()} references each "
                     f"(mean {per_image.mean():.2f}), {int((lengths > limit).sum())} of {len(lengths)} references "
                     f"longer than {limit} tokens are cut to {limit}")
        self.log(f"data: {len(concepts)} concepts ({'--concepts' if r.concepts_file else 'mined'}: "
                 f"{', '.join(concepts[:12])}{' ...' if len(concepts) > 12 else ''}), vocabulary "
                 f"{len(tok)} ({'--bert' if r.bert else 'mined'})")
        return self._state

    def read_regions(self, train: CaptionSplit) -> dict | None:
        """--instances: the categories and the boxes of the training images."""
        if not self.r.instances:
            return None
        categories, boxes = load_instances(self.r.instances)
        train_boxes = {i: boxes[i] for i in train.image_ids if i in boxes}
        self.log(f"data: --instances: {len(categories)} categories, boxes for {len(train_boxes)} of "
                 f"{len(train)} training images ({sum(map(len, train_boxes.values()))} boxes)")
        if not train_boxes:
            raise DataSetError(f"{self.r.instances}: no box of a training image (are the image ids the captions'?)")
        return {"categories": categories, "boxes": train_boxes}

    def state(self) -> dict:
        if self._state is None:
            path = os.path.join(self.run, "data", "final.pt")
            if not os.path.exists(path):
                raise ValueError(f"{path} is missing: run the data stage first")
            self._state = torch.load(path, map_location="cpu", weights_only=False)
        return self._state

    # --- vocabulary and concepts ------------------------------------------------------------
    def tokenizer(self):
        vocab = self.state()["vocab"]
        if vocab is not None:
            return WordPiece(vocab)
        return read_bert_config(self.r.bert)[1]

    def concepts(self) -> list[str]:
        return list(self.state()["concepts"])

    # --- per split ----------------------------------------------------------------------------
    def split(self, name: str) -> CaptionSplit:
        return CaptionSplit(**self.state()["splits"][name])

    def split_names(self) -> list[str]:
        return list(self.state()["splits"])

    def references(self, name: str) -> list[list[str]]:
        return self.split(name).references

    def metas(self, name: str) -> list[None]:
        return [None] * len(self.split(name))

    def image_ids(self, name: str) -> list[int]:
        return self.split(name).image_ids

    def feature_source(self, name: str, cfg):
        return ImageFiles(self.split(name).paths, cfg.image.size, cfg.image.mean, cfg.image.std)

    # --- what stage 0 trains on (without --clip) --------------------------------------------------
    def train_count(self) -> int:
        return len(self.split("train"))

    def train_pixels(self, idx, cfg):
        source = self.feature_source("train", cfg)
        return torch.stack([source[int(i)][1] for i in idx]).contiguous(memory_format=torch.channels_last)

    def train_metas(self, idx) -> list[dict | None]:
        regions = self.state().get("regions")
        if not regions:
            return [None] * len(idx)
        ids = self.split("train").image_ids
        return [{"boxes": regions["boxes"].get(ids[i], [])} for i in idx]

    def regions(self) -> BoxRegions | None:
        """The region supervision of stage 0: with --instances, per-cell object labels."""
        regions = self.state().get("regions")
        return BoxRegions(regions["categories"]) if regions else None

    def train_references(self, idx) -> list[list[str]]:
        refs = self.split("train").references
        return [refs[i] for i in idx]

    def sample_captions(self, references: list[list[str]], metas, rng: np.random.Generator,
                        primary_weight: float | None = None) -> list[str]:
        """One reference caption per image, uniformly among its references."""
        return [refs[rng.integers(len(refs))] for refs in references]

    # --- concept labels --------------------------------------------------------------------------
    def concept_labels(self, feats, name: str, cfg) -> np.ndarray:
        """Image labels [n, K]: the concepts at least `concept_min_refs` references name."""
        return self.image_concept_labels(feats, name)

    def image_concept_labels(self, feats, name: str) -> np.ndarray:
        return image_labels(feats.refs[name], self.concepts(), self.r.concept_min_refs)

    # --- the evaluate stage ------------------------------------------------------------------------
    def evaluate(self, ctx, model, batch: int = 16) -> dict:
        """The exported model's captions of the test split (else val), from the image files, with
        the model's own decoding settings: DIR/eval/results.json (COCO results) and
        DIR/eval/annotations.json (the split's references in COCO captions format, for
        `lightcap eval`), scored by pycocoevalcap."""

        from lightcap_train.recipe.evaluate import coco_metrics, load_pixels

        name = "test" if "test" in self.split_names() else "val"
        split = self.split(name)
        beam = model.config.decoding.beam_size
        captions = {}
        t0 = time.time()
        with torch.no_grad():
            for i in range(0, len(split), batch):
                x = load_pixels(split.paths[i:i + batch], model.config)
                out = model.beam_search(x, beam) if beam > 1 else model.greedy(x)
                for image_id, c in zip(split.image_ids[i:i + batch], out):
                    captions[image_id] = model.tokenizer.decode_caption(c.ids)
        seconds = time.time() - t0
        folder = os.path.join(self.run, "eval")
        os.makedirs(folder, exist_ok=True)
        results = [{"image_id": i, "caption": c} for i, c in captions.items()]
        annotations = {"images": [{"id": i, "file_name": f} for i, f in zip(split.image_ids, split.file_names)],
                       "annotations": [{"id": k, "image_id": i, "caption": c} for k, (i, c) in
                                       enumerate((i, c) for i, refs in zip(split.image_ids, split.references) for c in refs)]}
        for file, obj in (("results.json", results), ("annotations.json", annotations)):
            with open(os.path.join(folder, file), "w") as f:
                json.dump(obj, f, indent=1)
        refs = dict(zip(split.image_ids, split.references))
        scores = coco_metrics(captions, refs)
        self.log(f"evaluate: {len(split)} {name} images captioned (beam {beam}) in {seconds:.1f} s "
                 f"({1000 * seconds / max(len(split), 1):.0f} ms per image, reference decoder)")
        return {"split": name, "beam": beam, "scores": scores, "captions": captions,
                "results": os.path.join(folder, "results.json"), "annotations": os.path.join(folder, "annotations.json")}
