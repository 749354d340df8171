"""Markdown tables of a run for docs/RESULTS.md: the committed model's test scores (eval.json)
and the ablation rows (ablation.json); with --plot, a figure of the training curves (every
stage's loss from train.log) and the ablation.

    python -m lightcap_train.recipe.results --run runs/default [--plot docs/training.png]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import re

import numpy as np

STEP_LINE = re.compile(r"\] ([^:\[\]]+): step (\d+)/(\d+) (.*?) lr ")

COLUMNS = [("CIDEr-D", "CIDEr-D"), ("BLEU-4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE-L", "ROUGE-L"),
           ("attribute_precision", "attr P"), ("attribute_recall", "attr R"), ("attribute_f1", "attr F1"),
           ("relation_accuracy", "relation acc"), ("relation_stated", "relation stated")]


#: eval.json's scores on captioned data (pycocoevalcap's names).
CAPTION_COLUMNS = [("CIDEr", "CIDEr-D"), ("Bleu_4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L")]


def evaluation_table(path: str) -> str:
    scores = json.load(open(path))["scores"]
    columns = list({k: (k, name) for k, name in COLUMNS + CAPTION_COLUMNS if k in scores}.values())
    head = "| " + " | ".join(name for _, name in columns) + " |"
    rule = "|" + "---|" * len(columns)
    row = "| " + " | ".join(f"{scores[k]:.3f}" for k, _ in columns) + " |"
    return "\n".join([head, rule, row])


#: The ablation's columns: on the scenes, on other captioned data (the objects: concept = object).
ABLATION_KEYS = {
    "scenes": [("CIDEr-D", "CIDEr-D"), ("attribute_f1", "attr F1"), ("relation_accuracy", "relation acc"),
               ("size_accuracy_in_order", "size acc"), ("colour_accuracy_in_order", "colour acc"),
               ("shape_accuracy_in_order", "shape acc")],
    "captions": [("CIDEr-D", "CIDEr-D"), ("concept_precision", "concept P"), ("concept_recall", "concept R"),
                 ("concept_F1", "concept F1")]}


def ablation_table(path: str) -> str:
    data = json.load(open(path))
    rows = defaultdict(list)
    for r in data["rows"]:
        rows[r["row"]].append(r)
    keys = ABLATION_KEYS["scenes" if "attribute_f1" in data["rows"][0] else "captions"]
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


def training_curves(log_path: str) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """Per stage (as named in the log): every logged statistic as (steps, values). Statistics
    may start late (stage 0 logs its contrastive losses only after region pretraining). A stage
    rerun in the same log keeps only its last pass."""
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    last: dict[str, int] = {}
    for line in open(log_path):
        m = STEP_LINE.search(line)
        if not m:
            continue
        stage, step, fields = m.group(1), int(m.group(2)), m.group(4).split()
        if stage in last and step <= last[stage]:  # a new pass of this stage
            curves.pop(stage)
        last[stage] = step
        stats = curves.setdefault(stage, {})
        for k, v in zip(fields[::2], fields[1::2]):
            steps, values = stats.setdefault(k, ([], []))
            steps.append(step)
            values.append(float(v))
    return curves


CLOCK = re.compile(r"^\[(\d\d):(\d\d):(\d\d) ")
VAL_LINE = re.compile(r"\] ([^:\[\]]+): .*?val (.*)$")


def validation_curve(log_path: str, key: str) -> list[tuple[float, str, float]]:
    """(minutes since the log's first line, stage, value of `key`) of every validation line
    that reports `key` (e.g. the teacher's snapshots' concept_F1), in order. Clock times past
    midnight wrap into the next day."""
    points, first, day, previous = [], None, 0, None
    for line in open(log_path):
        m = CLOCK.match(line)
        if not m:
            continue
        seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
        if previous is not None and seconds < previous:
            day += 86400
        previous = seconds
        t = seconds + day
        first = t if first is None else first
        v = VAL_LINE.search(line)
        if v:
            fields = v.group(2).split()
            stats = dict(zip(fields[::2], fields[1::2]))
            if key in stats:
                points.append(((t - first) / 60, v.group(1), float(stats[key])))
    return points


def plot(run: str, out: str) -> None:
    """training curves (one panel per stage: its loss and accuracies) + the ablation bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in training_curves(os.path.join(run, "train.log")).items()
              if not k.startswith("ablation/")}
    ab = os.path.join(run, "ablation.json")
    named = validation_curve(os.path.join(run, "train.log"), "concept_F1")
    panels = len(curves) + os.path.exists(ab) + bool(named)
    cols = 3
    fig, axes = plt.subplots((panels + cols - 1) // cols, cols, figsize=(5 * cols, 3.4 * ((panels + cols - 1) // cols)),
                             squeeze=False)
    for ax, (stage, stats) in zip(axes.flat, curves.items()):
        ax.plot(*stats["loss"], color="black", label="loss")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        accs = [k for k in stats if "acc" in k]
        if accs:
            twin = ax.twinx()
            for k in accs:
                twin.plot(*stats[k], label=k)
            twin.set_ylim(0, 1)
            twin.set_ylabel("accuracy")
            twin.legend(loc="center right", fontsize=7)
    if os.path.exists(ab):
        ax = axes.flat[len(curves)]
        rows = defaultdict(list)
        for r in json.load(open(ab))["rows"]:
            rows[r["row"]].append(r)
        names = list(rows)
        f1 = "attribute_f1" if "attribute_f1" in rows[names[0]][0] else "concept_F1"
        for j, (key, label) in enumerate([(f1, f1.replace("_", " ")), ("CIDEr-D", "CIDEr-D / 5")]):
            scale = 5.0 if key == "CIDEr-D" else 1.0
            vals = [np.mean([r[key] for r in rows[n]]) / scale for n in names]
            ax.barh(np.arange(len(names)) + 0.4 * j, vals, height=0.4, label=label)
        ax.set_yticks(np.arange(len(names)) + 0.2, names, fontsize=7)
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("ablation (test split)")
    if named:
        ax = axes.flat[panels - 1]
        for stage in dict.fromkeys(st for _, st, _ in named):
            pts = [(t, v) for t, st, v in named if st == stage]
            ax.plot(*zip(*pts), marker="o", label=stage)
        ax.set_xlabel("minutes since the run started")
        ax.set_ylabel("concept F1 of greedy captions (val)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("naming the concepts (on objects: the objects)")
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle(f"training run {os.path.basename(os.path.normpath(run))}")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Markdown tables of a training run")
    p.add_argument("--run", required=True)
    p.add_argument("--plot", metavar="PNG", help="also draw the training curves and the ablation here")
    args = p.parse_args(argv)
    if args.plot:
        plot(args.run, args.plot)
    ev = os.path.join(args.run, "eval.json")
    ab = os.path.join(args.run, "ablation.json")
    if os.path.exists(ev):
        result = json.load(open(ev))
        beam = result.get("beam", 1)
        print(f"{result.get('split', 'test').capitalize()} split, "
              f"{'greedy decoding' if beam == 1 else f'beam {beam}'}, the exported model:\n")
        print(evaluation_table(ev) + "\n")
    if os.path.exists(ab):
        print("Ablation (test split, greedy):\n")
        print(ablation_table(ab))


if __name__ == "__main__":
    main()
