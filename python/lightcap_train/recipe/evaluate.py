"""Evaluation on a scenes split: caption metrics and the scene-grounded scores CIDEr cannot give.

    python -m lightcap_train.recipe.evaluate --model models/default --data data/test [--beam 5] [--out FILE]

`--data` is a directory written by `python -m lightcap_train.data.scenes` (images/*.png,
captions.json, objects.json); the images are read from the PNG files and preprocessed as
docs/FORMAT.md step 1 says, like the Swift engine does.

Scores:
- pycocoevalcap BLEU-4, METEOR, ROUGE-L and CIDEr-D (its `Cider` is CIDEr-D) against the
  five references, after the PTB tokenizer.
- Attributes: every object mention in a caption, `[article|number] [size] [colour] shape`
  (or `one {size} {shape} that is {colour}`), is matched one-to-one against the scene's
  objects (a mention matches an object when every attribute it states is the object's).
  Precision = matched mentions / mentions, recall = matched objects / objects (objects a
  caption does not name count as missed), F1 of the two; micro-averaged over the split.
- Relations, on two-object scenes: the caption must state `X {relation} Y` with X and Y
  matched to the two objects, and the relation must be X's true place relative to Y
  (docs/SCENES.md rule). A caption that states no relation counts as wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from lightcap_train.data import scenes
from lightcap_train.reference.preprocess import clip_preprocess, load_image

SIZE_WORDS, COLOUR_WORDS = set(scenes.SIZES), set(scenes.COLOURS)
SHAPE_OF = {**{s: s for s in scenes.SHAPES}, **{p: s for s, p in scenes.PLURALS.items()}}
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
RELATIONS = scenes.RELATIONS


def words_of(caption: str) -> list[str]:
    return caption.lower().replace(",", " , ").replace(":", " : ").split()


def parse_mentions(caption: str) -> list[dict]:
    """Object mentions in word order: {"size", "colour", "shape", "count", "start", "end"}
    (size/colour None when not stated; start/end = word span)."""
    w = words_of(caption)
    out = []
    for i, word in enumerate(w):
        if word not in SHAPE_OF:
            continue
        m = {"shape": SHAPE_OF[word], "size": None, "colour": None, "count": 1, "end": i + 1}
        j = i - 1
        if j >= 0 and w[j] in COLOUR_WORDS:
            m["colour"] = w[j]
            j -= 1
        if j >= 0 and w[j] in SIZE_WORDS:
            m["size"] = w[j]
            j -= 1
        if j >= 0 and w[j] in COUNT_WORDS:
            m["count"] = COUNT_WORDS[w[j]]
            j -= 1
        elif word != m["shape"]:  # a bare plural
            m["count"] = 2
        m["start"] = j + 1
        if w[i + 1:i + 3] == ["that", "is"] and i + 3 < len(w) and w[i + 3] in COLOUR_WORDS:
            m["colour"] = w[i + 3]
            m["end"] = i + 4
        out.append(m)
    return out


def _compatible(mention: dict, obj: dict) -> bool:
    return all(mention[k] is None or mention[k] == obj[k] for k in ("size", "colour", "shape"))


def _match(mentions: list[dict], objects: list[dict]) -> list[int | None]:
    """Maximum one-to-one matching (augmenting paths): object index for each mention copy."""
    owner: dict[int, int] = {}  # object -> mention copy

    def augment(m: int, seen: set) -> bool:
        for o, obj in enumerate(objects):
            if o not in seen and _compatible(mentions[m], obj):
                seen.add(o)
                if o not in owner or augment(owner[o], seen):
                    owner[o] = m
                    return True
        return False

    for m in range(len(mentions)):
        augment(m, set())
    result: list[int | None] = [None] * len(mentions)
    for o, m in owner.items():
        result[m] = o
    return result


def attribute_counts(caption: str, objects: list[dict]) -> tuple[int, int, int]:
    """(matched, mentions, objects) of one caption."""
    copies = [m for m in parse_mentions(caption) for _ in range(m["count"])]
    matched = sum(o is not None for o in _match(copies, objects))
    return matched, len(copies), len(objects)


def true_relation(a: dict, b: dict) -> str:
    """scenes.relation of two objects of objects.json."""
    return scenes.relation_of_centres(a["centre"], b["centre"])


def relation_correct(caption: str, objects: list[dict]) -> bool | None:
    """Whether the first stated relation `X rel Y` is true (None: no relation stated)."""
    text = " ".join(words_of(caption))
    mentions = parse_mentions(caption)
    w = words_of(caption)
    for i in range(len(w)):
        for rel in RELATIONS:
            r = rel.split()
            if w[i:i + len(r)] != r:
                continue
            before = [m for m in mentions if m["end"] == i]
            after = [m for m in mentions if m["start"] == i + len(r)]
            if not before or not after:
                return False
            x, y = before[0], after[0]
            for ox in range(len(objects)):
                for oy in range(len(objects)):
                    if ox != oy and _compatible(x, objects[ox]) and _compatible(y, objects[oy]) \
                            and true_relation(objects[ox], objects[oy]) == rel:
                        return True
            return False
    del text
    return None


def ordered_attribute_hits(caption: str, objects: list[dict]) -> dict[str, tuple[int, int]] | None:
    """Diagnostic: when a caption names as many objects as the scene has, in order (captions list
    objects left to right), per attribute (hits, stated) against the object in the same place."""
    copies = [m for m in parse_mentions(caption) for _ in range(m["count"])]
    if len(copies) != len(objects):
        return None
    out = {}
    for key in ("size", "colour", "shape"):
        stated = [(m[key], o[key]) for m, o in zip(copies, objects) if m[key] is not None]
        out[key] = (sum(a == b for a, b in stated), len(stated))
    return out


def scene_scores(captions: dict[int, str], metadata: dict[int, dict]) -> dict:
    matched = mentions = total = 0
    per = {k: [0, 0] for k in ("size", "colour", "shape")}
    rel_total = rel_ok = rel_stated = 0
    for image_id, caption in captions.items():
        objs = metadata[image_id]["objects"]
        m, n, t = attribute_counts(caption, objs)
        matched, mentions, total = matched + m, mentions + n, total + t
        hits = ordered_attribute_hits(caption, objs)
        for k, (h, n_) in (hits or {}).items():
            per[k][0] += h
            per[k][1] += n_
        if len(objs) == 2:
            rel_total += 1
            ok = relation_correct(caption, objs)
            rel_stated += ok is not None
            rel_ok += bool(ok)
    p = matched / max(mentions, 1)
    r = matched / max(total, 1)
    return {"attribute_precision": p, "attribute_recall": r,
            "attribute_f1": 2 * p * r / max(p + r, 1e-12),
            "relation_accuracy": rel_ok / max(rel_total, 1),
            "relation_stated": rel_stated / max(rel_total, 1), "two_object_scenes": rel_total,
            **{f"{k}_accuracy_in_order": h / max(n, 1) for k, (h, n) in per.items()}}


def coco_metrics(captions: dict[int, str], references: dict[int, list[str]]) -> dict:
    """pycocoevalcap's scores under its own names, as COCOEvalCap computes them: the PTB
    tokenizer (Java) on both sides, then Bleu_1..Bleu_4, METEOR (Java), ROUGE_L and CIDEr (its
    CIDEr is CIDEr-D). Any number of references per image."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in references[i]] for i in captions})
    res = tok.tokenize({i: [{"caption": captions[i]}] for i in captions})
    out = dict(zip(("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"), Bleu(4).compute_score(gts, res)[0]))
    out["METEOR"] = Meteor().compute_score(gts, res)[0]
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return {k: float(v) for k, v in out.items()}


