"""The losses of the recipe's stages and the decoding they validate with, on cached grid features.

An objective is an nn.Module whose forward(step) returns (loss, stats); recipe.trainer.fit runs
it. Each draws its batch from a generator seeded by (seed, rank, step) (trainer.batch_rng), so a
resumed run sees the batches it would have seen.

- ClipObjective      stage 0 without a checkpoint: a small CLIP trained contrastively, with a
                     captioning loss (and, on the scenes, the grid-cell loss and hard negatives)
- ConceptObjective   stage 1: the concept extractor's alignment MLP, on region labels (scenes)
                     or image labels scored by the best region (any data), as inference ranks
- CrossEntropyObjective  the teacher (stage 2) and the ablation's rows
- DistillObjective   stages 3 and 4: layer, output and ensemble distillation
Batches of stages 2-5 come from FusionBatches.

Shapes: B batch, H heads, M mask queries, V vocabulary, N grid tokens, C grid channels,
R regions, K concepts, E joint embedding, D fusion hidden size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightcap_train.data import batches
from lightcap_train.data import scenes_dataset
from lightcap_train.recipe.trainer import batch_rng
from lightcap_train.reference.model import LightCap


def fusion_logits(model: LightCap, grid, concept_ids, cb: batches.CaptionBatch, hidden=False, attentions=False):
    """Per-head logits at the mask-stream rows [B, H, M, V] (+ hidden states, attentions)."""
    visual = model.image_projection(model.modulate(grid, concept_ids))  # [B, N, D]
    hs, att = model.bert(cb.token_ids, cb.type_ids, cb.position_ids, cb.mask, visual)
    rows = hs[-1][torch.arange(grid.shape[0], device=grid.device)[:, None], cb.query_rows]  # [B, M, D]
    return model.head_logits(rows), (hs if hidden else None), (att if attentions else None)


def token_ce(logits, targets, weight: torch.Tensor | None = None) -> torch.Tensor:  # [B, M, V], [B, M]
    """Mean cross-entropy of the valid targets (-100 = none); with `weight` [V], the mean
    weighted by each target token's weight."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), weight=weight,
                           ignore_index=-100)


def concept_token_weights(ctx, vocab_size: int) -> torch.Tensor | None:
    """[V] cross-entropy weights: the recipe's `concept_token_weight` for every WordPiece of a
    concept word, 1 for the others; None when that weight is 1 (the plain mean)."""
    w = ctx.r.concept_token_weight
    if w == 1.0:
        return None
    weights = torch.ones(vocab_size)
    for concept in ctx.concepts:
        weights[ctx.tok.encode(concept)] = w
    return weights.to(ctx.device)


def soft_ce(student, teacher, targets, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher/T || student/T), the mean over the valid rows."""
    valid = targets.reshape(-1) >= 0
    s = F.log_softmax(student.reshape(-1, student.shape[-1])[valid].float() / temperature, -1)
    t = F.log_softmax(teacher.reshape(-1, teacher.shape[-1])[valid].float() / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


# ----------------------------------------------------------------------------------------------
# Decoding on grid features (validation, SCST)


def _decode_on_grid(model: LightCap, grid, concept_ids, choose, max_length=None) -> list[list[int]]:
    """Batched decoding from grid features (docs/FORMAT.md rule 11, the same inputs as
    LightCap.greedy, all images of the batch stepping together); `choose(live, logits)` picks
    each live row's next token from the heads' mean logits [b, V]."""
    max_length = max_length or model.config.decoding.max_length
    device = grid.device
    visual = model.image_projection(model.modulate(grid, concept_ids))
    tokens = [[] for _ in range(grid.shape[0])]
    live = list(range(grid.shape[0]))
    for _ in range(max_length):
        if not live:
            break
        seg = model.caption_segment([tokens[i] for i in live], "mask").to(device)
        cids = None if concept_ids is None else concept_ids[live]
        ids, types, pos, mask = model.build_inputs(seg, cids)
        hs, _ = model.bert(ids, types, pos, mask, visual[live])
        rows = torch.tensor([len(tokens[i]) + 1 for i in live], device=device)
        logits = model.head_logits(hs[-1][torch.arange(len(live), device=device), rows][:, None])[:, :, 0].mean(1)
        still = []
        for i, t in zip(live, choose(live, logits.float())):
            if t != model.sep_id:
                tokens[i].append(t)
                still.append(i)
        live = still
    return tokens


@torch.no_grad()
def greedy_on_grid(model: LightCap, grid, concept_ids, max_length=None) -> list[list[int]]:
    return _decode_on_grid(model, grid, concept_ids, lambda live, logits: logits.argmax(-1).tolist(), max_length)


@torch.no_grad()
def sample_on_grid(model: LightCap, grid, concept_ids, rng: np.random.Generator, max_length=None):
    """Like greedy_on_grid, drawing each token from the ensemble's softmax."""
    def draw(live, logits):
        probs = torch.softmax(logits, -1).double().cpu().numpy()
        return [int(rng.choice(len(p), p=p / p.sum())) for p in probs]
    return _decode_on_grid(model, grid, concept_ids, draw, max_length)


