"""Why relations fail: what the frozen grid knows, and what a model says.

    python -m lightcap_train.relation_probe --run runs/default [--eval runs/default/eval.json]

1. Probes on the run's frozen CLIP features (DIR/features): for the vertical two-object scenes
   (|dy| > |dx|), can "the left object A is above B" be read off the grid? A logistic
   regression on A's own grid cell (the cell of its centre), one on the mean of all cells (no
   position), and one on every cell flattened. Trained on train, scored on val.
2. With --eval (an evaluate stage's eval.json and its test split's objects.json): what the
   model said for each kind of pair, as a table of true relation x said relation.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

import torch
import torch.nn.functional as F

from . import evaluate as E
from .train import centre_cell

def vertical_pairs(grid: torch.Tensor, metas: list[dict], side: int):
    """(A-cell features [n, C], all cells [n, N, C], labels [n] 1 = A above B) of the vertical
    two-object scenes."""
    cells, grids, labels = [], [], []
    for i, m in enumerate(metas):
        objs = m["objects"]
        if len(objs) != 2:
            continue
        rel = E.true_relation(objs[0], objs[1])
        if rel not in ("above", "below"):
            continue
        c = centre_cell(objs[0], side, m.get("width", 256))
        g = grid[i].float()  # [N, C]
        cells.append(g[c])
        grids.append(g)
        labels.append(1.0 if rel == "above" else 0.0)
    return torch.stack(cells), torch.stack(grids), torch.tensor(labels)


def logistic_probe(xt, yt, xv, yv, steps: int = 400, seed: int = 0) -> tuple[float, float]:
    """Train / val accuracy of an L2-regularised logistic regression on standardised features."""
    mu, sd = xt.mean(0), xt.std(0) + 1e-5
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    torch.manual_seed(seed)
    lin = torch.nn.Linear(xt.shape[1], 1)
    opt = torch.optim.AdamW(lin.parameters(), 1e-2, weight_decay=0.1)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(lin(xt).squeeze(1), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = lambda x, y: ((lin(x).squeeze(1) > 0).float() == y).float().mean().item()
        return acc(xt, yt), acc(xv, yv)


def probe_table(run: str) -> str:
    f = torch.load(os.path.join(run, "features", "final.pt"), map_location="cpu", weights_only=False)
    side = int(round(f["train"]["grid"].shape[1] ** 0.5))
    ct, gt, yt = vertical_pairs(f["train"]["grid"], f["train"]["meta"], side)
    cv, gv, yv = vertical_pairs(f["val"]["grid"], f["val"]["meta"], side)
    rows = [("A's grid cell", ct, cv), ("mean of all cells (no position)", gt.mean(1), gv.mean(1)),
            ("all cells, flattened", gt.flatten(1), gv.flatten(1))]
    out = [f"Vertical two-object scenes: {len(yt)} train, {len(yv)} val "
           f"(A above B in {yt.mean().item():.0%} / {yv.mean().item():.0%}).", "",
           "| logistic probe on | train acc | val acc |", "|---|---|---|"]
    for name, xt, xv in rows:
        a, b = logistic_probe(xt, yt, xv, yv)
        out.append(f"| {name} | {a:.3f} | {b:.3f} |")
    return "\n".join(out)


def said_table(eval_path: str, objects_path: str) -> str:
    captions = json.load(open(eval_path))["captions"]
    images = json.load(open(objects_path))["images"]
    counts = Counter()
    for im in images:
        objs = im["objects"]
        cap = captions.get(str(im["image_id"]))
        if len(objs) != 2 or cap is None:
            continue
        said = next((r for r in E.RELATIONS if f" {r} " in f" {cap} "), "none")
        counts[(E.true_relation(objs[0], objs[1]), said, E.relation_correct(cap, objs))] += 1
    out = ["| true relation (A to B) | said | right | count |", "|---|---|---|---|"]
    for (true, said, ok), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        out.append(f"| {true} | {said} | {'yes' if ok else 'no'} | {n} |")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory with features/final.pt")
    p.add_argument("--eval", help="eval.json of a model (captions of the test split)")
    p.add_argument("--objects", default="data/test/objects.json", help="the test split's objects.json")
    a = p.parse_args(argv)
    print(probe_table(a.run))
    if a.eval:
        print()
        print(said_table(a.eval, a.objects))


if __name__ == "__main__":
    main()
