"""The LightCap training recipe on scenes, as resumable stages (../shared/DESIGN.md "Training").

    python -m lightcap_train.train STAGE --run DIR [--recipe default|smoke] [--set key=value ...]

STAGE, in order (`all` runs every one that is not finished yet):
  data      render the train/val splits into the cache (and the test split's PNGs + captions)
  clip      (0) a small CLIP: first region pretraining of its grid on the cell labels (what is
            where), then trained contrastively on scenes captions (NegCLIP hard negatives) with a
            CoCa-style captioning loss on its grid and the cell loss; frozen from here on
  features  the frozen CLIP's grid features of every train/val image (cached)
  concepts  (1) the concept extractor's alignment MLP on region/concept labels
  teacher   (2) a larger fusion model, with snapshot (cyclic) learning rate: one teacher per cycle
  student   (3) sequential distillation: attention + hidden-state distillation with a layer
            map, then output distillation with temperature + cross-entropy
  ensemble  (4) each parallel head distilled from its own teacher snapshot
  scst      (5) optional CIDEr-D optimisation (self-critical); off unless --set scst_steps=N
  export    the model directory (docs/FORMAT.md) in DIR/model
  evaluate  docs/RESULTS.md scores of DIR/model on the test split -> DIR/eval.json
Every stage writes DIR/<stage>/final.pt when done and resumes from DIR/<stage>/ckpt.pt.
Under `torchrun --nproc_per_node 2` the stages train data-parallel (gloo).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from . import scenes as S
from .config import LightCapConfig
from .model import LightCap
from .trainer import Dist, Log, batch_rng, fit, parameter_count, setup_dist
from .wordpiece import WordPiece

#: The words that decide a relation: "to" (left/right) against "above"/"below", then left/right.
RELATION_WORDS = ["to", "left", "right", "above", "below"]

STAGES = ["data", "clip", "features", "concepts", "teacher", "student", "ensemble", "scst",
          "export", "evaluate"]


@dataclass
class Recipe:
    """Every knob of a training run (saved as DIR/recipe.json)."""
    seed: int = 0
    cache: str = "data/cache"
    threads: int = 2  # torch threads: deterministic for a given count (1: 1.6x slower, a different model)
    workers: int = 2  # rendering processes
    train_seed: int = 1
    train_count: int = 12000
    val_seed: int = 2
    val_count: int = 500
    test_seed: int = S.TEST_SEED
    test_count: int = S.TEST_COUNT
    test_dir: str = "data/test"
    primary_weight: float = D.PRIMARY_WEIGHT
    # sizes
    student: str = "tiny"  # LightCapConfig.tiny + the settings in student_config()
    student_layers: int = 3  # fusion.num_hidden_layers of the student (as the teacher's; 2: test relation 0.915-0.935)
    teacher_hidden: int = 192
    teacher_layers: int = 3
    teacher_intermediate: int = 768
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_context: int = 40
    image_size: int = 128  # input side; the grid is image_size / 32 cells a side
    # (0) CLIP: first region pretraining (cell labels only), then the full objective
    clip_region_steps: int = 1000
    clip_relation_cells: bool = False  # region labels include each object's relation bits
    clip_steps: int = 900
    clip_batch: int = 48
    clip_lr: float = 2e-3
    clip_caption_weight: float = 1.0
    clip_cell_weight: float = 1.0
    # (1) concepts
    concept_steps: int = 1000
    concept_batch: int = 256
    concept_lr: float = 2e-3
    # (2)-(4) fusion models, teacher and student
    relation_extra: int = 24  # two-object scenes added to each batch, captioned with their relation
    relation_hard: float = 0.75  # share of those drawn from near-diagonal pairs (HARD_PAIR_RATIO)
    # relation experiments that did not help (docs/RESULTS.md), off
    visual_positions: bool = False  # fusion.visual_position_embeddings of teacher and student
    relation_weight: float = 1.0  # cross-entropy weight of the relation words' tokens (RELATION_WORDS)
    relation_distill_weight: float = 1.0  # the same for the student's distillation KL (output, ensemble)
    binding_weight: float = 0.0  # attention supervision at relation words (binding_loss)
    # the teacher, and the student's output and ensemble phases, also regress the pair's offset
    # at the relation word (offset_targets; docs/RESULTS.md: test relation accuracy 0.908 ->
    # 0.950; weight 1 held back the teacher's language learning); the ablation's rows too.
    offset_weight: float = 0.1
    # (2) teacher
    teacher_steps: int = 4200
    teacher_cycles: int = 4
    teacher_batch: int = 48
    teacher_lr: float = 1e-3
    # (3) student
    distill_steps: int = 200  # attention + hidden states
    output_steps: int = 600  # output distillation + cross-entropy
    student_batch: int = 48
    student_lr: float = 2e-3
    temperature: float = 2.0
    # (4) ensemble
    ensemble_steps: int = 240
    # (5) SCST
    scst_steps: int = 0
    scst_batch: int = 16
    scst_lr: float = 2e-5
    # common
    warmup: int = 30
    checkpoint_every: int = 100
    log_every: int = 20
    eval_batch: int = 250

    @classmethod
    def preset(cls, name: str) -> "Recipe":
        if name == "default":
            return cls()
        if name == "smoke":  # a few steps of everything (CI)
            return cls(train_count=96, val_count=32, test_count=24, clip_region_steps=2, clip_steps=3, clip_batch=8,
                       concept_steps=3, concept_batch=16, teacher_steps=6, teacher_cycles=3,
                       teacher_batch=8, distill_steps=3, output_steps=3, student_batch=8,
                       ensemble_steps=3, scst_steps=2, scst_batch=4, warmup=1,
                       checkpoint_every=2, log_every=1, eval_batch=8, workers=1,
                       teacher_hidden=64, teacher_layers=2, teacher_intermediate=128,
                       text_width=32, text_layers=1, relation_extra=4)
        raise ValueError(f"no recipe preset {name!r} (default, smoke)")

    def updated(self, assignments: list[str]) -> "Recipe":
        values = {}
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for a in assignments:
            key, _, value = a.partition("=")
            if key not in types:
                raise ValueError(f"--set: no recipe field {key!r}")
            kind = type(getattr(self, key))
            values[key] = kind(value) if kind is not bool else value.lower() in ("1", "true", "yes")
        return dataclasses.replace(self, **values)


# ----------------------------------------------------------------------------------------------
# Configurations


def tokenizer() -> WordPiece:
    return WordPiece(S.vocabulary())


def student_config(vocab_size: int, image_size: int = Recipe.image_size, **sections) -> LightCapConfig:
    """The committed `tiny` size: FORMAT.md's example, with room for the longest scenes caption
    (22 tokens: four objects listed with their sizes). Greedy by default: on the test split it
    beats beam 5 on every score (attribute F1 0.987 vs 0.949, CIDEr-D 4.29 vs 4.22; beam search
    prefers the shorter families that leave sizes out, docs/RESULTS.md)."""
    cfg = LightCapConfig.tiny(vocab_size).replace(
        decoding={"max_length": 24, "caption_segment_length": 26, "beam_size": 1},
        image={"size": image_size}, visual={"batchnorm_folded": False}, concepts={"prompt": PROMPT_NOTE},
        fusion={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    return cfg.replace(**sections) if sections else cfg


def teacher_config(r: Recipe, vocab_size: int) -> LightCapConfig:
    return student_config(vocab_size, r.image_size, fusion={
        "hidden_size": r.teacher_hidden, "num_hidden_layers": r.teacher_layers,
        "num_attention_heads": 4, "intermediate_size": r.teacher_intermediate,
        "visual_position_embeddings": r.visual_positions},
        heads={"count": 1}, name="teacher")


def clip_config(r: Recipe, vocab_size: int) -> LightCapConfig:
    """Stage 0's image side (with its attention pool) + a captioning decoder (no concepts)."""
    return student_config(vocab_size, r.image_size, visual={"attention_pool": True},
                          concepts={"enabled": False}, modulator={"enabled": False},
                          heads={"count": 1}, name="clip")


