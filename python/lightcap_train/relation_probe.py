"""Why relations fail: what the frozen grid knows, and what a model says.

    python -m lightcap_train.relation_probe --run runs/default [--eval runs/default/eval.json]

1. Probes on the run's frozen CLIP features (DIR/features): for the vertical two-object scenes
   (|dy| > |dx|), can "the left object A is above B" be read off the grid? A logistic
   regression on A's own grid cell (the cell of its centre), one on the mean of all cells (no
   position), and one on every cell flattened. Trained on train, scored on val.
2. With --eval (an evaluate stage's eval.json and its test split's objects.json): what the
   model said for each kind of pair, as a table of true relation x said relation, and the
   accuracy by how diagonal the pair is (min(|dx|, |dy|) / max(|dx|, |dy|): near 1 the
   horizontal / vertical call is a matter of a few pixels).
   With --grid-relation: how well the frozen grid itself tells the four relations apart, by the
   same diagonality bins: a small MLP (per-cell projection, then all cells) trained on the
   train split's two-object scenes, scored on the test split's. Its accuracy is a rough
   ceiling for what a model can read off the grid, to set the captions' accuracy against.
3. With --fusion FILE (a teacher snapshot of the run, e.g. DIR/teacher/snapshot2.pt): the
   same probe on the fusion model's hidden states of the vertical pairs, captioned "a {A}":
   at the [MASK] query that predicts the relation word, and at A's visual token, per layer.
   Where the visual token knows and the query does not, the model does not route it.
4. With --snapshots: each teacher snapshot's greedy captions of the test split: relation
   accuracy overall and by diagonality bin, and attribute F1.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

import torch
import torch.nn.functional as F

from . import evaluate as E
from .train import centre_cell, diagonality, two_object_scenes

DIAGONAL_BINS = [(0.0, 0.5), (0.5, 0.8), (0.8, 1.01)]  # min(|dx|, |dy|) / max(|dx|, |dy|)


def diagonal_bin(meta: dict) -> int:
    ratio = diagonality(meta)
    return next(i for i, (lo, hi) in enumerate(DIAGONAL_BINS) if lo <= ratio < hi)


def a_above_b(meta: dict) -> float | None:
    """1.0 if the left object A of a vertical two-object scene is above B, 0.0 if below; None
    for any other scene."""
    objs = meta["objects"]
    if len(objs) != 2:
        return None
    rel = E.true_relation(objs[0], objs[1])
    return {"above": 1.0, "below": 0.0}.get(rel)


def vertical_pairs(grid: torch.Tensor, metas: list[dict], side: int):
    """(A-cell features [n, C], all cells [n, N, C], labels [n] 1 = A above B) of the vertical
    two-object scenes."""
    cells, grids, labels = [], [], []
    for i, m in enumerate(metas):
        label = a_above_b(m)
        if label is None:
            continue
        g = grid[i].float()  # [N, C]
        cells.append(g[centre_cell(m["objects"][0], side, m.get("width", 256))])
        grids.append(g)
        labels.append(label)
    return torch.stack(cells), torch.stack(grids), torch.tensor(labels)


def standardised(xt, xv):
    """xt and xv standardised per feature with xt's mean and standard deviation."""
    mu, sd = xt.mean(0), xt.std(0) + 1e-5
    return (xt - mu) / sd, (xv - mu) / sd


def logistic_probe(xt, yt, xv, yv, steps: int = 400, seed: int = 0) -> tuple[float, float]:
    """Train / val accuracy of an L2-regularised logistic regression on standardised features."""
    xt, xv = standardised(xt, xv)
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


def two_object_captions(eval_path: str, objects_path: str):
    """(objects, caption) of every two-object scene of objects.json captioned in eval.json."""
    captions = json.load(open(eval_path))["captions"]
    for im in json.load(open(objects_path))["images"]:
        cap = captions.get(str(im["image_id"]))
        if len(im["objects"]) == 2 and cap is not None:
            yield im["objects"], cap


def said_table(eval_path: str, objects_path: str) -> str:
    counts = Counter()
    for objs, cap in two_object_captions(eval_path, objects_path):
        said = next((r for r in E.RELATIONS if f" {r} " in f" {cap} "), "none")
        counts[(E.true_relation(objs[0], objs[1]), said, E.relation_correct(cap, objs))] += 1
    out = ["| true relation (A to B) | said | right | count |", "|---|---|---|---|"]
    for (true, said, ok), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1])):
        out.append(f"| {true} | {said} | {'yes' if ok else 'no'} | {n} |")
    return "\n".join(out)