# ----------------------------------------------------------------------------------------------
# (0) CLIP


class ClipObjective(nn.Module):
    """InfoNCE between the attention-pooled image embedding and the text tower's embedding
    (in-batch negatives, plus one hard negative caption per image on the scenes), plus a
    CoCa-style captioning loss of a small fusion decoder on the grid, plus on the scenes a
    per-cell region-label loss (scenes_dataset.cell_loss). On the scenes the first
    `clip_region_steps` steps train the visual tower on the cell loss alone: trained jointly from
    the start, the contrastive and captioning losses settle on colours and sizes and the grid
    never tells shapes apart (shape accuracy 0.17 with chance 0.125, docs/RESULTS.md). The
    attention pool's positional embedding is fixed at zero, so the grid itself must say where
    things are (the fusion model's visual tokens get no position either)."""

    def __init__(self, ctx, model: LightCap, text: nn.Module, text_tokenizer):
        super().__init__()
        r = ctx.r
        self.ctx = ctx
        self.model = model
        pool = self.model.visual.attnpool
        pool.positional_embedding.data.zero_()
        pool.positional_embedding.requires_grad_(False)
        self.text, self.bpe = text, text_tokenizer
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.model.visual.to(memory_format=torch.channels_last)
        self.scenes = ctx.data.kind == "scenes"
        self.regions = ctx.data.regions()
        self.region_steps = r.clip_region_steps if self.regions else 0
        if self.regions:
            self.cells = nn.Linear(self.model.config.grid_channels, self.regions.outputs)

    def forward(self, step):
        ctx, r = self.ctx, self.ctx.r
        rng = batch_rng(r.seed, ctx.d, step)
        idx = rng.choice(ctx.data.train_count(), r.clip_batch, replace=False)
        images = ctx.data.train_pixels(idx, ctx.cfg).to(ctx.device)
        metas = ctx.data.train_metas(idx)
        if step < self.region_steps:  # region pretraining: the grid must first tell shapes apart
            grid_tokens = self.model.visual.forward_grid(images).flatten(2).transpose(1, 2)
            cells, cell_acc = self.region_loss(grid_tokens, metas)
            return cells, {"cells": cells.detach(), self.regions.accuracy_name: cell_acc}
        texts = ctx.data.sample_captions(ctx.data.train_references(idx), metas, rng)
        negatives = [scenes_dataset.hard_negative(t, rng) for t in texts] if self.scenes else []
        tokens = self.bpe(texts + negatives, r.text_context).to(ctx.device)  # [B (+B), ctx]

        grid = self.model.visual.forward_grid(images)  # [B, C, G, G]
        image_emb = F.normalize(self.model.visual.attnpool(grid).float(), dim=-1)  # [B, E]
        text_emb = F.normalize(self.text(tokens).float(), dim=-1)  # [B (+B), E]
        logits = self.logit_scale.clamp(max=4.6052).exp() * image_emb @ text_emb.T  # [B, B (+B)]
        target = torch.arange(len(idx), device=ctx.device)
        clip = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :len(idx)].T, target))

        cb = batches.caption_batch(self.model, ctx.encode_captions(texts), None).to(ctx.device)
        grid_tokens = grid.flatten(2).transpose(1, 2)  # [B, N, C]
        head_logits = fusion_logits(self.model, grid_tokens, None, cb)[0]  # [B, 1, M, V]
        caption = token_ce(head_logits[:, 0], cb.targets)
        acc = (logits.argmax(1) == target).float().mean()
        loss = clip + r.clip_caption_weight * caption
        stats = {"clip": clip.detach(), "caption": caption.detach()}
        if self.regions:
            cells, cell_acc = self.region_loss(grid_tokens, metas)
            loss = loss + r.clip_cell_weight * cells
            stats.update({"cells": cells.detach(), self.regions.accuracy_name: cell_acc})
        return loss, {**stats, "i2t_acc": acc.detach()}

    def region_loss(self, grid_tokens: torch.Tensor, metas: list[dict]) -> tuple[torch.Tensor, float]:
        """The data set's region loss of the grid tokens [B, N, C], and its accuracy."""
        t = {k: v.to(grid_tokens.device) for k, v in self.regions.targets(metas, self.model.config.grid_side).items()}
        out = self.cells(grid_tokens)
        return self.regions.loss(out, t), self.regions.accuracy(out, t)


