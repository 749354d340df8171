#!/usr/bin/env python3
"""COCO-size caption evaluation: `lightcap bench eval` against pycocoevalcap 1.2 in the same run.

    PYTHONPATH=python .venv/bin/python scripts/bench_eval.py [--images 5000] [--refs 5]

Makes a scene-like caption set (python/lightcap_train/metric_cases.py), scores it with
pycocoevalcap (PTBTokenizer in Java, then Bleu, Rouge, Cider; METEOR left out on both sides)
and with `.build/release/lightcap bench eval` (the same metrics, its wall time in-process and of
the whole process), prints the times, the ratio, and the largest difference between the scores
(it must stay below 1e-6).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from lightcap_train.tools.metric_cases import scene_caption


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--lightcap", default=".build/release/lightcap")
    args = ap.parse_args()
    rng = random.Random(1)
    ids = list(range(args.images))
    gts = {i: [scene_caption(rng) for _ in range(args.refs)] for i in ids}
    res = {i: scene_caption(rng) for i in ids}

    t0 = time.perf_counter()
    tok = PTBTokenizer()
    tg = tok.tokenize({i: [{"caption": c} for c in gts[i]] for i in ids})
    tr = tok.tokenize({i: [{"caption": res[i]}] for i in ids})
    peer = {}
    b, _ = Bleu(4).compute_score(tg, tr, verbose=0)
    for k in range(4):
        peer[f"Bleu_{k + 1}"] = b[k]
    peer["ROUGE_L"] = float(Rouge().compute_score(tg, tr)[0])
    peer["CIDEr"] = float(Cider().compute_score(tg, tr)[0])
    t_peer = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as d:
        ann = os.path.join(d, "ann.json")
        out = os.path.join(d, "res.json")
        with open(ann, "w") as f:
            json.dump({"images": [{"id": i} for i in ids],
                       "annotations": [{"image_id": i, "id": i * args.refs + k, "caption": c}
                                       for i in ids for k, c in enumerate(gts[i])]}, f)
        with open(out, "w") as f:
            json.dump([{"image_id": i, "caption": res[i]} for i in ids], f)
        t0 = time.perf_counter()
        run = subprocess.run([args.lightcap, "bench", "eval", "--annotations", ann, "--results", out, "--runs", "1"],
                             capture_output=True, text=True, check=True)
        t_ours = time.perf_counter() - t0
    report = json.loads(run.stdout)
    ours = report["scores"]
    t_inside = (report["loadMs"] + report["scoreMs"]) / 1e3
    diff = max(abs(ours[k] - v) for k, v in peer.items())
    print(f"{args.images} images x {args.refs} references, tokenization + BLEU-1..4 + ROUGE-L + CIDEr-D")
    print(f"pycocoevalcap 1.2 (Java tokenizer + Python):    {t_peer:7.2f} s")
    print(f"lightcap bench eval (Swift), whole process:     {t_ours:7.2f} s   ({t_peer / t_ours:.1f}x)")
    print(f"  of which loading + scoring:                   {t_inside:7.2f} s")
    print(f"largest score difference: {diff:.2e}   CIDEr {ours['CIDEr']:.6f} vs {peer['CIDEr']:.6f}")
    sys.exit(0 if diff < 1e-6 else 1)


if __name__ == "__main__":
    main()