# ----------------------------------------------------------------------------------------------
# Shared pieces


class Context:
    """What every stage needs: recipe, run directory, processes, log, data."""

    def __init__(self, r: Recipe, run: str, d: Dist, log: Log):
        self.r, self.run, self.d, self.log = r, run, d, log
        self.tok = tokenizer()
        self.cfg = student_config(len(self.tok), r.image_size, fusion={
            "visual_position_embeddings": r.visual_positions, "num_hidden_layers": r.student_layers})
        self._splits = {}

    def path(self, *parts) -> str:
        return os.path.join(self.run, *parts)

    def split(self, name: str) -> D.Split:
        if name not in self._splits:
            r = self.r
            seed, count = {"train": (r.train_seed, r.train_count), "val": (r.val_seed, r.val_count)}[name]
            self._splits[name] = D.load_split(name, seed, count, self.cfg.image.size, r.cache,
                                              r.workers, self.log)
        return self._splits[name]

    def token_weights(self, relation_weight: float | None = None) -> torch.Tensor | None:
        """[V] loss weight of each target token: the relation words' weigh `relation_weight`
        (default: the recipe's cross-entropy weight), others 1; None when all are 1."""
        weight = self.r.relation_weight if relation_weight is None else relation_weight
        if weight == 1.0:
            return None
        w = torch.ones(len(self.tok))
        for word in RELATION_WORDS:
            w[self.tok.token_id(word)] = weight
        return w

    def captions(self, split: D.Split, idx, rng) -> list[list[int]]:
        texts = D.sample_captions(split, idx, rng, self.r.primary_weight)
        return [self.tok.encode(t) for t in texts]

    def done(self, stage: str) -> bool:
        return os.path.exists(self.path(stage, "final.pt"))

    def save_final(self, stage: str, obj) -> None:
        if self.d.main:
            os.makedirs(self.path(stage), exist_ok=True)
            torch.save(obj, self.path(stage, "final.pt.tmp"))
            os.replace(self.path(stage, "final.pt.tmp"), self.path(stage, "final.pt"))
        self.d.barrier()

    def load_final(self, stage: str):
        return torch.load(self.path(stage, "final.pt"), map_location="cpu", weights_only=False)


def fusion_logits(model: LightCap, grid, concept_ids, cb: D.CaptionBatch, hidden=False, attentions=False):
    """Per-head logits at the mask-stream rows [B, H, M, V] (+ hidden states, attentions)."""
    visual = model.image_projection(model.modulate(grid, concept_ids))  # [B, N, D]
    hs, att = model.bert(cb.token_ids, cb.type_ids, cb.position_ids, cb.mask, visual)
    rows = hs[-1][torch.arange(grid.shape[0])[:, None], cb.query_rows]  # [B, M, D]
    return model.head_logits(rows), (hs if hidden else None), (att if attentions else None)


def token_ce(logits, targets, weights=None) -> torch.Tensor:  # [B, M, V], [B, M], [V] or None
    """Mean cross-entropy of the valid targets; with `weights`, each target token's loss counts
    weights[target] times (a weighted mean)."""
    if weights is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    t = targets.reshape(-1)
    valid = t >= 0
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[valid], t[valid], reduction="none")
    w = weights[t[valid]]
    return (w * ce).sum() / w.sum()


def soft_ce(student, teacher, targets, temperature: float, weights=None) -> torch.Tensor:
    """T^2 * KL(teacher/T || student/T), the mean over the valid rows; with `weights` [V], each
    row counts weights[its target] times (a weighted mean, as token_ce)."""
    t_ids = targets.reshape(-1)
    valid = t_ids >= 0
    s = F.log_softmax(student.reshape(-1, student.shape[-1])[valid] / temperature, -1)
    t = F.log_softmax(teacher.reshape(-1, teacher.shape[-1])[valid] / temperature, -1)
    if weights is None:
        return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2
    kl = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    w = weights[t_ids[valid]]
    return (w * kl).sum() / w.sum() * temperature ** 2


@functools.cache
def relation_token_ids(tok: WordPiece) -> tuple[frozenset[int], dict[int, str]]:
    """(ids of a relation's first words, {id: word} of the shapes, colours and sizes)."""
    return (frozenset(tok.token_id(w) for w in ("to", "above", "below")),
            {tok.token_id(w): w for w in (*S.SHAPES, *S.COLOURS, *S.SIZES)})


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
                   and (o["size"] in named or not named & set(S.SIZES))]
        if len(matches) != 1:
            continue
        out.append((b, j, matches[0], objs[1] if matches[0] is objs[0] else objs[0]))
    return out


def binding_targets(tok: WordPiece, metas: list[dict], targets: torch.Tensor, side: int):
    """Where a relation word must look: the grid cells of the object it follows (the cell of
    its centre and every cell whose centre lies inside its bounding circle), where its position
    can be read. Returns [(row b, query j, cells)] for relation_queries' rows."""
    out = []
    for b, j, o, _ in relation_queries(tok, metas, targets):
        cell = metas[b].get("width", 256) / side  # render pixels per grid cell
        (x, y), r = o["centre"], o["radius"]
        cells = {centre_cell(o, side, metas[b].get("width", 256))}
        cells |= {gy * side + gx for gy in range(side) for gx in range(side)
                  if ((gx + 0.5) * cell - x) ** 2 + ((gy + 0.5) * cell - y) ** 2 <= r * r}
        out.append((b, j, sorted(cells)))
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


def binding_loss(att, cb: D.CaptionBatch, found, visual_tokens: int) -> torch.Tensor:
    """-log of the attention mass that head 0 of the last layer puts on the named object's
    cells, at each relation word of `found` (binding_targets), averaged. att: per layer
    [B, h, L, L], the visual keys last."""
    last = att[-1]
    start = last.shape[-1] - visual_tokens
    losses = [-torch.log(last[b, 0, cb.query_rows[b, j], [start + c for c in cells]].sum() + 1e-6)
              for b, j, cells in found]
    return torch.stack(losses).mean() if losses else last.new_zeros(())


@torch.no_grad()
def greedy_on_grid(model: LightCap, grid, concept_ids, max_length=None) -> list[list[int]]:
    """Batched greedy decoding from grid features (docs/FORMAT.md rule 11, the same inputs as
    LightCap.greedy, all images of the batch stepping together)."""
    max_length = max_length or model.config.decoding.max_length
    b = grid.shape[0]
    visual = model.image_projection(model.modulate(grid, concept_ids))
    tokens = [[] for _ in range(b)]
    live = list(range(b))
    for _ in range(max_length):
        if not live:
            break
        seg = model.caption_segment([tokens[i] for i in live], "mask")
        cids = None if concept_ids is None else concept_ids[live]
        ids, types, pos, mask = model.build_inputs(seg, cids)
        hs, _ = model.bert(ids, types, pos, mask, visual[live])
        rows = torch.tensor([len(tokens[i]) + 1 for i in live])
        logits = model.head_logits(hs[-1][torch.arange(len(live)), rows][:, None])[:, :, 0].mean(1)
        nxt = logits.argmax(-1).tolist()
        still = []
        for i, t in zip(live, nxt):
            if t != model.sep_id:
                tokens[i].append(t)
                still.append(i)
        live = still
    return tokens