# ----------------------------------------------------------------------------------------------
# (1) concepts


class ConceptObjective(nn.Module):
    """Multi-label alignment: logit = scale * cos(mlp(region), concept text embedding) + bias,
    binary cross-entropy. With region labels [n, R, K] (the scenes: what lies in each window)
    every region is scored; with image labels [n, K] (any data: the concepts the references
    name) the image's score of a concept is its best region's cosine, the score inference ranks
    concepts by (docs/FORMAT.md 3)."""

    def __init__(self, ctx, extractor: nn.Module, grids, labels: torch.Tensor):
        super().__init__()
        self.ctx, self.grids, self.labels = ctx, grids, labels
        self.extractor = extractor
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(-3.0))

    def forward(self, step):
        r, device = self.ctx.r, self.ctx.device
        rng = batch_rng(r.seed, self.ctx.d, step)
        idx = torch.from_numpy(rng.choice(len(self.labels), min(r.concept_batch, len(self.labels)), replace=False))
        regions = self.extractor.regions(self.grids[idx].to(device).float())  # [B, R, C]
        e = F.normalize(self.extractor.mlp(regions), dim=-1)  # [B, R, E]
        cos = e @ F.normalize(self.extractor.embeddings, dim=-1).T  # [B, R, K]
        if self.labels.ndim == 2:
            cos = cos.max(1).values  # [B, K]: the best region
        logits = self.scale * cos.float() + self.bias
        labels = self.labels[idx].to(device)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        acc = ((logits > 0).float() == labels).float().mean()
        return loss, {"acc": acc.detach()}


@torch.no_grad()
def concept_quality(extractor, grids, labels: torch.Tensor, device="cpu", batch: int = 1000,
                    ks: tuple[int, ...] = (1, 2, 3, 5, 10)) -> dict:
    """Image level, on labels [n, K] (1 = the image shows the concept): the share of the labelled
    concepts that are in the extractor's top k (recall) and of the top k that are labelled
    (precision); also both at each smaller k of `ks` (the first k of the ranked top k), which is
    what a smaller `concept_top_k` would give the fusion model."""
    ids = torch.cat([extractor(grids[i:i + batch].to(device).float())[0].cpu() for i in range(0, len(labels), batch)])
    top_k = ids.shape[1]
    out = {}
    for k in sorted({k for k in ks if k < top_k} | {top_k}):
        hit = int(labels.gather(1, ids[:, :k]).sum())
        suffix = "top_k" if k == top_k else f"top_{k}"
        out[f"recall_in_{suffix}"] = hit / max(int(labels.sum()), 1)
        out[f"precision_of_{suffix}"] = hit / max(ids[:, :k].numel(), 1)
    return out


# ----------------------------------------------------------------------------------------------
# (2)-(4) fusion models


def trainable(model: nn.Module):
    return [p for p in model.parameters() if p.requires_grad]