def relation_counts(pairs) -> Counter:
    """Counter of (key, "n") and (key, "right") over (objects, caption) pairs of two-object
    scenes, key "all" and each pair's diagonal bin."""
    counts = Counter()
    for objs, cap in pairs:
        right = bool(E.relation_correct(cap, objs))
        for key in ("all", diagonal_bin({"objects": objs})):
            counts[key, "n"] += 1
            counts[key, "right"] += right
    return counts


def diagonal_table(eval_path: str, objects_path: str) -> str:
    counts = relation_counts(two_object_captions(eval_path, objects_path))
    out = ["| min(dx, dy) / max(dx, dy) | pairs | right | accuracy |", "|---|---|---|---|"]
    for k, (lo, hi) in enumerate(DIAGONAL_BINS):
        n, r = counts[k, "n"], counts[k, "right"]
        out.append(f"| {lo:.1f} - {min(hi, 1.0):.1f} | {n} | {r} | {r / max(n, 1):.3f} |")
    return "\n".join(out)


def relation_pairs(grid: torch.Tensor, metas: list[dict]):
    """(grids [n, N, C], relation of A to B as an index of E.RELATIONS [n], diagonal bins [n]) of
    the two-object scenes."""
    rows = two_object_scenes(metas).tolist()
    labels = [E.RELATIONS.index(E.true_relation(*metas[i]["objects"])) for i in rows]
    return (grid[rows].float(), torch.tensor(labels, dtype=torch.long),
            torch.tensor([diagonal_bin(metas[i]) for i in rows], dtype=torch.long))


