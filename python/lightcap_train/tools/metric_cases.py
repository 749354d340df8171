"""Expected caption-metric outputs for the Swift LightCapEval tests, from pycocoevalcap 1.2.

    python -m lightcap_train.tools.metric_cases --out .fixtures/metrics

Writes
  tokenizer.json  {"documents": [{"captions": [...], "tokenized": [...]}]}: pycocoevalcap's
                  PTBTokenizer (Stanford CoreNLP's Java tokenizer) on caption sets: scene-like
                  captions, hand-picked edge cases and random mixes of awkward fragments.
  scores.json     {"cases": [{"name", "gts": {id: [caption]}, "res": {id: [caption]},
                  "image_order": [...], "tokenized_gts", "tokenized_res",
                  "scores": {"Bleu_1".."Bleu_4", "ROUGE_L", "CIDEr", "METEOR"?},
                  "per_image": {metric: [...]}}]}: pycocoevalcap's own scorers on the tokenized
                  sets (METEOR only where Java runs its jar).
Everything comes from pycocoevalcap itself; nothing here is computed by our own code.
"""
import argparse
import json
import os
import random
import shutil

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

COLORS = ["red", "blue", "green", "yellow", "white", "black", "gray", "orange", "purple", "brown"]
SIZES = ["small", "large", "big", "tiny", "little"]
SHAPES = ["circle", "square", "triangle", "star", "ball", "box", "car", "dog", "cat", "tree", "house", "man",
          "woman", "bird", "boat", "cup", "chair", "table"]
RELS = ["next to", "on top of", "under", "left of", "right of", "near", "behind", "in front of", "above", "below"]
SCENES = ["on a wooden table", "in a field", "on the grass", "in a kitchen", "on a street", "at the beach", ""]

EDGE_CAPTIONS = [
    "", " ", "...", "!!!", "?", "- -- ---", "''", "\"\"", "(", ")", ".", ",",
    "a a a a a a a a", "the the the", "A man can't go.", "It's a dog's life, isn't it?",
    "(a red car) [b] {c}", 'He said "hello" to me', "Don't won't cannot gonna wanna",
    "the letter b.", "e.g. a photo of i.e. U.S. things", "3/4 of 12/25/2010 and 1,000.50 $5 \u00a33 \u20ac4",
    "a cat... on--a mat - yes", "colour grey favourite", "'quoted' text", "caf\u00e9 na\u00efve \u6771\u4eac \U0001F642 emoji",
    "\u039f\u0394\u039f\u03a3 \u0130stanbul \u00c9COLE", "well-known x-ray 3-d", "etc. mr. smith dr. who st. louis",
    "a.m. p.m. 5p.m.", "\u00bd \u00bc", "tab\there", "o'clock rock'n'roll y'all", "email a@b.com http://x.com/a www.foo.com",
    "c++ c# #tag @user :) ;-)", "\u201ccurly\u201d \u2018single\u2019 \u00abangle\u00bb", "it\u2019s isn\u2019t",
    "A DOG RUNS.", "Two dogs; one cat: no birds!", "a 2-year-old kid", "the 1990s and '90s",
    "price 3.50 or 3,50", "zero\u200bwidth", "non\u00a0breaking space", "x * y = z & w + v % u",
    "a/b test", "U.S.A. flag", "Mr. Smith and Mrs. Jones", "a cat. The dog", "it is a. The end",
    # Long runs that many rules scan to their end and then reject (a fuzzer's input had 399
    # U+FFFD), and one that a likely-URL rule takes whole.
    "He said, \"it's 6 o'clo.A. 't" + "\ufffd" * 60 + "\x81" * 40 + "*" + "\ufffd" * 30,
    "\ufffd" * 300 + " a dog", "a" + "\ufffd" * 200 + ".com and more", "\u00e9" * 100 + "-" + "\u00e9" * 100 + ".",
]

FRAGMENTS = [
    "a", "the", "dog", "Cat", "red", "can't", "won't", "it's", "we're", "I'm", "they'll", "he'd", "isn't", "cannot",
    "gonna", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "``", "''", ".", ",", ";", ":", "!", "?", "...", "-", "--",
    "---", "&", "&amp;", "$", "5", "3.14", "1,000", "1/2", "12/31/99", "2-d", "well-known", "e.g.", "U.S.", "etc.",
    "Mr.", "a.", "b.", "x", "\u2019", "\u201c", "\u201d", "\u2014", "\u2013", "\u2026", "caf\u00e9", "\u00fcber", "\u65e5\u672c",
    "\U0001F600", "#", "@", "*", "/", "\\", "+", "=", "<", ">", "<b>", "%", "^", "~", "|", "_", "o'clock", "'s", "n't",
    "A.", "The", "It", "http://a.com", "foo.com", "x@y.org", ":)", ":-(", "1990s", "'90s", "\u00bd", "\u00a3", "\u20ac",
    "T-shirt", "3D", "co-op", "rock'n'roll", "ma'am", "y'all", "ol'", "l'eau", "d'Arc",
]


def scene_caption(rng):
    def obj():
        parts = ["a"]
        if rng.random() < 0.5:
            parts.append(rng.choice(SIZES))
        parts.append(rng.choice(COLORS))
        parts.append(rng.choice(SHAPES))
        return " ".join(parts)
    s = obj()
    if rng.random() < 0.7:
        s += " " + rng.choice(RELS) + " " + obj()
    scene = rng.choice(SCENES)
    if scene:
        s += " " + scene
    r = rng.random()
    if r < 0.3:
        s = s[0].upper() + s[1:] + "."
    elif r < 0.4:
        s = s.upper()
    elif r < 0.5:
        s += " ."
    return s