class FusionBatches:
    """Training batches on cached features: grid, concept ids, two-stream caption batch, on the
    run's device. On the scenes (recipe `relation_extra`), each batch also gets two-object scenes
    captioned with the primary family, which states their relation; without them the fusion
    models never learn which of two objects is on top (docs/RESULTS.md). A share
    `relation_hard` of them are near-diagonal pairs, the rest the other pairs."""

    def __init__(self, ctx, feats, ids: dict):
        self.ctx, self.feats = ctx, feats
        self.ids = ids
        self.refs, self.metas = feats.refs["train"], feats.meta["train"]
        r = ctx.r
        self.pairs = np.zeros(0, dtype=np.int64)
        if ctx.data.kind == "scenes" and r.relation_extra:
            self.pairs = scenes_dataset.two_object_scenes(self.metas)
            if r.relation_hard > 0:
                hard = np.array([scenes_dataset.diagonality(self.metas[i]) >= scenes_dataset.HARD_PAIR_RATIO for i in self.pairs], dtype=bool)
                self.hard_pairs, self.easy_pairs = self.pairs[hard], self.pairs[~hard]

    def __call__(self, model: LightCap, step: int, batch: int, salt: int = 0):
        r, data = self.ctx.r, self.ctx.data
        rng = batch_rng(r.seed + 1000 * salt, self.ctx.d, step)
        idx = rng.choice(len(self.refs), batch, replace=False)
        texts = data.sample_captions([self.refs[i] for i in idx], [self.metas[i] for i in idx], rng)
        if len(self.pairs):
            n = min(r.relation_extra, len(self.pairs))
            if r.relation_hard > 0:
                hard = min(int(round(n * r.relation_hard)), len(self.hard_pairs))
                extra = np.concatenate([rng.choice(self.hard_pairs, hard, replace=False),
                                        rng.choice(self.easy_pairs, min(n - hard, len(self.easy_pairs)), replace=False)])
            else:
                extra = rng.choice(self.pairs, n, replace=False)
            texts += data.sample_captions([self.refs[i] for i in extra], [self.metas[i] for i in extra], rng, 1.0)
            idx = np.concatenate([idx, extra])
        device = self.ctx.device
        grid = self.feats.grid["train"][idx].to(device).float()
        cids = self.ids["train"][idx].to(device) if model.concepts is not None else None
        cb = batches.caption_batch(model, self.ctx.encode_captions(texts), None if cids is None else cids.cpu()).to(device)
        return grid, cids, cb, idx

    def offset_loss(self, head: nn.Module, idx, cb: batches.CaptionBatch, hidden) -> torch.Tensor:
        """MSE of `head` on the last hidden states of a batch drawn by __call__ (idx: its train
        images) at its relation words' queries, against scenes_dataset.offset_targets (0 without
        any)."""
        rows, queries, target = scenes_dataset.offset_targets(self.ctx.tok, [self.metas[i] for i in idx], cb.targets.cpu())
        if not len(rows):
            return hidden[-1].new_zeros(())
        device = hidden[-1].device
        rows, queries = rows.to(device), queries.to(device)
        return F.mse_loss(head(hidden[-1][rows, cb.query_rows[rows, queries]]).float(), target.to(device))


def offset_weight(ctx) -> float:
    """The scenes' offset target weight (0 on other data sets: they name no object pairs)."""
    return ctx.r.offset_weight if ctx.data.kind == "scenes" else 0.0