def greedy_captions(ctx: Context, model: LightCap, grids, concept_ids, batch=100) -> dict[int, str]:
    """Greedy captions of the grids, by index."""
    model.eval()
    caps = {}
    for i in range(0, len(grids), batch):
        cids = None if concept_ids is None or model.concepts is None else concept_ids[i:i + batch]
        for j, toks in enumerate(greedy_on_grid(model, grids[i:i + batch].float(), cids)):
            caps[i + j] = ctx.tok.decode(toks)
    return caps


def quick_eval(ctx: Context, model: LightCap, grids, concept_ids, metas, refs=None, batch=100) -> dict:
    """Attribute / relation scores (and CIDEr-D when references are given) of greedy captions."""
    from .evaluate import coco_scores, scene_scores

    caps = greedy_captions(ctx, model, grids, concept_ids, batch)
    out = scene_scores(caps, {i: m for i, m in enumerate(metas)})
    if refs is not None:
        try:
            out["CIDEr-D"] = coco_scores(caps, refs)["CIDEr-D"]
        except Exception as e:  # java missing: scores without CIDEr
            ctx.log(f"evaluate: no CIDEr-D ({e})")
    out["example"] = caps[0]
    return out


def fmt(scores: dict) -> str:
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())


# ----------------------------------------------------------------------------------------------
# data


def stage_data(ctx: Context) -> None:
    r = ctx.r
    if ctx.d.main:
        ctx.split("train"), ctx.split("val")
        if not os.path.exists(os.path.join(r.test_dir, "objects.json")):
            ctx.log(f"data: writing the test split ({r.test_count} images, seed {r.test_seed}) to {r.test_dir}")
            S.write_split("test", r.test_seed, r.test_count, r.test_dir, progress=False)
    ctx.d.barrier()
    ctx.save_final("data", {"train": ctx.r.train_count, "val": ctx.r.val_count})


# ----------------------------------------------------------------------------------------------
# (0) CLIP


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
    singular = {p: s for s, p in S.PLURALS.items()}
    pools = (list(S.SIZES), list(S.COLOURS), list(S.SHAPES), list(S.BACKGROUNDS), ["three", "four"])
    known = {x for pool in pools for x in pool} | set(singular)
    slots = [i for i, w in enumerate(words) if w.rstrip(",") in known]
    i = slots[rng.integers(len(slots))]
    w = words[i].rstrip(",")
    tail = words[i][len(w):]
    for pool in pools:
        if w in pool or singular.get(w) in pool:
            options = [x for x in pool if x not in (w, singular.get(w))]
            new = options[rng.integers(len(options))]
            words[i] = (S.PLURALS[new] if w in singular else new) + tail
            return " ".join(words)
    raise AssertionError(caption)


class ClipObjective(nn.Module):
    """InfoNCE between the attention-pooled image embedding and the text tower's embedding
    (in-batch negatives + one hard negative caption per image), plus a CoCa-style captioning
    loss of a small fusion decoder on the grid, plus a per-cell region-label loss (cell_loss).
    The first `clip_region_steps` steps train the visual tower on the cell loss alone: trained
    jointly from the start, the contrastive and captioning losses settle on colours and sizes and
    the grid never tells shapes apart (shape accuracy 0.17 with chance 0.125, docs/RESULTS.md);
    on the cell loss alone the shapes come within a few hundred steps. The attention pool's positional embedding is
    fixed at zero, so the grid itself must say where things are (the fusion model's visual
    tokens get no position either)."""

    def __init__(self, ctx: Context):
        super().__init__()
        r = ctx.r
        self.ctx = ctx
        self.model = LightCap(clip_config(r, len(ctx.tok)), ctx.tok, [])
        pool = self.model.visual.attnpool
        pool.positional_embedding.data.zero_()
        pool.positional_embedding.requires_grad_(False)
        self.text, self.bpe = text_tower(ctx)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.model.visual.to(memory_format=torch.channels_last)
        self.cells = nn.Linear(self.model.config.grid_channels,
                               CELL_OUTPUTS + (len(S.RELATIONS) if r.clip_relation_cells else 0))

    def forward(self, step):
        ctx, r = self.ctx, self.ctx.r
        train = ctx.split("train")
        rng = batch_rng(r.seed, ctx.d, step)
        idx = rng.choice(len(train), r.clip_batch, replace=False)
        images = D.normalize(train.images[idx], ctx.cfg.image.mean, ctx.cfg.image.std)
        metas = [train.objects[i] for i in idx]
        if step < r.clip_region_steps:  # region pretraining: the grid must first tell shapes apart
            grid_tokens = self.model.visual.forward_grid(images).flatten(2).transpose(1, 2)
            cells, shape_acc = self.region_loss(grid_tokens, metas)
            return cells, {"cells": cells.item(), "cell_shape_acc": shape_acc}
        texts = D.sample_captions(train, idx, rng, r.primary_weight)
        negatives = [hard_negative(t, rng) for t in texts]
        tokens = self.bpe(texts + negatives, r.text_context)  # [2B, ctx]

        grid = self.model.visual.forward_grid(images)  # [B, C, G, G]
        image_emb = F.normalize(self.model.visual.attnpool(grid), dim=-1)  # [B, E]
        text_emb = F.normalize(self.text(tokens), dim=-1)  # [2B, E]
        logits = self.logit_scale.clamp(max=4.6052).exp() * image_emb @ text_emb.T  # [B, 2B]
        target = torch.arange(len(idx))
        clip = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :len(idx)].T, target))

        cb = D.caption_batch(self.model, [ctx.tok.encode(t) for t in texts], None)
        grid_tokens = grid.flatten(2).transpose(1, 2)  # [B, N, C]
        head_logits = fusion_logits(self.model, grid_tokens, None, cb)[0]  # [B, 1, M, V]
        caption = token_ce(head_logits[:, 0], cb.targets)
        cells, shape_acc = self.region_loss(grid_tokens, metas)
        acc = (logits.argmax(1) == target).float().mean()
        loss = clip + r.clip_caption_weight * caption + r.clip_cell_weight * cells
        return loss, {"clip": clip.item(), "caption": caption.item(), "cells": cells.item(),
                      "cell_shape_acc": shape_acc, "i2t_acc": acc.item()}

    def region_loss(self, grid_tokens: torch.Tensor, metas: list[dict]) -> tuple[torch.Tensor, float]:
        """cell_loss of the grid tokens [B, N, C], and the share of object cells whose shape is right."""
        t = cell_targets(metas, self.model.config.grid_side, relations=self.ctx.r.clip_relation_cells)
        out = self.cells(grid_tokens)
        return cell_loss(out, t), cell_shape_accuracy(out, t)


CELL_OUTPUTS = 1 + len(S.COLOURS) + len(S.SHAPES) + len(S.SIZES) + 2  # + len(S.RELATIONS) with relations


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
    k1 = 1 + len(S.COLOURS)
    labelled = t["shape"] >= 0
    right = out[..., k1:k1 + len(S.SHAPES)].argmax(-1)[labelled] == t["shape"][labelled]
    return right.float().sum().item() / max(1, int(labelled.sum()))