def grid_relation_probe(xt, yt, xv, epochs: int = 20, seed: int = 0, hidden: int = 64) -> torch.Tensor:
    """Predicted relations of xv [n, N, C] by an MLP trained on (xt, yt): each cell projected to
    `hidden`, GELU, all cells flattened, 256 hidden units, GELU, 4 relations. AdamW, batches of
    128, features standardised per cell and channel with the train statistics."""
    xt, xv = standardised(xt, xv)
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(xt.shape[2], hidden), torch.nn.GELU(), torch.nn.Flatten(),
                              torch.nn.Linear(xt.shape[1] * hidden, 256), torch.nn.GELU(),
                              torch.nn.Linear(256, len(E.RELATIONS)))
    opt = torch.optim.AdamW(mlp.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(epochs):
        order = torch.randperm(len(yt))
        for k in range(0, len(yt), 128):
            j = order[k:k + 128]
            loss = F.cross_entropy(mlp(xt[j]), yt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return mlp(xv).argmax(1)


def grid_relation_table(run: str, epochs: int = 20, seeds: int = 2) -> str:
    """Test accuracy by diagonality of grid_relation_probe on the run's frozen features."""
    f = torch.load(os.path.join(run, "features", "final.pt"), map_location="cpu", weights_only=False)
    xt, yt, _ = relation_pairs(f["train"]["grid"], f["train"]["meta"])
    xv, yv, bins = relation_pairs(f["test"]["grid"], f["test"]["meta"])
    right = torch.stack([grid_relation_probe(xt, yt, xv, epochs, seed) == yv for seed in range(seeds)]).float()
    out = [f"MLP probe of the relation on the frozen grid: {len(yt)} train / {len(yv)} test two-object scenes, "
           f"{seeds} seed(s), accuracy per seed.", "",
           "| min(dx, dy) / max(dx, dy) | pairs | probe accuracy |", "|---|---|---|"]
    rows = [(f"{lo:.1f} - {min(hi, 1.0):.1f}", bins == k) for k, (lo, hi) in enumerate(DIAGONAL_BINS)]
    for name, sel in rows + [("all", torch.ones_like(bins, dtype=torch.bool))]:
        accs = " / ".join(f"{a:.3f}" for a in right[:, sel].mean(1).tolist()) if sel.any() else "-"
        out.append(f"| {name} | {int(sel.sum())} | {accs} |")
    return "\n".join(out)


def fusion_probe_table(run: str, snapshot: str, limit: int = 6000) -> str:
    """Probes on a teacher snapshot's hidden states (the run's recipe and stage 0-1 outputs)."""
    from . import data as D
    from . import train as T
    from .trainer import Log

    r = T.Recipe(**json.load(open(os.path.join(run, "recipe.json"))))
    ctx = T.Context(r, run, T.setup_dist(), Log(run, T.setup_dist()))  # logs nothing
    feats = T.Features(ctx)
    ids = ctx.load_final("concepts")["ids"]
    model = T.fusion_model(ctx, T.teacher_config(r, len(ctx.tok)))
    model.load_state_dict(torch.load(snapshot, map_location="cpu"))
    model.eval()
    side, n = model.config.grid_side, model.config.num_visual_tokens

    def states(split):
        metas = feats.meta[split][:limit]
        rows = [(i, m) for i, m in enumerate(metas) if a_above_b(m) is not None]
        query, cell = [], []
        for k in range(0, len(rows), 100):
            chunk = rows[k:k + 100]
            idx = [i for i, _ in chunk]
            caps = [ctx.tok.encode("a {size} {colour} {shape}".format(**m["objects"][0])) for _, m in chunk]
            cb = D.caption_batch(model, caps, ids[split][idx])
            with torch.no_grad():
                _, hs, _ = T.fusion_logits(model, feats.grid[split][idx].float(), ids[split][idx], cb, hidden=True)
            b = torch.arange(len(idx))
            j = torch.tensor([len(c) for c in caps])  # the query predicting the word after "a {A}"
            a_cell = torch.tensor([centre_cell(m["objects"][0], side, m.get("width", 256)) for _, m in chunk])
            query.append(torch.stack([h[b, cb.query_rows[b, j]] for h in hs]))
            cell.append(torch.stack([h[b, h.shape[1] - n + a_cell] for h in hs]))
        labels = torch.tensor([a_above_b(m) for _, m in rows])
        return torch.cat(query, 1), torch.cat(cell, 1), labels

    qt, ct, yt = states("train")
    qv, cv, yv = states("val")
    out = [f"Fusion model {snapshot}: vertical pairs, {len(yt)} train / {len(yv)} val, captioned \"a {{A}}\".",
           "", "| layer | query of the relation word: train / val | A's visual token: train / val |",
           "|---|---|---|"]
    for layer in range(qt.shape[0]):
        q = logistic_probe(qt[layer], yt, qv[layer], yv)
        c = logistic_probe(ct[layer], yt, cv[layer], yv)
        out.append(f"| {layer} | {q[0]:.3f} / {q[1]:.3f} | {c[0]:.3f} / {c[1]:.3f} |")
    return "\n".join(out)


def snapshot_table(run: str) -> str:
    """Test-split relation accuracy (overall, by diagonality bin) and attribute F1 of each of
    the run's teacher snapshots, greedy."""
    from . import train as T
    from .trainer import Log

    r = T.Recipe(**json.load(open(os.path.join(run, "recipe.json"))))
    ctx = T.Context(r, run, T.setup_dist(), Log(run, T.setup_dist()))  # logs nothing
    feats = T.Features(ctx)
    ids, metas = ctx.load_final("concepts")["ids"]["test"], feats.meta["test"]
    bins = " | ".join(f"{lo:.1f} - {min(hi, 1.0):.1f}" for lo, hi in DIAGONAL_BINS)
    out = [f"| snapshot | relation acc | {bins} | attr F1 |", "|---" * (3 + len(DIAGONAL_BINS)) + "|"]
    for c in range(r.teacher_cycles):
        model = T.fusion_model(ctx, T.teacher_config(r, len(ctx.tok)))
        model.load_state_dict(torch.load(ctx.path("teacher", f"snapshot{c}.pt"), map_location="cpu"))
        caps = T.greedy_captions(ctx, model, feats.grid["test"], ids, r.eval_batch)
        counts = relation_counts((m["objects"], caps[i]) for i, m in enumerate(metas) if len(m["objects"]) == 2)
        f1 = E.scene_scores(caps, dict(enumerate(metas)))["attribute_f1"]
        cells = " | ".join(f"{counts[k, 'right']}/{counts[k, 'n']}" for k in range(len(DIAGONAL_BINS)))
        out.append(f"| {c} | {counts['all', 'right'] / max(counts['all', 'n'], 1):.3f} | {cells} | {f1:.3f} |")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory with features/final.pt")
    p.add_argument("--eval", help="eval.json of a model (captions of the test split)")
    p.add_argument("--objects", default="data/test/objects.json", help="the test split's objects.json")
    p.add_argument("--fusion", metavar="SNAPSHOT", help="a teacher snapshot of the run: probe its hidden states")
    p.add_argument("--snapshots", action="store_true",
                   help="also score every teacher snapshot on the test split (a minute or two)")
    p.add_argument("--grid-relation", action="store_true",
                   help="also probe the four relations on the frozen grid, by diagonality (about a minute)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(probe_table(a.run))
    if a.eval:
        print()
        print(said_table(a.eval, a.objects))
        print()
        print(diagonal_table(a.eval, a.objects))
    if a.grid_relation:
        print()
        print(grid_relation_table(a.run))
    if a.fusion:
        print()
        print(fusion_probe_table(a.run, a.fusion))
    if a.snapshots:
        print()
        print(snapshot_table(a.run))


if __name__ == "__main__":
    main()