class CrossEntropyObjective(nn.Module):
    """Masked-token cross-entropy of every head (the teacher; the no-distillation rows). On the
    scenes, with the recipe's `offset_weight`, a linear map (training only, not exported) also
    regresses, from the last hidden state of each relation word's query, the offset between the
    two objects (scenes_dataset.offset_targets; MSE): the quantity the relation word is a
    threshold of (docs/RESULTS.md: test relation accuracy 0.908 -> 0.950)."""

    def __init__(self, model: LightCap, batches: FusionBatches, batch: int, salt: int = 0):
        super().__init__()
        self.model, self.batches, self.batch, self.salt = model, batches, batch, salt
        self.offset_weight = offset_weight(batches.ctx)
        self.token_weight = concept_token_weights(batches.ctx, model.config.fusion.vocab_size)
        if self.offset_weight > 0:
            self.offset = nn.Linear(model.config.fusion.hidden_size, 3).to(batches.ctx.device)

    def forward(self, step):
        grid, cids, cb, idx = self.batches(self.model, step, self.batch, self.salt)
        logits, hs, _ = fusion_logits(self.model, grid, cids, cb, hidden=self.offset_weight > 0)  # [B, H, M, V]
        loss = sum(token_ce(logits[:, h], cb.targets, self.token_weight) for h in range(logits.shape[1])) / logits.shape[1]
        extra = {}
        if self.offset_weight > 0:
            o = self.batches.offset_loss(self.offset, idx, cb, hs)
            loss = loss + self.offset_weight * o
            extra["offset"] = o.detach()
        hit = logits.mean(1).argmax(-1) == cb.targets  # [B, M]
        return loss, {"token_acc": hit[cb.targets >= 0].float().mean().detach(), **extra}


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
        device = batches.ctx.device
        ds, dt = student.config.fusion.hidden_size, teachers[-1].config.fusion.hidden_size
        # used by the layer phase only; created in every phase because its initialisation draws
        # from torch's random stream, which the committed model's offset map comes after
        self.project = nn.Linear(ds, dt).to(device)
        # the teacher's offset target (CrossEntropyObjective) beside the output phases' losses
        self.offset_weight = offset_weight(batches.ctx) if phase != "layers" else 0.0
        if self.offset_weight > 0:
            self.offset = nn.Linear(ds, 3).to(device)
        self.token_weight = concept_token_weights(batches.ctx, student.config.fusion.vocab_size)

    def forward(self, step):
        grid, cids, cb, idx = self.batches(self.student, step, self.batch)
        s_logits, s_hidden, s_att = fusion_logits(self.student, grid, cids, cb, hidden=True, attentions=True)
        if self.phase == "layers":
            with torch.no_grad():
                _, t_hidden, t_att = fusion_logits(self.teachers[-1], grid, cids, cb, True, True)
            ls, lt = len(s_att), len(t_att)
            hidden = sum(F.mse_loss(self.project(s_hidden[l]).float(), t_hidden[l * lt // ls].float())
                         for l in range(ls + 1))
            att = 0.0
            for l in range(1, ls + 1):
                t, s = t_att[l * lt // ls - 1].float(), s_att[l - 1].float()  # [B, h, L, L]
                att = att + (t * ((t + 1e-9).log() - (s + 1e-9).log())).sum(-1).mean()
            return hidden + att, {"hidden": hidden.detach(), "attention": att.detach()}
        if self.phase == "output":
            with torch.no_grad():
                t_logits = fusion_logits(self.teachers[-1], grid, cids, cb)[0].mean(1)
            s = s_logits.mean(1)  # [B, M, V]
            kd = soft_ce(s, t_logits, cb.targets, self.temperature)
            ce = token_ce(s, cb.targets, self.token_weight)
        else:  # ensemble: head h <- teacher snapshot ensemble_teacher(h)
            kd = ce = 0.0
            heads = s_logits.shape[1]
            t_logits = {}  # by snapshot: with fewer snapshots than heads, one teaches several heads
            for h in range(heads):
                k = ensemble_teacher(h, heads, len(self.teachers))
                if k not in t_logits:
                    with torch.no_grad():
                        t_logits[k] = fusion_logits(self.teachers[k], grid, cids, cb)[0].mean(1)
                kd = kd + soft_ce(s_logits[:, h], t_logits[k], cb.targets, self.temperature) / heads
                ce = ce + token_ce(s_logits[:, h], cb.targets, self.token_weight) / heads
        loss, stats = kd + ce, {"kd": kd.detach(), "ce": ce.detach()}
        if self.offset_weight > 0:
            o = self.batches.offset_loss(self.offset, idx, cb, s_hidden)
            loss, stats["offset"] = loss + self.offset_weight * o, o.detach()
        return loss, stats

    def trainable(self) -> list:
        """The student's parameters, and the objective's own maps where this phase uses them."""
        own = self.project.parameters() if self.phase == "layers" else \
            (self.offset.parameters() if self.offset_weight > 0 else [])
        return trainable(self.student) + list(own)