def cell_targets(metas: list[dict], side: int, image_side: float = 256.0,
                 relations: bool = False) -> dict[str, torch.Tensor]:
    """The region labels of `cell_loss` for a batch of scenes (scenes.scene_metadata): per grid
    cell, whether an object's centre lies in it, its colour / shape / size index (-100 where
    no object), its centre (fraction of the image side) and, with `relations`, its relation
    bits (scenes.RELATIONS: is there another object that this one is to the left of / right of /
    above / below)."""
    b, n = len(metas), side * side
    t = {"present": torch.zeros(b, n), "colour": torch.full((b, n), -100, dtype=torch.long),
         "centre": torch.zeros(b, n, 2)}
    if relations:
        t["relations"] = torch.zeros(b, n, len(S.RELATIONS))
    t["shape"], t["size"] = t["colour"].clone(), t["colour"].clone()
    colours, shapes, sizes = list(S.COLOURS), list(S.SHAPES), list(S.SIZES)
    for i, c, o in labelled_cells(metas, side, image_side):  # the larger one wins a shared cell
        x, y = o["centre"]
        t["present"][i, c] = 1
        t["colour"][i, c], t["shape"][i, c] = colours.index(o["colour"]), shapes.index(o["shape"])
        t["size"][i, c] = sizes.index(o["size"])
        t["centre"][i, c] = torch.tensor([x / image_side, y / image_side])
        if relations:
            t["relations"][i, c] = 0
            for other in metas[i]["objects"]:
                if other is not o:
                    t["relations"][i, c, S.RELATIONS.index(S.relation_of_centres(o["centre"], other["centre"]))] = 1
    return t


def cell_loss(out: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Region-label auxiliary loss of stage 0 (the labels the concept extractor also uses):
    every grid cell says whether an object's centre lies in it, and if so its colour, shape,
    size and its absolute centre in the image, so the grid itself must say what is where (the
    fusion model's visual tokens carry no position), and, when the targets have relation bits,
    where it lies relative to the scene's other objects, so that a caption's "A above B" could
    be read from A's own cell (cell_targets; recipe `clip_relation_cells`, off: it did not lift
    relation accuracy, docs/RESULTS.md). out: [B, N, 1 + 8 + 8 + 2 + 2 (+ 4 with relations)]."""
    b, n, _ = out.shape
    k1 = 1 + len(S.COLOURS)
    k2 = k1 + len(S.SHAPES)
    k3 = k2 + len(S.SIZES)
    loss = F.binary_cross_entropy_with_logits(out[..., 0], t["present"])
    loss = loss + F.cross_entropy(out[..., 1:k1].reshape(b * n, -1), t["colour"].reshape(-1), ignore_index=-100)
    loss = loss + F.cross_entropy(out[..., k1:k2].reshape(b * n, -1), t["shape"].reshape(-1), ignore_index=-100)
    loss = loss + F.cross_entropy(out[..., k2:k3].reshape(b * n, -1), t["size"].reshape(-1), ignore_index=-100)
    mask = t["present"].bool()
    if mask.any():
        loss = loss + 10 * F.l1_loss(out[..., k3:k3 + 2][mask], t["centre"][mask])
        if "relations" in t:
            loss = loss + F.binary_cross_entropy_with_logits(out[..., k3 + 2:][mask], t["relations"][mask])
    return loss


def stage_clip(ctx: Context) -> None:
    r = ctx.r
    obj = ClipObjective(ctx)
    ctx.log(f"clip: visual {parameter_count(obj.model.visual) / 1e6:.2f} M parameters, text "
            f"{parameter_count(obj.text) / 1e6:.2f} M, captioner {parameter_count(obj.model, ('visual',)) / 1e6:.2f} M")
    fit(obj, obj.parameters(), steps=r.clip_region_steps + r.clip_steps, lr=r.clip_lr, out_dir=ctx.path("clip"),
        log=ctx.log, d=ctx.d, name="clip", warmup=r.warmup, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every)
    visual = {k: v for k, v in obj.model.visual.state_dict().items() if not k.startswith("attnpool")}
    ctx.save_final("clip", {"visual": visual, "text": obj.text.state_dict(),
                            "captioner": obj.model.state_dict()})


def text_tower(ctx: Context):
    """The scenes CLIP's text transformer and its tokenizer (text_tower.py)."""
    from .text_tower import CLIPTextTransformer, TextTokenizer

    r = ctx.r
    text = CLIPTextTransformer(r.text_context, len(ctx.tok), r.text_width, r.text_heads, r.text_layers,
                               ctx.cfg.visual.output_dim, ctx.tok.token_id("[SEP]"))
    return text, TextTokenizer(ctx.tok)


def load_text_tower(ctx: Context):
    text, tokenizer = text_tower(ctx)
    text.load_state_dict(ctx.load_final("clip")["text"])
    return text.eval(), tokenizer


def frozen_visual(ctx: Context) -> nn.Module:
    model = LightCap(ctx.cfg, ctx.tok, S.CONCEPTS)
    model.visual.load_state_dict(ctx.load_final("clip")["visual"])
    return model.eval()


# ----------------------------------------------------------------------------------------------
# features


@torch.no_grad()
def stage_features(ctx: Context) -> None:
    """Grid features of the frozen CLIP for train, val and the test split (PNG files)."""
    from .evaluate import load_references, preprocess

    r = ctx.r
    if ctx.d.main:
        model = frozen_visual(ctx)
        model.visual.to(memory_format=torch.channels_last)
        out = {}
        for name in ("train", "val", "test"):
            if name == "test":
                images, refs, meta = load_references(r.test_dir)
                pixels = np.stack([preprocess(os.path.join(r.test_dir, "images", im["file_name"]), ctx.cfg)
                                   for im in images])
                metas = [meta[im["id"]] for im in images]
                refs = {i: refs[im["id"]] for i, im in enumerate(images)}
            else:
                split = ctx.split(name)
                pixels, metas = split.images, split.objects
                refs = {i: c for i, c in enumerate(split.captions)}
            grids = []
            t0 = time.time()
            for i in range(0, len(pixels), 200):
                x = D.normalize(pixels[i:i + 200], ctx.cfg.image.mean, ctx.cfg.image.std)
                grids.append(model.encode_image(x).half())  # [b, N, C]
            out[name] = {"grid": torch.cat(grids), "meta": metas, "refs": refs}
            ctx.log(f"features: {name} {tuple(out[name]['grid'].shape)} in {time.time() - t0:.0f} s")
        ctx.save_final("features", out)
    else:
        ctx.save_final("features", None)


class Features:
    def __init__(self, ctx: Context):
        f = ctx.load_final("features")
        self.grid = {k: v["grid"] for k, v in f.items()}
        self.meta = {k: v["meta"] for k, v in f.items()}
        self.refs = {k: v["refs"] for k, v in f.items()}


# ----------------------------------------------------------------------------------------------
# (1) concepts


def concept_prompts(concept: str) -> list[str]:
    """Prompt ensemble of a concept (CLIP's zero-shot prompt ensembling): scenes captions in
    which the concept is named, every other attribute varied. One-word prompts ("a red") are
    far from anything the scenes text tower was trained on and give nearly equal embeddings."""
    sizes, colours, shapes = list(S.SIZES), list(S.COLOURS), list(S.SHAPES)
    if concept in S.SHAPES:
        return [f"a {z} {c} {concept}" for z in sizes for c in colours]
    if concept in S.COLOURS:
        return [f"a {z} {concept} {h}" for z in sizes for h in shapes]
    if concept in S.SIZES:
        return [f"a {concept} {c} {h}" for c in colours for h in shapes]
    if concept in S.BACKGROUNDS:
        return [f"a {c} {h} on a {concept} background" for c in colours for h in shapes]
    rel = {"left": "to the left of", "right": "to the right of"}.get(concept, concept)
    return [f"a {c} {h} {rel} a {c2} {h2}" for c, c2 in zip(colours, colours[1:] + colours[:1])
            for h, h2 in zip(shapes, shapes[::-1])]


#: What config.json's concepts.prompt records for the tiny model (the engine never reads it).
PROMPT_NOTE = "scenes captions naming {} (prompt ensemble, orthogonalised: train.concept_embeddings)"


@torch.no_grad()
def concept_embeddings(text, tokenizer, context: int) -> torch.Tensor:
    """[K, E]: each concept's prompt-ensemble embedding (mean of the L2-normalised text
    embeddings of its prompts), then the orthonormal set nearest to them (symmetric, Loewdin
    orthogonalisation: (e e^T)^-1/2 e). The small scenes text tower gives sentence embeddings
    that share one large direction (prompts differ by one word: cosines of 0.99+ between
    'red' and 'blue' prompts), which would leave the concept extractor no margin to rank by."""
    e = torch.stack([F.normalize(text(tokenizer(concept_prompts(c), context)), dim=-1).mean(0)
                     for c in S.CONCEPTS]).double()  # [K, E]
    u, _, vt = torch.linalg.svd(e, full_matrices=False)  # e = U S V^T; nearest orthonormal: U V^T
    return (u @ vt).float()


class ConceptObjective(nn.Module):
    """Multi-label alignment: logit = scale * cos(mlp(region), concept text embedding) + bias,
    binary cross-entropy against the region labels of `data.region_labels`."""

    def __init__(self, ctx: Context, feats: Features, embeddings: torch.Tensor):
        super().__init__()
        self.ctx, self.feats = ctx, feats
        model = LightCap(ctx.cfg, ctx.tok, S.CONCEPTS)
        self.extractor = model.concepts
        self.extractor.embeddings.copy_(embeddings)
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(-3.0))
        boxes = D.window_boxes(ctx.cfg.concepts.windows, ctx.cfg.grid_side, 256)
        self.labels = torch.from_numpy(np.stack([D.region_labels(m, boxes, S.CONCEPTS)
                                                 for m in feats.meta["train"]]))  # [n, R, K]

    def forward(self, step):
        r = self.ctx.r
        rng = batch_rng(r.seed, self.ctx.d, step)
        idx = torch.from_numpy(rng.choice(len(self.labels), r.concept_batch, replace=False))
        regions = self.extractor.regions(self.feats.grid["train"][idx].float())  # [B, R, C]
        e = F.normalize(self.extractor.mlp(regions), dim=-1)  # [B, R, E]
        cos = e @ F.normalize(self.extractor.embeddings, dim=-1).T  # [B, R, K]
        logits = self.scale * cos + self.bias
        labels = self.labels[idx]
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        acc = ((logits > 0).float() == labels).float().mean()
        return loss, {"acc": acc.item()}