def coco_scores(captions: dict[int, str], references: dict[int, list[str]]) -> dict:
    """BLEU-4, METEOR, ROUGE-L, CIDEr-D (docs/RESULTS.md's names) of coco_metrics."""
    m = coco_metrics(captions, references)
    return {"BLEU-4": m["Bleu_4"], "METEOR": m["METEOR"], "ROUGE-L": m["ROUGE_L"], "CIDEr-D": m["CIDEr"]}


def load_references(data_dir: str):
    coco = json.load(open(os.path.join(data_dir, "captions.json")))
    refs: dict[int, list[str]] = {}
    for a in coco["annotations"]:
        refs.setdefault(a["image_id"], []).append(a["caption"])
    meta = {m["image_id"]: m for m in json.load(open(os.path.join(data_dir, "objects.json")))["images"]}
    return coco["images"], refs, meta


def load_pixels(paths: list[str], cfg) -> torch.Tensor:
    """The model input of image files, float32 [B, 3, S, S] channels_last, by the reference
    preprocessing the Swift engine equals (reference.preprocess: load_image + clip_preprocess)."""
    x = torch.stack([clip_preprocess(load_image(p, draft_side=cfg.image.size), cfg.image.size, cfg.image.mean, cfg.image.std,
                                     as_torch=True) for p in paths])
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def caption_split(model, data_dir: str, beam: int = 1, batch: int = 50, limit: int | None = None,
                  log=print) -> dict[int, str]:
    """Captions of every image of a scenes directory by the reference decoder."""
    images, _, _ = load_references(data_dir)
    images = images[:limit] if limit else images
    cfg = model.config
    out = {}
    start = time.time()
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        x = load_pixels([os.path.join(data_dir, "images", im["file_name"]) for im in chunk], cfg)
        caps = model.beam_search(x, beam) if beam > 1 else model.greedy(x)
        for im, c in zip(chunk, caps):
            out[im["id"]] = model.tokenizer.decode_caption(c.ids)
        if log and (i // batch) % 5 == 0:
            log(f"evaluate: {i + len(chunk)}/{len(images)} images ({time.time() - start:.0f} s)")
    return out


def evaluate(model, data_dir: str, beam: int = 1, limit: int | None = None, coco: bool = True,
             log=print) -> dict:
    captions = caption_split(model, data_dir, beam, limit=limit, log=log)
    _, refs, meta = load_references(data_dir)
    scores = scene_scores(captions, meta)
    if coco:
        scores.update(coco_scores(captions, refs))
    return {"scores": scores, "captions": captions}


def main(argv=None) -> None:
    from lightcap_train.reference.export import load

    p = argparse.ArgumentParser(description="Evaluate a LightCap model directory on a scenes split")
    p.add_argument("--model", default="models/default")
    p.add_argument("--data", required=True)
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--limit", type=int)
    p.add_argument("--out", help="write scores and captions as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load(args.model).eval()
    result = evaluate(model, args.data, args.beam, args.limit)
    print(json.dumps(result["scores"], indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "data": args.data, "beam": args.beam, **result}, f, indent=1)


if __name__ == "__main__":
    main()
