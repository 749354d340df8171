"""The rendered scenes (data/scenes.py) as a data set of the training recipe.

A split is rendered once (at 256 pixels, as the PNG files of `scenes`, then resized to the
model's input size with PIL bicubic, as docs/FORMAT.md step 1 does) and cached as
`<cache>/<split>-<seed>-<count>-<size>.npz`; the test split is the PNG folder that
`python -m lightcap_train.data.scenes` writes.

The scenes have targets that general captioned images do not: every object's place, shape,
colour and size (the region labels of the concept extractor and the grid-cell loss of the
scenes CLIP), hard negative captions for its contrastive loss, the caption family to favour,
and the offset between two objects at a caption's relation word. They live here, and the
recipe asks for them only on this data set.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lightcap_train.data import scenes
from lightcap_train.reference.wordpiece import WordPiece

#: Family weights when sampling one of the five reference captions for training. The
#: "primary" family of a scene (the one that names every attribute, and the relation for
#: two objects) is drawn with probability PRIMARY_WEIGHT, each other family shares the rest:
#: greedy decoding then says the most informative caption (see docs/RESULTS.md).
PRIMARY_WEIGHT = 0.6

#: Bump when the renderer changes: cached splits of another version are not reused.
RENDER_VERSION = 2


def primary_family(num_objects: int) -> int:
    """0-based family: 1 object -> `a {size} {colour} {shape}`, 2 -> `a {A} {relation} a {B}`,
    3-4 -> `{n} shapes: a {A}, ...`."""
    return 1 if num_objects == 2 else 0


@dataclass
class Split:
    images: np.ndarray  # uint8 [n, S, S, 3]
    captions: list[list[str]]  # five per image, family order
    objects: list[dict]  # scenes.scene_metadata of each image (pixel units of the 256 render)

    def __len__(self) -> int:
        return len(self.images)


def _render_one(args):
    split, seed, index, size = args
    scene, image, caps = scenes.make_scene(split, seed, index, 256)
    if size != 256:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return image, caps, scenes.scene_metadata(scene, index, f"{index:06d}.png")


def render_split(split: str, seed: int, count: int, size: int, workers: int = 1) -> Split:
    jobs = [(split, seed, i, size) for i in range(count)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            out = pool.map(_render_one, jobs, chunksize=64)
    else:
        out = [_render_one(j) for j in jobs]
    images = np.stack([o[0] for o in out])
    return Split(images, [o[1] for o in out], [o[2] for o in out])


def load_split(split: str, seed: int, count: int, size: int, cache_dir: str,
               workers: int = 1, log=print) -> Split:
    """The split from the cache, rendering (and caching) it first if needed."""
    path = os.path.join(cache_dir, f"{split}-{seed}-{count}-{size}-r{RENDER_VERSION}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return Split(z["images"], meta["captions"], meta["objects"])
    log(f"data: rendering {count} {split} scenes (seed {seed}, {size} px) ...")
    data = render_split(split, seed, count, size, workers)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, images=data.images,
             meta=json.dumps({"captions": data.captions, "objects": data.objects}))
    os.replace(tmp, path)
    return data


# ----------------------------------------------------------------------------------------------
# Region / concept labels for the concept extractor


def region_labels(meta: dict, boxes, concepts: list[str]) -> np.ndarray:
    """Multi-hot [R, K]: a region is labelled with the background, with the shape, colour and
    size of every object whose centre lies in it, and, if it holds the centres of both of the
    two leftmost objects, with the words of their relation (left/right or above/below)."""
    index = {c: i for i, c in enumerate(concepts)}
    labels = np.zeros((len(boxes), len(concepts)), dtype=np.float32)
    objs = meta["objects"]
    inside = lambda o, b: b[0] <= o["centre"][0] < b[2] and b[1] <= o["centre"][1] < b[3]
    for r, box in enumerate(boxes):
        labels[r, index[meta["background"]]] = 1
        for o in objs:
            if inside(o, box):
                for word in (o["shape"], o["colour"], o["size"]):
                    labels[r, index[word]] = 1
        if len(objs) >= 2 and inside(objs[0], box) and inside(objs[1], box):
            dx = objs[0]["centre"][0] - objs[1]["centre"][0]
            dy = objs[0]["centre"][1] - objs[1]["centre"][1]
            words = ("left", "right") if abs(dx) > abs(dy) else ("above", "below")
            for w in words:
                labels[r, index[w]] = 1
    return labels


# ----------------------------------------------------------------------------------------------
# Stage 0: the grid-cell labels, hard negatives


CELL_OUTPUTS = 1 + len(scenes.COLOURS) + len(scenes.SHAPES) + len(scenes.SIZES) + 2


def centre_cell(o: dict, side: int, image_side: float = 256.0) -> int:
    """Row-major index of the grid cell holding object `o`'s centre (render pixel units)."""
    x, y = o["centre"]
    return min(side - 1, int(y / image_side * side)) * side + min(side - 1, int(x / image_side * side))