@torch.no_grad()
def concept_quality(extractor, grid, metas) -> dict:
    """Image level: how many of the scene's concepts are in the top k, and how many of the top k
    are in the scene (window 1 labels)."""
    ids, _ = extractor(grid.float())
    hit = total = 0
    box = [(0, 0, 256, 256)]
    for row, m in zip(ids.tolist(), metas):
        truth = set(np.flatnonzero(D.region_labels(m, box, S.CONCEPTS)[0]).tolist())
        hit += len(truth & set(row))
        total += len(truth)
    return {"recall_in_top_k": hit / max(total, 1), "precision_of_top_k": hit / ids.numel()}


def stage_concepts(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    text, bpe = load_text_tower(ctx)
    embeddings = concept_embeddings(text, bpe, r.text_context)  # [K, E]
    obj = ConceptObjective(ctx, feats, embeddings)
    fit(obj, obj.parameters(), steps=r.concept_steps, lr=r.concept_lr, out_dir=ctx.path("concepts"),
        log=ctx.log, d=ctx.d, name="concepts", warmup=r.warmup, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every)
    ext = obj.extractor.eval()
    ctx.log("concepts: val " + fmt(concept_quality(ext, feats.grid["val"], feats.meta["val"])))
    with torch.no_grad():
        ids = {k: torch.cat([ext(g[i:i + 1000].float())[0] for i in range(0, len(g), 1000)])
               for k, g in feats.grid.items()}
    ctx.save_final("concepts", {"extractor": ext.state_dict(), "ids": ids})


# ----------------------------------------------------------------------------------------------
# (2)-(4) fusion models


def fusion_model(ctx: Context, cfg: LightCapConfig) -> LightCap:
    """A fusion model whose concept extractor is stage 1's (frozen) and visual side unused."""
    model = LightCap(cfg, ctx.tok, S.CONCEPTS)
    if model.concepts is not None:
        model.concepts.load_state_dict(ctx.load_final("concepts")["extractor"])
    for name, p in model.named_parameters():
        if name.startswith(("visual.", "concepts.")):
            p.requires_grad_(False)
    return model


def trainable(model: nn.Module):
    return [p for p in model.parameters() if p.requires_grad]


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


class FusionBatches:
    """Training batches on cached features: grid, concept ids, two-stream caption batch."""

    def __init__(self, ctx: Context, feats: Features):
        self.ctx, self.feats = ctx, feats
        self.ids = ctx.load_final("concepts")["ids"]
        self.train = ctx.split("train")
        self.pairs = two_object_scenes(self.train.objects)
        if ctx.r.relation_hard > 0:
            hard = np.array([diagonality(self.train.objects[i]) >= HARD_PAIR_RATIO for i in self.pairs], dtype=bool)
            self.hard_pairs, self.easy_pairs = self.pairs[hard], self.pairs[~hard]

    def __call__(self, model: LightCap, step: int, batch: int, salt: int = 0):
        """`batch` train images with a caption each (the primary family with primary_weight),
        then `relation_extra` two-object images captioned with the primary family, which
        states their relation. Without the extra rows the fusion models never learn which of
        two objects is on top (docs/RESULTS.md). A share `relation_hard` of them are near-diagonal
        pairs, the rest the other pairs; with 0 they are drawn from all pairs alike."""
        r = self.ctx.r
        rng = batch_rng(r.seed + 1000 * salt, self.ctx.d, step)
        idx = rng.choice(len(self.train), batch, replace=False)
        captions = self.ctx.captions(self.train, idx, rng)
        if r.relation_extra and len(self.pairs):
            n = min(r.relation_extra, len(self.pairs))
            if r.relation_hard > 0:
                hard = min(int(round(n * r.relation_hard)), len(self.hard_pairs))
                extra = np.concatenate([rng.choice(self.hard_pairs, hard, replace=False),
                                        rng.choice(self.easy_pairs, min(n - hard, len(self.easy_pairs)), replace=False)])
            else:
                extra = rng.choice(self.pairs, n, replace=False)
            captions += [self.ctx.tok.encode(t) for t in D.sample_captions(self.train, extra, rng, 1.0)]
            idx = np.concatenate([idx, extra])
        grid = self.feats.grid["train"][idx].float()
        cids = self.ids["train"][idx] if model.concepts is not None else None
        cb = D.caption_batch(model, captions, cids)
        return grid, cids, cb, idx

    def binding(self, model: LightCap, idx, cb: D.CaptionBatch, att) -> torch.Tensor:
        """binding_loss of a batch drawn by __call__ (idx: its train images)."""
        metas = [self.train.objects[i] for i in idx]
        found = binding_targets(self.ctx.tok, metas, cb.targets, model.config.grid_side)
        return binding_loss(att, cb, found, model.config.num_visual_tokens)

    def offset_loss(self, head: nn.Module, idx, cb: D.CaptionBatch, hidden) -> torch.Tensor:
        """MSE of `head` on the last hidden states of a batch drawn by __call__ (idx: its train
        images) at its relation words' queries, against offset_targets (0 without any)."""
        rows, queries, target = offset_targets(self.ctx.tok, [self.train.objects[i] for i in idx], cb.targets)
        if not len(rows):
            return hidden[-1].new_zeros(())
        return F.mse_loss(head(hidden[-1][rows, cb.query_rows[rows, queries]]), target)


class CrossEntropyObjective(nn.Module):
    """Masked-token cross-entropy of every head (the teacher; the no-distillation rows). With
    the recipe's `offset_weight`, a linear map (training only, not exported) also regresses,
    from the last hidden state of each relation word's query, the offset between the two objects
    (offset_targets; MSE): the quantity the relation word is a threshold of."""

    def __init__(self, model: LightCap, batches: FusionBatches, batch: int, salt: int = 0):
        super().__init__()
        self.model, self.batches, self.batch, self.salt = model, batches, batch, salt
        self.weights = batches.ctx.token_weights()
        self.offset_weight = batches.ctx.r.offset_weight
        if self.offset_weight > 0:
            self.offset = nn.Linear(model.config.fusion.hidden_size, 3)

    def forward(self, step):
        grid, cids, cb, idx = self.batches(self.model, step, self.batch, self.salt)
        bind = self.batches.ctx.r.binding_weight
        logits, hs, att = fusion_logits(self.model, grid, cids, cb, hidden=self.offset_weight > 0,
                                        attentions=bind > 0)  # [B, H, M, V]
        loss = sum(token_ce(logits[:, h], cb.targets, self.weights) for h in range(logits.shape[1])) / logits.shape[1]
        extra = {}
        if bind > 0:
            b = self.batches.binding(self.model, idx, cb, att)
            loss = loss + bind * b
            extra["binding"] = b.item()
        if self.offset_weight > 0:
            o = self.batches.offset_loss(self.offset, idx, cb, hs)
            loss = loss + self.offset_weight * o
            extra["offset"] = o.item()
        hit = logits.mean(1).argmax(-1) == cb.targets  # [B, M]
        stats = {"token_acc": hit[cb.targets >= 0].float().mean().item()}
        if self.weights is not None:  # accuracy on the weighted (relation) tokens alone
            weighted = (cb.targets >= 0) & (self.weights[cb.targets.clamp(min=0)] != 1)
            if weighted.any():
                stats["relation_token_acc"] = hit[weighted].float().mean().item()
        return loss, {**stats, **extra}


def evaluate_fusion(ctx: Context, model: LightCap, feats: Features, split: str = "val",
                    refs: bool = False) -> dict:
    ids = ctx.load_final("concepts")["ids"][split] if model.concepts is not None else None
    return quick_eval(ctx, model, feats.grid[split], ids, feats.meta[split],
                      feats.refs[split] if refs else None, ctx.r.eval_batch)


def stage_teacher(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    model = fusion_model(ctx, teacher_config(r, len(ctx.tok)))
    ctx.log(f"teacher: {parameter_count(model, ('visual', 'concepts')) / 1e6:.2f} M fusion parameters")
    obj = CrossEntropyObjective(model, FusionBatches(ctx, feats), r.teacher_batch)

    def snapshot(c: int) -> None:
        torch.save(model.state_dict(), ctx.path("teacher", f"snapshot{c}.pt"))
        if c + 1 < r.teacher_cycles:  # progress: the last one is scored below
            ctx.log(f"teacher: snapshot {c} saved, val " + fmt(evaluate_fusion(ctx, model.eval(), feats)))
            model.train()
        else:
            ctx.log(f"teacher: snapshot {c} saved")

    fit(obj, trainable(obj), steps=r.teacher_steps, lr=r.teacher_lr, out_dir=ctx.path("teacher"),
        log=ctx.log, d=ctx.d, name="teacher", warmup=r.warmup, cycles=r.teacher_cycles,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every, on_cycle_end=snapshot)
    ctx.log("teacher: val " + fmt(evaluate_fusion(ctx, model.eval(), feats)))
    ctx.save_final("teacher", {"snapshots": [ctx.path("teacher", f"snapshot{c}.pt")
                                             for c in range(r.teacher_cycles)]})


def load_teachers(ctx: Context) -> list[LightCap]:
    teachers = []
    for saved in ctx.load_final("teacher")["snapshots"]:
        path = ctx.path("teacher", os.path.basename(saved))  # the run directory may have moved
        t = fusion_model(ctx, teacher_config(ctx.r, len(ctx.tok)))
        t.load_state_dict(torch.load(path, map_location="cpu"))
        for p in t.parameters():
            p.requires_grad_(False)
        teachers.append(t.eval())
    return teachers


def ensemble_teacher(head: int, heads: int, snapshots: int) -> int:
    """The teacher snapshot that head `head` of `heads` learns from in stage 4: the h-th of the
    last `heads` snapshots (the earlier snapshots are the weaker ones, so with more cycles than
    heads the first teach no head), cyclically when there are fewer snapshots than heads."""
    return (snapshots - heads + head) % snapshots


class DistillObjective(nn.Module):
    """Stage 3. phase "layers": attention (KL per query row) + hidden-state (MSE through one
    linear map W) distillation, student layer l <- teacher layer l * Lt / Ls, embeddings
    included (TinyBERT). phase "output": T^2 KL(teacher/T || student/T) + cross-entropy on the
    heads' ensemble. phase "ensemble" (stage 4): head h learns from snapshot ensemble_teacher(h)."""

    def __init__(self, student: LightCap, teachers: list[LightCap], batches: FusionBatches,
                 batch: int, phase: str, temperature: float):
        super().__init__()
        self.student, self.batches, self.batch = student, batches, batch
        self.teachers = teachers  # plain list: not parameters of the objective
        self.phase, self.temperature = phase, temperature
        self.weights = batches.ctx.token_weights()
        self.distill_weights = batches.ctx.token_weights(batches.ctx.r.relation_distill_weight)
        ds, dt = student.config.fusion.hidden_size, teachers[-1].config.fusion.hidden_size
        # used by the layer phase only; created in every phase because its initialisation draws
        # from torch's random stream, which the committed model's offset map comes after
        self.project = nn.Linear(ds, dt)
        # the teacher's offset target (CrossEntropyObjective) beside the output phases' losses
        self.offset_weight = batches.ctx.r.offset_weight if phase != "layers" else 0.0
        if self.offset_weight > 0:
            self.offset = nn.Linear(ds, 3)

    def forward(self, step):
        grid, cids, cb, idx = self.batches(self.student, step, self.batch)
        s_logits, s_hidden, s_att = fusion_logits(self.student, grid, cids, cb, hidden=True, attentions=True)
        bind = self.batches.ctx.r.binding_weight
        binding = self.batches.binding(self.student, idx, cb, s_att) if bind > 0 and self.phase != "layers" else None
        if self.phase == "layers":
            with torch.no_grad():
                _, t_hidden, t_att = fusion_logits(self.teachers[-1], grid, cids, cb, True, True)
            ls, lt = len(s_att), len(t_att)
            hidden = sum(F.mse_loss(self.project(s_hidden[l]), t_hidden[l * lt // ls]) for l in range(ls + 1))
            att = 0.0
            for l in range(1, ls + 1):
                t, s = t_att[l * lt // ls - 1], s_att[l - 1]  # [B, h, L, L]
                att = att + (t * ((t + 1e-9).log() - (s + 1e-9).log())).sum(-1).mean()
            return hidden + att, {"hidden": hidden.item(), "attention": att.item()}
        if self.phase == "output":
            with torch.no_grad():
                t_logits = fusion_logits(self.teachers[-1], grid, cids, cb)[0].mean(1)
            s = s_logits.mean(1)  # [B, M, V]
            kd = soft_ce(s, t_logits, cb.targets, self.temperature, self.distill_weights)
            ce = token_ce(s, cb.targets, self.weights)
        else:  # ensemble: head h <- teacher snapshot ensemble_teacher(h)
            kd = ce = 0.0
            heads = s_logits.shape[1]
            t_logits = {}  # by snapshot: with fewer snapshots than heads, one teaches several heads
            for h in range(heads):
                k = ensemble_teacher(h, heads, len(self.teachers))
                if k not in t_logits:
                    with torch.no_grad():
                        t_logits[k] = fusion_logits(self.teachers[k], grid, cids, cb)[0].mean(1)
                kd = kd + soft_ce(s_logits[:, h], t_logits[k], cb.targets, self.temperature, self.distill_weights) / heads
                ce = ce + token_ce(s_logits[:, h], cb.targets, self.weights) / heads
        loss, stats = kd + ce, {"kd": kd.item(), "ce": ce.item()}
        if binding is not None:
            loss, stats["binding"] = loss + bind * binding, binding.item()
        if self.offset_weight > 0:
            o = self.batches.offset_loss(self.offset, idx, cb, s_hidden)
            loss, stats["offset"] = loss + self.offset_weight * o, o.item()
        return loss, stats

    def trainable(self) -> list:
        """The student's parameters, and the objective's own maps where this phase uses them."""
        own = self.project.parameters() if self.phase == "layers" else \
            (self.offset.parameters() if self.offset_weight > 0 else [])
        return trainable(self.student) + list(own)


def student_model(ctx: Context, cfg: LightCapConfig | None = None) -> LightCap:
    return fusion_model(ctx, cfg or ctx.cfg)


def stage_student(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    batches = FusionBatches(ctx, feats)
    student = student_model(ctx)
    teachers = load_teachers(ctx)
    ctx.log(f"student: {parameter_count(student, ('visual', 'concepts')) / 1e6:.2f} M fusion parameters")
    layers = DistillObjective(student, teachers, batches, r.student_batch, "layers", r.temperature)
    fit(layers, layers.trainable(), steps=r.distill_steps, lr=r.student_lr, out_dir=ctx.path("student", "layers"),
        log=ctx.log, d=ctx.d, name="student/layers", warmup=r.warmup,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every)
    output = DistillObjective(student, teachers, batches, r.student_batch, "output", r.temperature)
    fit(output, output.trainable(), steps=r.output_steps, lr=r.student_lr, out_dir=ctx.path("student", "output"),
        log=ctx.log, d=ctx.d, name="student/output", warmup=r.warmup,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every)
    ctx.log("student: val " + fmt(evaluate_fusion(ctx, student.eval(), feats)))
    ctx.save_final("student", {"model": student.state_dict()})


def stage_ensemble(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    student = student_model(ctx)
    student.load_state_dict(ctx.load_final("student")["model"])
    obj = DistillObjective(student, load_teachers(ctx), FusionBatches(ctx, feats), r.student_batch,
                           "ensemble", r.temperature)
    fit(obj, obj.trainable(), steps=r.ensemble_steps, lr=r.student_lr / 2, out_dir=ctx.path("ensemble"),
        log=ctx.log, d=ctx.d, name="ensemble", warmup=r.warmup,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every)
    ctx.log("ensemble: val " + fmt(evaluate_fusion(ctx, student.eval(), feats)))
    ctx.save_final("ensemble", {"model": student.state_dict()})


# ----------------------------------------------------------------------------------------------
# (5) SCST (optional)


def stage_scst(ctx: Context) -> None:
    """Self-critical sequence training on CIDEr-D: reward of a sampled caption minus the reward
    of the greedy caption. The log-probabilities of the sampled caption come from one two-stream
    pass (data.caption_batch), which gives exactly the decoder's step distributions."""
    r = ctx.r
    src = "ensemble"
    if r.scst_steps <= 0:
        ctx.log("scst: skipped (scst_steps = 0)")
        ctx.save_final("scst", {"model": ctx.load_final(src)["model"], "skipped": True})
        return
    from .cider import CiderD

    feats = Features(ctx)
    batches = FusionBatches(ctx, feats)
    student = student_model(ctx)
    student.load_state_dict(ctx.load_final(src)["model"])
    train = ctx.split("train")
    scorer = CiderD([c for caps in train.captions for c in caps])

    class Objective(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = student

        def forward(self, step):
            rng = batch_rng(r.seed + 77, ctx.d, step)
            idx = rng.choice(len(train), r.scst_batch, replace=False)
            grid = feats.grid["train"][idx].float()
            cids = batches.ids["train"][idx]
            self.student.eval()
            greedy = greedy_on_grid(self.student, grid, cids)
            sampled = sample_on_grid(self.student, grid, cids, rng)
            self.student.train()
            refs = [train.captions[i] for i in idx]
            base = scorer.scores([ctx.tok.decode(t) for t in greedy], refs)
            reward = scorer.scores([ctx.tok.decode(t) for t in sampled], refs)
            cb = D.caption_batch(self.student, sampled, cids)
            logp = F.log_softmax(fusion_logits(self.student, grid, cids, cb)[0].mean(1), -1)  # [B, M, V]
            valid = cb.targets >= 0
            tok_logp = logp.gather(-1, cb.targets.clamp(min=0)[..., None])[..., 0] * valid
            adv = torch.tensor(reward - base, dtype=torch.float32)
            loss = -(adv[:, None] * tok_logp).sum() / valid.sum()
            return loss, {"reward": float(np.mean(reward)), "greedy": float(np.mean(base))}

    obj = Objective()
    fit(obj, trainable(student), steps=r.scst_steps, lr=r.scst_lr, out_dir=ctx.path("scst"),
        log=ctx.log, d=ctx.d, name="scst", warmup=0, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every)
    ctx.log("scst: val " + fmt(evaluate_fusion(ctx, student.eval(), feats)))
    ctx.save_final("scst", {"model": student.state_dict(), "skipped": False})


@torch.no_grad()
def sample_on_grid(model: LightCap, grid, concept_ids, rng: np.random.Generator, max_length=None):
    """Like greedy_on_grid, drawing each token from the ensemble's softmax."""
    max_length = max_length or model.config.decoding.max_length
    visual = model.image_projection(model.modulate(grid, concept_ids))
    tokens = [[] for _ in range(grid.shape[0])]
    live = list(range(grid.shape[0]))
    for _ in range(max_length):
        if not live:
            break
        seg = model.caption_segment([tokens[i] for i in live], "mask")
        ids, types, pos, mask = model.build_inputs(seg, concept_ids[live])
        hs, _ = model.bert(ids, types, pos, mask, visual[live])
        rows = torch.tensor([len(tokens[i]) + 1 for i in live])
        probs = torch.softmax(model.head_logits(hs[-1][torch.arange(len(live)), rows][:, None])[:, :, 0].mean(1), -1)
        still = []
        for i, p in zip(live, probs.double().numpy()):
            t = int(rng.choice(len(p), p=p / p.sum()))
            if t != model.sep_id:
                tokens[i].append(t)
                still.append(i)
        live = still
    return tokens


# ----------------------------------------------------------------------------------------------
# export, evaluate


def final_model(ctx: Context, source: str = "scst") -> LightCap:
    """The whole student: visual from (0), concept extractor from (1), the rest from `source`."""
    model = LightCap(ctx.cfg, ctx.tok, S.CONCEPTS)
    if not ctx.done(source):
        source = "ensemble"
    fusion = ctx.load_final(source)["model"]
    state = {k: v for k, v in fusion.items() if not k.startswith(("visual.", "concepts."))}
    state.update({f"visual.{k}": v for k, v in ctx.load_final("clip")["visual"].items()})
    state.update({f"concepts.{k}": v for k, v in ctx.load_final("concepts")["extractor"].items()})
    model.load_state_dict(state)
    return model.eval()


def stage_export(ctx: Context) -> None:
    from .export import export, load

    if ctx.d.main:
        model = final_model(ctx)
        out = export(model, ctx.tok, S.CONCEPTS, ctx.path("model"))
        # The exported (BatchNorm-folded) model must caption like the trained one.
        back = load(out)
        feats = Features(ctx)
        ids = ctx.load_final("concepts")["ids"]["val"][:16]
        a = greedy_on_grid(model, feats.grid["val"][:16].float(), ids)
        b = greedy_on_grid(back, feats.grid["val"][:16].float(), ids)
        if a != b:
            raise RuntimeError("the exported model decodes differently from the trained one")
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        ctx.log(f"export: {out} ({size / 1e6:.2f} MB)")
    ctx.save_final("export", {"dir": ctx.path("model")})


def stage_evaluate(ctx: Context) -> None:
    from .evaluate import evaluate
    from .export import load

    if ctx.d.main:
        t0 = time.time()
        model = load(ctx.path("model"))
        result = evaluate(model, ctx.r.test_dir, beam=1, log=ctx.log)
        result["seconds"] = time.time() - t0
        with open(ctx.path("eval.json"), "w") as f:
            json.dump(result, f, indent=1)
        ctx.log("evaluate: test " + fmt(result["scores"]))
    ctx.save_final("evaluate", {})


# ----------------------------------------------------------------------------------------------
# Ablation (docs/RESULTS.md)


def stage_ablation(ctx: Context, seeds: int = 1) -> None:
    """Rows on the test split, each student trained with the same number of steps and batch as
    the distilled student (stages 3 + 4): without distillation (cross-entropy only), without the
    concept extractor, without the modulator; plus the full student and the teacher. The three
    variants train first, so that the ablation can run beside the recipe's fusion stages."""
    r = ctx.r
    feats = Features(ctx)
    batches = FusionBatches(ctx, feats)
    steps = r.distill_steps + r.output_steps + r.ensemble_steps
    rows = []

    def row(name, model, seed=0):
        t0 = time.time()
        scores = evaluate_fusion(ctx, model.eval(), feats, "test", refs=True)
        scores.pop("example", None)
        rows.append({"row": name, "seed": seed,
                     "parameters": parameter_count(model, ("visual", "concepts")), **scores})
        ctx.log(f"ablation: {name} (seed {seed}) " + fmt(scores) + f" [{time.time() - t0:.0f} s]")
        if ctx.d.main:  # written after every row: a partial table survives an interrupted run
            with open(ctx.path("ablation.json"), "w") as f:
                json.dump({"steps": steps, "batch": r.student_batch, "relation_extra": r.relation_extra,
                           "rows": rows}, f, indent=1)

    variants = {"no distillation": {}, "no concept extractor": {"concepts": {"enabled": False},
                                                               "modulator": {"enabled": False}},
                "no modulator": {"modulator": {"enabled": False}}}
    for seed in range(seeds):
        for name, change in variants.items():
            path = ctx.path("ablation", f"{name.replace(' ', '_')}_{seed}")
            model = student_model(ctx, ctx.cfg.replace(**change) if change else ctx.cfg)
            torch.manual_seed(1000 + seed)
            model.reset_parameters()
            obj = CrossEntropyObjective(model, batches, r.student_batch, salt=seed)
            fit(obj, trainable(obj), steps=steps, lr=r.student_lr, out_dir=path, log=ctx.log, d=ctx.d,
                name=f"ablation/{name}/{seed}", warmup=r.warmup, checkpoint_every=r.checkpoint_every,
                log_every=r.log_every * 5)
            row(name, model, seed)
    while not ctx.done("ensemble"):  # the ablation may start beside the recipe's fusion stages
        time.sleep(30)
    row("teacher", load_teachers(ctx)[-1])
    full = student_model(ctx)
    full.load_state_dict(ctx.load_final("ensemble")["model"])
    row("full student (distilled)", full)


# ----------------------------------------------------------------------------------------------
# Command line


RUNNERS = {"data": stage_data, "clip": stage_clip, "features": stage_features,
           "concepts": stage_concepts, "teacher": stage_teacher, "student": stage_student,
           "ensemble": stage_ensemble, "scst": stage_scst, "export": stage_export,
           "evaluate": stage_evaluate}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("stage", help="one of " + ", ".join(STAGES + ["all", "ablation"]) +
                   ", or several stages separated by commas")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run directory (checkpoints, log, model); under torchrun write --run-dir "
                        "(torchrun's own parser takes --run for its --run-path)")
    p.add_argument("--recipe", default="default", help="preset: default or smoke")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe fields")
    p.add_argument("--force", action="store_true", help="rerun the stages from scratch (their checkpoints are deleted)")
    p.add_argument("--seeds", type=int, default=1, help="ablation: seeds per row")
    args = p.parse_args(argv)

    d = setup_dist()
    saved = os.path.join(args.run, "recipe.json")
    if os.path.exists(saved) and not args.set and args.recipe == "default":
        r = Recipe(**json.load(open(saved)))  # resume with the run's own recipe
    else:
        r = Recipe.preset(args.recipe).updated(args.set)
    torch.set_num_threads(r.threads)
    torch.manual_seed(r.seed)
    log = Log(args.run, d)
    if d.main:
        os.makedirs(args.run, exist_ok=True)
        with open(saved, "w") as f:
            json.dump(dataclasses.asdict(r), f, indent=1)
    ctx = Context(r, args.run, d, log)
    log(f"train {args.stage}: run {args.run}, {d.world} process(es), recipe {args.recipe} "
        f"{' '.join(args.set)}")
    stages = STAGES if args.stage == "all" else args.stage.split(",")
    unknown = [x for x in stages if x not in STAGES + ["ablation"]]
    if unknown:
        p.error(f"unknown stage {', '.join(unknown)} (stages: {', '.join(STAGES)}, all, ablation)")
    for stage in stages:
        if args.stage == "ablation":
            stage_ablation(ctx, args.seeds)
            break
        if ctx.done(stage) and not args.force:
            log(f"{stage}: done already")
            continue
        if args.force and d.main and os.path.isdir(ctx.path(stage)):
            import shutil
            shutil.rmtree(ctx.path(stage))  # start over: no checkpoint to resume from
        d.barrier()
        t0 = time.time()
        log(f"{stage}: start")
        torch.manual_seed(r.seed + 17 * STAGES.index(stage))
        RUNNERS[stage](ctx)
        log(f"{stage}: finished in {(time.time() - t0) / 60:.1f} min")
    if d.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