def fragment_mix(rng):
    n = rng.randint(1, 9)
    seps = [" ", " ", " ", "", "  "]
    out = ""
    for i in range(n):
        out += rng.choice(FRAGMENTS)
        if i < n - 1:
            out += rng.choice(seps)
    return out


# Random characters: letters, digits, ASCII punctuation and a few Unicode symbols, quotes,
# dashes, spaces and an emoji (a capital sigma is left out: Java's final-sigma rule depends on a
# word-break iterator that LightCapEval only approximates).
RANDOM_ALPHABET = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"`()[]{}<>-_/\\@#$%^&*+=~|")
                   + list("\u00e9\u00fc\u00a0\u2019\u2018\u201c\u201d\u2014\u2013\u2026\u00bd\u00a3\u20ac\u00ad\u00ab\u00bb"
                          "\u3000\u2022\u00b0\u00d7\u0430\u05d0\u0627\u4e00") + ["\U0001F600", "\t"])


def random_chars(rng):
    return "".join(rng.choice(RANDOM_ALPHABET) for _ in range(rng.randint(0, 25)))


def ptb(captions):
    """pycocoevalcap's tokenizer on a list of captions, one output per caption, in order."""
    tok = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [tok[i][0] for i in range(len(captions))]


def tokenizer_documents(rng):
    docs = [EDGE_CAPTIONS, [scene_caption(rng) for _ in range(200)]]
    for _ in range(20):
        docs.append([fragment_mix(rng) for _ in range(50)])
    for _ in range(10):
        docs.append([random_chars(rng) for _ in range(60)])
    docs.append([""])
    docs.append(["one line\rtwo", "after"])  # pycocoevalcap's line shift on a carriage return
    docs.append(["windows\r\nline end", "x\ny", "last"])
    return [{"captions": d, "tokenized": ptb(d)} for d in docs]


def score_case(name, gts, res, meteor):
    order = list(gts.keys())
    tok = PTBTokenizer()
    tg = tok.tokenize({k: [{"caption": c} for c in gts[k]] for k in order})
    tr = tok.tokenize({k: [{"caption": c} for c in res[k]] for k in order})
    scores, per_image = {}, {}
    b, bs = Bleu(4).compute_score(tg, tr, verbose=0)
    for i in range(4):
        scores[f"Bleu_{i + 1}"] = b[i]
        per_image[f"Bleu_{i + 1}"] = [float(x) for x in bs[i]]
    r, rs = Rouge().compute_score(tg, tr)
    scores["ROUGE_L"], per_image["ROUGE_L"] = float(r), [float(x) for x in rs]
    c, cs = Cider().compute_score(tg, tr)
    scores["CIDEr"], per_image["CIDEr"] = float(c), [float(x) for x in cs]
    if meteor is not None:
        m, ms = meteor.compute_score(tg, tr)
        scores["METEOR"], per_image["METEOR"] = float(m), [float(x) for x in ms]
    return {"name": name, "image_order": [str(k) for k in order],
            "gts": {str(k): gts[k] for k in order}, "res": {str(k): res[k] for k in order},
            "tokenized_gts": {str(k): tg[k] for k in order}, "tokenized_res": {str(k): tr[k] for k in order},
            "scores": scores, "per_image": per_image}


def score_cases(rng, meteor):
    cases = []
    for n_images, n_refs in [(1, 5), (2, 1), (10, 5), (40, 3), (100, 5)]:
        gts = {i * 7 + 3: [scene_caption(rng) for _ in range(n_refs)] for i in range(n_images)}
        res = {}
        for k, refs in gts.items():
            r = rng.random()
            res[k] = [refs[0] if r < 0.15 else scene_caption(rng)]
        cases.append(score_case(f"scenes_{n_images}x{n_refs}", gts, res, meteor))
    edge_res = ["", "...", "a a a a a", "caf\u00e9 \u6771\u4eac \U0001F642", "a red ball", "A RED BALL!",
                "the the the the", "x", "it's a dog's toy (red)", "a 2-year-old kid's \"ball\""]
    gts = {i: [scene_caption(rng) for _ in range(4)] + (["", "!!!"] if i % 3 == 0 else []) for i in range(len(edge_res))}
    gts[3] = ["caf\u00e9 in \u6771\u4eac", "a caf\u00e9"]
    gts[4] = ["a red ball", "a red ball", "a red ball"]
    res = {i: [c] for i, c in enumerate(edge_res)}
    cases.append(score_case("edge", gts, res, meteor))
    cases.append(score_case("one_image_exact", {1: ["a red ball on a table"]}, {1: ["a red ball on a table"]}, meteor))
    cases.append(score_case("empty_everything", {1: [""], 2: ["a dog"]}, {1: [""], 2: [""]}, meteor))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".fixtures/metrics")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-meteor", action="store_true", help="skip METEOR even where Java runs")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    meteor = None
    if not args.no_meteor and shutil.which("java"):
        from pycocoevalcap.meteor.meteor import Meteor
        meteor = Meteor()
    rng = random.Random(args.seed)
    docs = tokenizer_documents(rng)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump({"documents": docs}, f, ensure_ascii=False, indent=0)
    cases = score_cases(rng, meteor)
    with open(os.path.join(args.out, "scores.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases, "meteor": meteor is not None}, f, ensure_ascii=False, indent=0)
    print(f"metric_cases: {len(docs)} tokenizer documents, {len(cases)} scored cases -> {args.out}")


if __name__ == "__main__":
    main()
