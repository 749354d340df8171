"""What a caption of an objects image gets right: the things, their counts, the background.

    python -m lightcap_train.data.objects.score --data DIR --results results.json [--json OUT]

reads DIR/objects.json and DIR/captions.json (a split written by lightcap_train.data.objects)
and a COCO results file ([{"image_id", "caption"}], what `lightcap caption --format jsonl` rows
or the recipe's evaluate stage give), and prints pycocoevalcap's BLEU-4, METEOR, ROUGE-L and
CIDEr-D with:

- object precision, recall and F1 (micro over images): the things a caption names, read with
  the table's singular and plural words (longest first, so "hot dog" is not a "dog"), against
  the things in the image;
- count accuracy: of the things named right, the share whose count is right ("a", "an" and
  "one" are 1, "two" to "four" their number; a bare plural counts as wrong);
- background accuracy: the share of captions whose scene phrase is the image's (the background
  table's phrase, place or alternative place, longest match).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter

from lightcap_train.data.objects import backgrounds, things

NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}


def _forms() -> list[tuple[list[str], str, bool]]:
    """(words, thing word, plural) of every singular and plural form, longest first."""
    forms = []
    for t in things():
        forms.append((t.word.split(), t.word, False))
        if t.plural != t.word:
            forms.append((t.plural.split(), t.word, True))
    return sorted(forms, key=lambda f: -len(f[0]))


def named_things(caption: str, forms=None) -> dict[str, int]:
    """Thing word -> count (0 where the count is not said) of every thing the caption names."""
    forms = forms or _forms()
    tokens = re.findall(r"[a-z]+", caption.lower())
    found: dict[str, int] = {}
    i = 0
    while i < len(tokens):
        for words, word, plural in forms:
            if tokens[i:i + len(words)] == words:
                before = tokens[i - 1] if i > 0 else ""
                count = NUMBERS.get(before, 0)
                if count == 1 and plural or count > 1 and not plural and word != " ".join(words):
                    count = 0
                found[word] = max(found.get(word, 0), count) if word in found else count
                i += len(words)
                break
        else:
            i += 1
    return found


def named_background(caption: str) -> str | None:
    """The phrase of the background whose wording (phrase, place or alternative place) occurs in
    the caption, the longest match; None when none does."""
    best, length = None, 0
    for b in backgrounds():
        for text in (b.place, b.alt_place, b.phrase.split(" ", 1)[1]):
            if re.search(rf"\b{re.escape(text)}\b", caption) and len(text) > length:
                best, length = b.phrase, len(text)
    return best


def object_scores(captions: dict[int, str], images: list[dict]) -> dict[str, float]:
    """Object P/R/F1, count and background accuracy of `captions` (image id -> caption) against
    the images of objects.json."""
    forms = _forms()
    tp = fp = fn = counted = right_counts = right_backgrounds = 0
    for image in images:
        caption = captions[image["image_id"]]
        truth = Counter(o["name"] for o in image["objects"])
        said = named_things(caption, forms)
        hits = set(said) & set(truth)
        tp, fp, fn = tp + len(hits), fp + len(set(said) - hits), fn + len(set(truth) - hits)
        counted += len(hits)
        right_counts += sum(said[w] == truth[w] for w in hits)
        right_backgrounds += named_background(caption) == image["background"]["phrase"]
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    return {"object_precision": precision, "object_recall": recall,
            "object_f1": 2 * precision * recall / max(1e-12, precision + recall),
            "count_accuracy": right_counts / max(1, counted),
            "background_accuracy": right_backgrounds / max(1, len(images))}


def read_results(path: str) -> dict[int, str]:
    with open(path) as f:
        data = json.load(f)
    return {int(r["image_id"]): r["caption"] for r in data}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lightcap_train.data.objects.score",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a split folder (objects.json, captions.json)")
    p.add_argument("--results", required=True, help="COCO results JSON of its images")
    p.add_argument("--json", help="also write the scores here")
    args = p.parse_args(argv)
    from lightcap_train.recipe.evaluate import coco_metrics, load_references

    _, refs, metas = load_references(args.data)
    captions = read_results(args.results)
    missing = [i for i in metas if i not in captions]
    if missing:
        print(f"score: {args.results} has no caption of {len(missing)} images (first: {missing[0]})",
              file=sys.stderr)
        return 2
    scores = {**coco_metrics({i: captions[i] for i in refs}, refs), **object_scores(captions, list(metas.values()))}
    print("  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