def labelled_cells(metas: list[dict], side: int, image_side: float = 256.0):
    """(image, cell, object) of every object, the larger object last where two share a cell."""
    for i, m in enumerate(metas):
        for o in sorted(m["objects"], key=lambda o: o["radius"]):
            yield i, centre_cell(o, side, image_side), o


@torch.no_grad()
def cell_shape_accuracy(out: torch.Tensor, t: dict[str, torch.Tensor]) -> float:
    """Share of labelled cells (cell_targets) whose shape is predicted right (progress of stage 0)."""
    k1 = 1 + len(scenes.COLOURS)
    labelled = t["shape"] >= 0
    right = out[..., k1:k1 + len(scenes.SHAPES)].argmax(-1)[labelled] == t["shape"][labelled]
    return right.float().sum().item() / max(1, int(labelled.sum()))


def cell_targets(metas: list[dict], side: int, image_side: float = 256.0) -> dict[str, torch.Tensor]:
    """The region labels of `cell_loss` for a batch of scenes (scenes.scene_metadata): per grid
    cell, whether an object's centre lies in it, its colour / shape / size index (-100 where
    no object) and its centre (fraction of the image side)."""
    b, n = len(metas), side * side
    t = {"present": torch.zeros(b, n), "colour": torch.full((b, n), -100, dtype=torch.long),
         "centre": torch.zeros(b, n, 2)}
    t["shape"], t["size"] = t["colour"].clone(), t["colour"].clone()
    colours, shapes, sizes = list(scenes.COLOURS), list(scenes.SHAPES), list(scenes.SIZES)
    for i, c, o in labelled_cells(metas, side, image_side):  # the larger one wins a shared cell
        x, y = o["centre"]
        t["present"][i, c] = 1
        t["colour"][i, c], t["shape"][i, c] = colours.index(o["colour"]), shapes.index(o["shape"])
        t["size"][i, c] = sizes.index(o["size"])
        t["centre"][i, c] = torch.tensor([x / image_side, y / image_side])
    return t


