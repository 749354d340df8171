"""Markdown tables of a run for docs/RESULTS.md: the committed model's test scores (eval.json)
and the ablation rows (ablation.json).

    python -m lightcap_train.results --run runs/default
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import numpy as np

COLUMNS = [("CIDEr-D", "CIDEr-D"), ("BLEU-4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE-L", "ROUGE-L"),
           ("attribute_precision", "attr P"), ("attribute_recall", "attr R"), ("attribute_f1", "attr F1"),
           ("relation_accuracy", "relation acc"), ("relation_stated", "relation stated")]


def evaluation_table(path: str) -> str:
    scores = json.load(open(path))["scores"]
    head = "| " + " | ".join(name for _, name in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    row = "| " + " | ".join(f"{scores[k]:.3f}" for k, _ in COLUMNS if k in scores) + " |"
    return "\n".join([head, rule, row])


def ablation_table(path: str) -> str:
    data = json.load(open(path))
    rows = defaultdict(list)
    for r in data["rows"]:
        rows[r["row"]].append(r)
    keys = [("CIDEr-D", "CIDEr-D"), ("attribute_f1", "attr F1"), ("relation_accuracy", "relation acc"),
            ("size_accuracy_in_order", "size acc"), ("colour_accuracy_in_order", "colour acc"),
            ("shape_accuracy_in_order", "shape acc")]
    lines = ["| model | fusion parameters | seeds | " + " | ".join(n for _, n in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    order = ["full student (distilled)", "no concept extractor", "no modulator", "no distillation", "teacher"]
    for name, rs in sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
        cells = []
        for k, _ in keys:
            v = np.array([r.get(k, float("nan")) for r in rs])
            cells.append(f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""))
        lines.append(f"| {name} | {rs[0]['parameters'] / 1e6:.3f} M | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Markdown tables of a training run")
    p.add_argument("--run", required=True)
    args = p.parse_args(argv)
    ev = os.path.join(args.run, "eval.json")
    ab = os.path.join(args.run, "ablation.json")
    if os.path.exists(ev):
        print("Test split, greedy decoding, the exported model:\n")
        print(evaluation_table(ev) + "\n")
    if os.path.exists(ab):
        print("Ablation (test split, greedy):\n")
        print(ablation_table(ab))


if __name__ == "__main__":
    main()