def cell_loss(out: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Region-label auxiliary loss of stage 0 (the labels the concept extractor also uses):
    every grid cell says whether an object's centre lies in it, and if so its colour, shape,
    size and its absolute centre in the image, so the grid itself must say what is where (the
    fusion model's visual tokens carry no position). out: [B, N, 1 + 8 + 8 + 2 + 2]."""
    b, n, _ = out.shape
    k1 = 1 + len(scenes.COLOURS)
    k2 = k1 + len(scenes.SHAPES)
    k3 = k2 + len(scenes.SIZES)
    loss = F.binary_cross_entropy_with_logits(out[..., 0], t["present"])
    loss = loss + F.cross_entropy(out[..., 1:k1].reshape(b * n, -1), t["colour"].reshape(-1), ignore_index=-100)
    loss = loss + F.cross_entropy(out[..., k1:k2].reshape(b * n, -1), t["shape"].reshape(-1), ignore_index=-100)
    loss = loss + F.cross_entropy(out[..., k2:k3].reshape(b * n, -1), t["size"].reshape(-1), ignore_index=-100)
    mask = t["present"].bool()
    if mask.any():
        loss = loss + 10 * F.l1_loss(out[..., k3:k3 + 2][mask], t["centre"][mask])
    return loss


class ScenesRegions:
    """The scenes' region supervision of stage 0 (cell_targets, cell_loss), with the interface
    of data.regions.BoxRegions."""

    accuracy_name = "cell_shape_acc"
    outputs = CELL_OUTPUTS

    def targets(self, metas: list[dict], side: int) -> dict[str, torch.Tensor]:
        return cell_targets(metas, side)

    def loss(self, out: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        return cell_loss(out, t)

    def accuracy(self, out: torch.Tensor, t: dict[str, torch.Tensor]) -> float:
        return cell_shape_accuracy(out, t)


RELATION_SWAP = {"left": "right", "right": "left", "above": "below", "below": "above"}


def hard_negative(caption: str, rng: np.random.Generator) -> str:
    """NegCLIP-style hard negative: the caption with its relation reversed, or one attribute
    word (size, colour, shape with plurals kept, background, object count) replaced by another
    value."""
    words = caption.split(" ")
    rel = [i for i, w in enumerate(words) if w in RELATION_SWAP]
    if rel and rng.random() < 0.5:
        i = rel[rng.integers(len(rel))]
        words[i] = RELATION_SWAP[words[i]]
        return " ".join(words)
    singular = {p: s for s, p in scenes.PLURALS.items()}
    pools = (list(scenes.SIZES), list(scenes.COLOURS), list(scenes.SHAPES), list(scenes.BACKGROUNDS), ["three", "four"])
    known = {x for pool in pools for x in pool} | set(singular)
    slots = [i for i, w in enumerate(words) if w.rstrip(",") in known]
    i = slots[rng.integers(len(slots))]
    w = words[i].rstrip(",")
    tail = words[i][len(w):]
    for pool in pools:
        if w in pool or singular.get(w) in pool:
            options = [x for x in pool if x not in (w, singular.get(w))]
            new = options[rng.integers(len(options))]
            words[i] = (scenes.PLURALS[new] if w in singular else new) + tail
            return " ".join(words)
    raise AssertionError(caption)

# ----------------------------------------------------------------------------------------------
# Stage 1: the concepts' text embeddings


def concept_prompts(concept: str) -> list[str]:
    """Prompt ensemble of a concept (CLIP's zero-shot prompt ensembling): scenes captions in
    which the concept is named, every other attribute varied. One-word prompts ("a red") are
    far from anything the scenes text tower was trained on and give nearly equal embeddings."""
    sizes, colours, shapes = list(scenes.SIZES), list(scenes.COLOURS), list(scenes.SHAPES)
    if concept in scenes.SHAPES:
        return [f"a {z} {c} {concept}" for z in sizes for c in colours]
    if concept in scenes.COLOURS:
        return [f"a {z} {concept} {h}" for z in sizes for h in shapes]
    if concept in scenes.SIZES:
        return [f"a {concept} {c} {h}" for c in colours for h in shapes]
    if concept in scenes.BACKGROUNDS:
        return [f"a {c} {h} on a {concept} background" for c in colours for h in shapes]
    rel = {"left": "to the left of", "right": "to the right of"}.get(concept, concept)
    return [f"a {c} {h} {rel} a {c2} {h2}" for c, c2 in zip(colours, colours[1:] + colours[:1])
            for h, h2 in zip(shapes, shapes[::-1])]


#: What config.json's concepts.prompt records for the tiny model (the engine never reads it; the
#: text, older than the function's name, stays so that the committed config.json is reproduced).
PROMPT_NOTE = "scenes captions naming {} (prompt ensemble, orthogonalised: train.concept_embeddings)"


@torch.no_grad()
def prompt_ensemble_embeddings(text, tokenizer, context: int) -> torch.Tensor:
    """[K, E]: each concept's prompt-ensemble embedding (mean of the L2-normalised text
    embeddings of its prompts), then the orthonormal set nearest to them (symmetric, Loewdin
    orthogonalisation: (e e^T)^-1/2 e). The small scenes text tower gives sentence embeddings
    that share one large direction (prompts differ by one word: cosines of 0.99+ between
    'red' and 'blue' prompts), which would leave the concept extractor no margin to rank by."""
    e = torch.stack([F.normalize(text(tokenizer(concept_prompts(c), context)), dim=-1).mean(0)
                     for c in scenes.CONCEPTS]).double()  # [K, E]
    u, _, vt = torch.linalg.svd(e, full_matrices=False)  # e = U S V^T; nearest orthonormal: U V^T
    return (u @ vt).float()

# ----------------------------------------------------------------------------------------------
# Stages 2-4: two-object scenes and the offset at the relation word


def two_object_scenes(metas: list[dict]) -> np.ndarray:
    """Indices of the scenes with exactly two objects (their primary caption states a relation)."""
    return np.array([i for i, m in enumerate(metas) if len(m["objects"]) == 2], dtype=np.int64)


HARD_PAIR_RATIO = 0.6  # min(|dx|, |dy|) / max(|dx|, |dy|) from which a pair counts as near-diagonal


def diagonality(meta: dict) -> float:
    """min(|dx|, |dy|) / max(|dx|, |dy|) of a two-object scene's centres: near 1, whether the
    relation is horizontal or vertical is a matter of a few pixels."""
    (ax, ay), (bx, by) = (o["centre"] for o in meta["objects"])
    dx, dy = abs(ax - bx), abs(ay - by)
    return min(dx, dy) / max(dx, dy, 1e-9)


@functools.cache
def relation_token_ids(tok: WordPiece) -> tuple[frozenset[int], dict[int, str]]:
    """(ids of a relation's first words, {id: word} of the shapes, colours and sizes)."""
    return (frozenset(tok.token_id(w) for w in ("to", "above", "below")),
            {tok.token_id(w): w for w in (*scenes.SHAPES, *scenes.COLOURS, *scenes.SIZES)})


def relation_queries(tok: WordPiece, metas: list[dict], targets: torch.Tensor):
    """The relation words of a batch. In a two-object scene whose caption says `X {relation} Y`,
    the mask query predicting the relation's first word ("to", "above", "below") has just named
    X. Returns [(row b, query j, X, the other object)]; captions without a relation, or whose X
    matches both objects, give nothing."""
    first, words = relation_token_ids(tok)
    out = []
    for b, meta in enumerate(metas):
        objs = meta["objects"]
        if len(objs) != 2:
            continue
        row = targets[b].tolist()
        j = next((k for k, t in enumerate(row) if t in first), None)
        if j is None or j < 2:
            continue
        named = {words.get(t) for t in row[max(0, j - 3):j]}
        matches = [o for o in objs if o["shape"] in named and o["colour"] in named
                   and (o["size"] in named or not named & set(scenes.SIZES))]
        if len(matches) != 1:
            continue
        out.append((b, j, matches[0], objs[1] if matches[0] is objs[0] else objs[0]))
    return out


OFFSET_SCALE = 0.25  # offsets are regressed in quarters of the image side


def offset_targets(tok: WordPiece, metas: list[dict], targets: torch.Tensor):
    """What the relation word's query must know: the offset from the object it follows (X) to
    the other (Y), as (dx, dy, |dx| - |dy|) in quarters of the image side. The sign of the
    third decides horizontal against vertical (scenes.relation_of_centres); near the diagonal
    it is small. Returns (rows b, queries j, [n, 3] targets) for relation_queries' rows."""
    found = relation_queries(tok, metas, targets)
    rows, queries, values = [], [], []
    for b, j, x, y in found:
        side = metas[b].get("width", 256)
        dx, dy = ((x["centre"][k] - y["centre"][k]) / side / OFFSET_SCALE for k in (0, 1))
        rows.append(b), queries.append(j), values.append((dx, dy, abs(dx) - abs(dy)))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(queries, dtype=torch.long), \
        torch.tensor(values, dtype=torch.float32).reshape(-1, 3)


# ----------------------------------------------------------------------------------------------
# The data set the recipe sees


class ScenesData:
    """The scenes for recipe.train: rendered train/val splits (cached), the test split as files
    in the recipe's `test_dir`, the scenes vocabulary and 25 concepts, region labels and the
    primary-family caption sampling. The same methods as data.captions.CaptionData."""

    kind = "scenes"

    def __init__(self, r, log=print):
        self.r, self.log = r, log
        self._splits: dict[str, Split] = {}
        self._test = None

    # --- the data stage -------------------------------------------------------------------
    def prepare(self, ctx) -> dict:
        """Renders train and val into the cache, and the test split's files into test_dir
        when it holds none yet (a folder with other files is an error: never overwritten)."""
        r = self.r
        self.split("train"), self.split("val")
        test_dir = r.test_dir
        if not os.path.exists(os.path.join(test_dir, "objects.json")):
            if os.path.isdir(test_dir) and os.listdir(test_dir):
                raise ValueError(f"test_dir {test_dir} holds files but no objects.json: it is not a scenes "
                                 f"test split, and it is not overwritten (--set test_dir=ANOTHER)")
            self.log(f"data: writing the test split ({r.test_count} images, seed {r.test_seed}) to {test_dir}")
            scenes.write_split("test", r.test_seed, r.test_count, test_dir, progress=False)
        return {"train": r.train_count, "val": r.val_count}

    def split(self, name: str) -> Split:
        if name not in self._splits:
            r = self.r
            seed, count = {"train": (r.train_seed, r.train_count), "val": (r.val_seed, r.val_count)}[name]
            self._splits[name] = load_split(name, seed, count, r.image_size, r.cache, r.workers, self.log)
        return self._splits[name]

    def test(self):
        """(images of captions.json, references by image id, objects by image id) of test_dir."""
        if self._test is None:
            from lightcap_train.recipe.evaluate import load_references
            self._test = load_references(self.r.test_dir)
        return self._test

    # --- vocabulary and concepts ------------------------------------------------------------
    def tokenizer(self) -> WordPiece:
        return WordPiece(scenes.vocabulary())

    def concepts(self) -> list[str]:
        return list(scenes.CONCEPTS)

    # --- per split ----------------------------------------------------------------------------
    def split_names(self) -> list[str]:
        return ["train", "val", "test"]

    def references(self, name: str) -> list[list[str]]:
        if name == "test":
            images, refs, _ = self.test()
            return [refs[im["id"]] for im in images]
        return self.split(name).captions

    def metas(self, name: str) -> list[dict]:
        if name == "test":
            images, _, meta = self.test()
            return [meta[im["id"]] for im in images]
        return self.split(name).objects

    def image_ids(self, name: str) -> list[int]:
        if name == "test":
            return [im["id"] for im in self.test()[0]]
        return list(range(len(self.split(name))))

    def feature_source(self, name: str, cfg):
        """The images of a split as a features.write_features source: train and val from the
        rendered pixels (already at the model size), test from its PNG files."""
        from lightcap_train.data.features import ImageFiles, PixelArray

        if name == "test":
            paths = [os.path.join(self.r.test_dir, "images", im["file_name"]) for im in self.test()[0]]
            return ImageFiles(paths, cfg.image.size, cfg.image.mean, cfg.image.std)
        return PixelArray(self.split(name).images, cfg.image.mean, cfg.image.std)

    # --- what stage 0 trains on ------------------------------------------------------------------
    def train_count(self) -> int:
        return len(self.split("train"))

    def train_pixels(self, idx, cfg) -> torch.Tensor:
        from lightcap_train.data.batches import normalize
        return normalize(self.split("train").images[idx], cfg.image.mean, cfg.image.std)

    def train_metas(self, idx) -> list[dict]:
        return [self.split("train").objects[i] for i in idx]

    def train_references(self, idx) -> list[list[str]]:
        return [self.split("train").captions[i] for i in idx]

    def regions(self) -> ScenesRegions:
        return ScenesRegions()

    def sample_captions(self, references: list[list[str]], metas: list[dict], rng: np.random.Generator,
                        primary_weight: float | None = None) -> list[str]:
        """One reference caption per image; the primary family with `primary_weight` (the
        recipe's by default)."""
        weight = self.r.primary_weight if primary_weight is None else primary_weight
        out = []
        for refs, meta in zip(references, metas):
            p = np.full(5, (1 - weight) / 4)
            p[primary_family(len(meta["objects"]))] = weight
            out.append(refs[rng.choice(5, p=p)])
        return out

    # --- concept labels --------------------------------------------------------------------------
    def concept_labels(self, feats, name: str, cfg) -> np.ndarray:
        """Region labels [n, R, K] of the extractor's windows (what lies in each)."""
        from lightcap_train.data.batches import window_boxes
        boxes = window_boxes(cfg.concepts.windows, cfg.grid_side, 256)
        return np.stack([region_labels(m, boxes, scenes.CONCEPTS) for m in feats.meta[name]])

    def image_concept_labels(self, feats, name: str) -> np.ndarray:
        """Image labels [n, K]: the labels of the whole-image region."""
        return np.stack([region_labels(m, [(0, 0, 256, 256)], scenes.CONCEPTS)[0] for m in feats.meta[name]])

    # --- the evaluate stage ------------------------------------------------------------------------
    def evaluate(self, ctx, model) -> dict:
        """docs/RESULTS.md scores of the exported model's greedy captions of test_dir."""
        from lightcap_train.recipe.evaluate import evaluate
        return {"split": "test", **evaluate(model, self.r.test_dir, beam=1, log=ctx.log)}
