"""The LightCap training recipe, as resumable stages (docs/TRAINING.md).

    python -m lightcap_train.recipe.train STAGE --run DIR [DATA] [CHECKPOINTS]
        [--device cpu|cuda] [--precision fp32|bf16] [--recipe default|smoke|coco|objects] [--set key=value ...]

DATA, one of:
  (nothing)                         the rendered scenes (docs/SCENES.md): the committed default model
  --annotations FILE --images DIR   COCO captions JSON for training, with optional
                                    --val-annotations/--val-images and --test-annotations/
                                    --test-images; without a val file, `val_count` images of the
                                    training file are held out for validation
  --karpathy FILE --image-root DIR  Karpathy's dataset_coco.json: train + restval / val / test
  --skip-bad-images                 drop missing or corrupt images (listed in the log) instead of
                                    stopping before training
CHECKPOINTS (any data but the scenes):
  --clip CKPT          an OpenAI TorchScript RN50 or an open_clip state dict: replaces stage 0;
                       the model's image side and the concept embeddings come from it
  --bert DIR           a Hugging Face BERT (e.g. TinyBERT-4): the student and its vocabulary
  --teacher-bert DIR   the teacher (e.g. BERT-base): same vocabulary and head count as the student
  --concepts FILE      the concept vocabulary (else the `concept_count` words the training
                       captions name most, stop words out, plurals folded)

STAGE, in order (`all` runs every one that is not finished yet):
  data      scenes: render the train/val splits into the cache and write the test split's files;
            other data: read and check the caption files and every image, mine the concepts (and
            without --bert the vocabulary)
  clip      (0) --clip: the checkpoint's image and text towers. Else a small CLIP trained
            contrastively with a CoCa-style captioning loss on its grid (on the scenes also a
            grid-cell loss, NegCLIP hard negatives and region pretraining); frozen from here on
  features  the frozen CLIP's grid of every train/val/test image, as fp16 shards (data/features.py)
  concepts  (1) the concept extractor's alignment MLP: on region labels (scenes) or on the image
            labels the references give, scored by the best region as inference ranks
  teacher   (2) a larger fusion model, with snapshot (cyclic) learning rate: one teacher per cycle
  student   (3) sequential distillation: attention + hidden-state distillation with a layer
            map, then output distillation with temperature + cross-entropy
  ensemble  (4) each parallel head distilled from its own teacher snapshot
  scst      (5) optional CIDEr-D optimisation (self-critical); off unless --set scst_steps=N
  export    the model directory (docs/FORMAT.md) in DIR/model
  evaluate  the exported model on the test split (else val): DIR/eval.json; on captioned data also
            DIR/eval/results.json ([{"image_id", "caption"}]) and DIR/eval/annotations.json
Every stage writes DIR/<stage>/final.pt when done and resumes from DIR/<stage>/ckpt.pt; the
run's recipe (with the data and checkpoint paths) is DIR/recipe.json, so `--run DIR` alone
resumes. Under `torchrun --nproc_per_node N` the stages train data-parallel (NCCL on GPUs,
gloo on CPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightcap_train.data import batches
from lightcap_train.data import scenes, scenes_dataset
from lightcap_train.data.features import GridShards, write_features
from lightcap_train.recipe import objectives
from lightcap_train.recipe.trainer import Dist, Log, batch_rng, fit, parameter_count, setup_dist
from lightcap_train.reference.clip_text import CLIPTextTransformer, ClipTextConfig, WordPieceTextTokenizer
from lightcap_train.reference.config import FusionConfig, LightCapConfig
from lightcap_train.reference.model import LightCap

STAGES = ["data", "clip", "features", "concepts", "teacher", "student", "ensemble", "scst",
          "export", "evaluate"]


@dataclass
class Recipe:
    """Every knob of a training run (saved as DIR/recipe.json)."""
    seed: int = 0
    cache: str = "data/cache"
    threads: int = 2  # torch threads: deterministic for a given count (1: 1.6x slower, a different model)
    workers: int = 2  # rendering processes, image checks
    # data: "scenes", "coco" or "karpathy" (set by the command line's data options)
    data: str = "scenes"
    annotations: str = ""
    images: str = ""
    val_annotations: str = ""
    val_images: str = ""
    test_annotations: str = ""
    test_images: str = ""
    karpathy: str = ""
    image_root: str = ""
    skip_bad_images: bool = False
    instances: str = ""  # COCO instances JSON of the training images: boxes supervise stage 0's grid
    # checkpoints (captioned data only; empty: trained here from scratch)
    clip: str = ""
    clip_text_act: str = ""  # "gelu" / "quick_gelu"; empty: quick_gelu for OpenAI archives
    bert: str = ""
    teacher_bert: str = ""
    concepts_file: str = ""
    concept_count: int = 1000  # mined concepts (captioned data without --concepts)
    concept_min_refs: int = 2  # an image shows a concept when this many of its references name it
    vocab_size: int = 8000  # mined WordPiece vocabulary without --bert (most frequent words)
    # captioned data: the model's text side (the scenes keep the committed tiny sizes)
    concept_top_k: int = 20  # concepts kept per image (paper: 20)
    concept_token_weight: float = 1.0  # cross-entropy weight of the concept words' pieces (objectives.concept_token_weights)
    heads: int = 3  # parallel prediction heads
    max_length: int = 20  # decoding
    caption_tokens: int = 40  # caption segment: longer references are truncated (counted in the log)
    beam: int = 5  # config.json decoding.beam_size of the exported model
    # devices
    device: str = "cpu"  # "cpu" or "cuda" (torchrun: one GPU per process, LOCAL_RANK)
    precision: str = "fp32"  # "fp32" or "bf16" (autocast of the training steps)
    feature_batch: int = 200
    feature_workers: int = 2  # DataLoader processes decoding images for the features stage
    feature_shard: int = 2000  # images per feature shard file
    val_eval_count: int = 500  # val images captioned for validation during training
    # scenes splits
    train_seed: int = 1
    train_count: int = 12000
    val_seed: int = 2
    val_count: int = 500  # scenes: rendered; COCO without a val file: held out of the train file
    test_seed: int = scenes.TEST_SEED
    test_count: int = scenes.TEST_COUNT
    test_dir: str = "data/test"
    primary_weight: float = scenes_dataset.PRIMARY_WEIGHT  # scenes: the primary family's share
    # sizes
    student: str = "tiny"  # LightCapConfig.tiny + the settings in student_config()
    student_layers: int = 3  # fusion.num_hidden_layers of the student without --bert (2: test relation 0.915-0.935)
    teacher_hidden: int = 192  # teacher without --teacher-bert
    teacher_layers: int = 3
    teacher_intermediate: int = 768
    text_width: int = 128  # the small CLIP's text tower (no --clip)
    text_layers: int = 3
    text_heads: int = 4
    text_context: int = 40
    image_size: int = 128  # input side without --clip; the grid is image_size / 32 cells a side
    # (0) CLIP: on the scenes first region pretraining (cell labels only), then the full objective
    clip_region_steps: int = 1000
    clip_steps: int = 900
    clip_batch: int = 48
    clip_lr: float = 2e-3
    clip_caption_weight: float = 1.0
    clip_cell_weight: float = 1.0
    # (1) concepts
    concept_steps: int = 1000
    concept_batch: int = 256
    concept_lr: float = 2e-3
    # (2)-(4) scenes only: two-object scenes added to each batch, captioned with their relation,
    # a share of them near-diagonal pairs (scenes_dataset.HARD_PAIR_RATIO)
    relation_extra: int = 24
    relation_hard: float = 0.75
    # scenes only: the teacher, and the student's output and ensemble phases, also regress the
    # pair's offset at the relation word (scenes_dataset.offset_targets; docs/RESULTS.md: test
    # relation accuracy 0.908 -> 0.950; weight 1 held back the teacher's language learning)
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
                       text_width=32, text_layers=1, relation_extra=4, val_eval_count=16)
        if name == "coco":  # COCO from OpenAI RN50 + TinyBERT-4 (student) and BERT-base (teacher): docs/TRAINING.md
            return cls(concept_count=1000, concept_min_refs=2, concept_steps=4000, concept_batch=512, concept_lr=1e-3,
                       teacher_steps=20000, teacher_cycles=4, teacher_batch=256, teacher_lr=1e-4,
                       distill_steps=5000, output_steps=20000, student_batch=256, student_lr=2e-4,
                       ensemble_steps=5000, scst_steps=0, scst_batch=64, warmup=1000,
                       checkpoint_every=1000, log_every=100, eval_batch=100, val_eval_count=1000,
                       feature_workers=8, workers=8, threads=8)
        if name == "objects":  # the objects data set from scratch on 2 CPU cores (scripts/train_objects.sh)
            return cls(image_size=160, clip_region_steps=1800, clip_steps=300, concept_top_k=5,
                       concept_token_weight=3.0, max_length=25, caption_tokens=28, teacher_steps=6000,
                       output_steps=1800, ensemble_steps=400)
        raise ValueError(f"no recipe preset {name!r} (default, smoke, coco, objects)")

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

    def check(self) -> "Recipe":
        """Clear errors for settings that cannot work, before any training."""
        if self.data not in ("scenes", "coco", "karpathy"):
            raise ValueError(f"recipe data {self.data!r}: scenes, coco or karpathy")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device {self.device!r}: cpu or cuda")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"--precision {self.precision!r}: fp32 or bf16")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: PyTorch sees no CUDA device here")
        if self.data == "scenes" and (self.clip or self.bert or self.teacher_bert or self.concepts_file):
            raise ValueError("--clip, --bert, --teacher-bert and --concepts need captioned data "
                             "(--annotations or --karpathy): the scenes have their own vocabulary")
        if self.instances and (self.clip or self.data == "scenes"):
            raise ValueError("--instances supervises the grid of the CLIP that stage 0 trains on captioned data; "
                             "with --clip (or on the scenes) there is no such stage")
        if self.teacher_bert and not self.bert:
            raise ValueError("--teacher-bert needs --bert (the student's vocabulary must be the teacher's)")
        for name in ("clip", "bert", "teacher_bert", "concepts_file", "instances"):
            path = getattr(self, name)
            if path and not os.path.exists(path):
                raise ValueError(f"--{name.replace('_file', '').replace('_', '-')} {path}: no such file or directory")
        return self


# ----------------------------------------------------------------------------------------------
# Configurations


def student_config(vocab_size: int, image_size: int = Recipe.image_size, **sections) -> LightCapConfig:
    """The committed `tiny` size: FORMAT.md's example, with room for the longest scenes caption
    (22 tokens: four objects listed with their sizes). Greedy by default: on the test split it
    beats beam 5 on every score (attribute F1 0.987 vs 0.949, CIDEr-D 4.29 vs 4.22; beam search
    prefers the shorter families that leave sizes out, docs/RESULTS.md)."""
    cfg = LightCapConfig.tiny(vocab_size).replace(
        decoding={"max_length": 24, "caption_segment_length": 26, "beam_size": 1},
        image={"size": image_size}, visual={"batchnorm_folded": False}, concepts={"prompt": scenes_dataset.PROMPT_NOTE},
        fusion={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    return cfg.replace(**sections) if sections else cfg


def captions_config(ctx: Context) -> LightCapConfig:
    """The student on captioned data: the image side of --clip (else the tiny one at
    `image_size`), the fusion sizes of --bert (else tiny), the recipe's text settings."""
    from lightcap_train.reference.convert import FUSION_KEYS, read_bert_config

    r = ctx.r
    cfg = LightCapConfig.base() if r.clip else LightCapConfig.tiny(len(ctx.tok))
    sections: dict = {"name": "lightcap", "visual": {"batchnorm_folded": False}, "heads": {"count": r.heads},
                      "decoding": {"max_length": r.max_length, "caption_segment_length": max(r.caption_tokens, r.max_length + 2),
                                   "beam_size": r.beam}}
    if r.clip:
        sizes = ctx.clip_sizes()
        sections["image"] = {"size": sizes["image_size"]}
        sections["visual"].update(layers=sizes["layers"], width=sizes["width"], heads=sizes["heads"],
                                  output_dim=sizes["output_dim"], attention_pool=False)
        sections["concepts"] = {"embed_dim": sizes["embed_dim"], "top_k": r.concept_top_k}
    else:
        sections["image"] = {"size": r.image_size}
        sections["concepts"] = {"embed_dim": cfg.visual.output_dim, "top_k": r.concept_top_k}
    if r.bert:
        fusion, _ = read_bert_config(r.bert)
        sections["fusion"] = {k: getattr(fusion, k) for k in FUSION_KEYS}
    else:  # the tiny fusion sizes, whatever the image side
        sections["fusion"] = {**dataclasses.asdict(FusionConfig()), "vocab_size": len(ctx.tok),
                              "num_hidden_layers": r.student_layers}
    cfg = cfg.replace(**sections)
    check_fits(cfg, ctx, "student")
    return cfg


def check_fits(cfg: LightCapConfig, ctx: Context, who: str) -> None:
    """The text a model reads must fit its positions: caption segment + concept segment."""
    longest = max((len(ctx.tok.encode(c)) for c in ctx.concepts), default=0)
    text = cfg.decoding.caption_segment_length + cfg.concepts.top_k * longest + 1
    if text > cfg.fusion.max_position_embeddings:
        raise ValueError(f"the {who}'s text of up to {text} tokens (caption segment "
                         f"{cfg.decoding.caption_segment_length} + {cfg.concepts.top_k} concepts of up to {longest} "
                         f"pieces + [SEP]) exceeds its max_position_embeddings {cfg.fusion.max_position_embeddings}: "
                         f"lower caption_tokens or concept_top_k")


def teacher_config(ctx: Context) -> LightCapConfig:
    """The teacher: larger, one head. On captioned data --teacher-bert's sizes, which must share
    the student's vocabulary and attention head count (the attention distillation compares
    head by head); else the recipe's sizes with the student's head count."""
    from lightcap_train.reference.convert import FUSION_KEYS, read_bert_config

    r = ctx.r
    if ctx.data.kind == "scenes":
        return student_config(len(ctx.tok), r.image_size, fusion={
            "hidden_size": r.teacher_hidden, "num_hidden_layers": r.teacher_layers,
            "num_attention_heads": 4, "intermediate_size": r.teacher_intermediate},
            heads={"count": 1}, name="teacher")
    if r.teacher_bert:  # vocabulary and head count checked before any stage (check_checkpoints)
        fusion, _ = read_bert_config(r.teacher_bert)
        sizes = {k: getattr(fusion, k) for k in FUSION_KEYS}
    else:
        heads = ctx.cfg.fusion.num_attention_heads
        hidden = -(-r.teacher_hidden // heads) * heads
        sizes = {"hidden_size": hidden, "num_hidden_layers": r.teacher_layers,
                 "num_attention_heads": heads, "intermediate_size": r.teacher_intermediate}
    cfg = ctx.cfg.replace(fusion=sizes, heads={"count": 1}, name="teacher")
    check_fits(cfg, ctx, "teacher")
    return cfg


def check_checkpoints(r: Recipe) -> None:
    """--bert and --teacher-bert, read before any stage runs: each a BERT directory, one
    vocabulary, one attention head count (the attention distillation compares head by head)."""
    from lightcap_train.reference.convert import read_bert_config

    if not r.bert:
        return
    student, student_tok = read_bert_config(r.bert)
    if r.teacher_bert:
        teacher, teacher_tok = read_bert_config(r.teacher_bert)
        if teacher_tok.vocab != student_tok.vocab:
            raise ValueError(f"--teacher-bert {r.teacher_bert}: its vocabulary ({len(teacher_tok)} tokens) is not "
                             f"the student's ({len(student_tok)} tokens, --bert {r.bert}); distillation needs one vocabulary")
        if teacher.num_attention_heads != student.num_attention_heads:
            raise ValueError(f"--teacher-bert {r.teacher_bert}: {teacher.num_attention_heads} attention heads, the "
                             f"student (--bert {r.bert}) has {student.num_attention_heads}; attention distillation "
                             f"needs the same count")


def clip_config(ctx: Context) -> LightCapConfig:
    """Stage 0's image side (with its attention pool) + a captioning decoder (no concepts; on the
    scenes the tiny size's two fusion layers)."""
    sections = dict(visual={"attention_pool": True}, concepts={"enabled": False},
                    modulator={"enabled": False}, heads={"count": 1}, name="clip")
    if ctx.data.kind == "scenes":
        return student_config(len(ctx.tok), ctx.r.image_size, **sections)
    return ctx.cfg.replace(**sections)


# ----------------------------------------------------------------------------------------------
# Shared pieces


def make_data_set(r: Recipe, run: str, log):
    if r.data == "scenes":
        return scenes_dataset.ScenesData(r, log)
    from lightcap_train.data.captions import CaptionData
    return CaptionData(r, run, log)


class Context:
    """What every stage needs: recipe, run directory, processes, device, log, data set."""

    def __init__(self, r: Recipe, run: str, d: Dist, log: Log):
        self.r, self.run, self.d, self.log = r, run, d, log
        self.device = d.device
        self.data = make_data_set(r, run, log)
        self._tok = self._cfg = self._clip_sizes = None

    @property
    def tok(self):
        if self._tok is None:
            self._tok = self.data.tokenizer()
        return self._tok

    @property
    def concepts(self) -> list[str]:
        return self.data.concepts()

    @property
    def cfg(self) -> LightCapConfig:
        if self._cfg is None:
            if self.data.kind == "scenes":
                self._cfg = student_config(len(self.tok), self.r.image_size,
                                           fusion={"num_hidden_layers": self.r.student_layers})
            else:
                self._cfg = captions_config(self)
        return self._cfg

    def clip_sizes(self) -> dict:
        """The --clip checkpoint's image side (read off its weights; stage 0 keeps them)."""
        if self._clip_sizes is None:
            if self.done("clip"):
                self._clip_sizes = self.load_final("clip")["sizes"]
            else:
                self._clip_sizes = clip_checkpoint(self.r)[2]
        return self._clip_sizes

    def path(self, *parts) -> str:
        return os.path.join(self.run, *parts)

    def encode_captions(self, texts: list[str]) -> list[list[int]]:
        """Token ids of captions, cut to fit the caption segment ([CLS] and [SEP] around them;
        the data stage logs how many references that cuts)."""
        limit = self.cfg.decoding.caption_segment_length - 2
        return [self.tok.encode(t)[:limit] for t in texts]

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


def fmt(scores: dict) -> str:
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())


def greedy_captions(ctx: Context, model: LightCap, grids, concept_ids, batch=100, count=None) -> dict[int, str]:
    """Greedy captions of the first `count` grids (all by default), by index."""
    model.eval()
    caps = {}
    for i in range(0, count or len(grids), batch):
        j = min(i + batch, count or len(grids))
        cids = None if concept_ids is None or model.concepts is None else concept_ids[i:j].to(ctx.device)
        for k, toks in enumerate(objectives.greedy_on_grid(model, grids[i:j].to(ctx.device).float(), cids)):
            caps[i + k] = ctx.tok.decode_caption(toks)
    return caps


def evaluate_fusion(ctx: Context, model: LightCap, feats, split: str = "val", refs: bool = False) -> dict:
    """Validation scores of greedy captions on cached grids: on the scenes attribute and
    relation scores (and CIDEr-D with `refs`), on captioned data CIDEr-D on the first
    `val_eval_count` images."""
    ids = ctx.load_final("concepts")["ids"][split] if model.concepts is not None else None
    if ctx.data.kind == "scenes":
        from lightcap_train.recipe.evaluate import coco_scores, scene_scores
        caps = greedy_captions(ctx, model, feats.grid[split], ids, ctx.r.eval_batch)
        out = scene_scores(caps, dict(enumerate(feats.meta[split])))
        if refs:
            try:
                out["CIDEr-D"] = coco_scores(caps, dict(enumerate(feats.refs[split])))["CIDEr-D"]
            except Exception as e:  # java missing: scores without CIDEr
                ctx.log(f"evaluate: no CIDEr-D ({e})")
    else:
        from lightcap_train.recipe.cider import CiderD
        count = min(ctx.r.val_eval_count, len(feats.grid[split]))
        caps = greedy_captions(ctx, model, feats.grid[split], ids, ctx.r.eval_batch, count)
        references = feats.refs[split][:count]
        out = {"CIDEr-D": float(CiderD(references).scores([caps[i] for i in range(count)], references).mean()),
               **caption_concept_scores([caps[i] for i in range(count)], references, ctx.concepts,
                                        ctx.r.concept_min_refs),
               "images": count}
    out["example"] = caps[0]
    return out


def caption_concept_scores(captions: list[str], references: list[list[str]], concepts: list[str],
                           min_refs: int) -> dict:
    """How well captions name the concept words (on the objects data, the objects): micro
    precision, recall and F1 of the concepts a caption names against those at least `min_refs`
    of the image's references name (data.concepts.image_labels, plurals folded)."""
    from lightcap_train.data.concepts import image_labels

    said = image_labels([[c] for c in captions], concepts, 1)  # [n, K]
    truth = image_labels(references, concepts, min_refs)  # [n, K]
    hit = float((said * truth).sum())
    precision = hit / max(float(said.sum()), 1.0)
    recall = hit / max(float(truth.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"concept_precision": precision, "concept_recall": recall, "concept_F1": f1}


# ----------------------------------------------------------------------------------------------
# data


def stage_data(ctx: Context) -> None:
    state = ctx.data.prepare(ctx) if ctx.d.main else None
    ctx.d.barrier()
    ctx.save_final("data", state)


# ----------------------------------------------------------------------------------------------
# (0) CLIP


def clip_checkpoint(r: Recipe):
    """(visual state without the attention pool, text tower, sizes) of --clip."""
    from lightcap_train.reference.convert import clip_text_tower, load_clip_checkpoint, visual_sizes

    state, kind = load_clip_checkpoint(r.clip)
    sizes = visual_sizes(state)
    if "image_size" not in sizes:
        raise ValueError(f"--clip {r.clip}: no attention pool, so its input size is unknown")
    tower = clip_text_tower(state, r.clip_text_act or ("quick_gelu" if kind == "openai" else "gelu"))
    sizes["embed_dim"] = tower.config.embed_dim
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")
              and not k.startswith("visual.attnpool.") and not k.endswith("num_batches_tracked")}
    return visual, tower, sizes


def stage_clip(ctx: Context) -> None:
    r = ctx.r
    if r.clip:
        if ctx.d.main:
            visual, tower, sizes = clip_checkpoint(r)
            LightCap(ctx.cfg, ctx.tok, ctx.concepts).visual.load_state_dict(visual)  # strict: the shapes fit
            ctx.log(f"clip: {r.clip}: visual {sum(v.numel() for v in visual.values()) / 1e6:.1f} M parameters, "
                    f"{sizes['image_size']} px, grid {ctx.cfg.grid_side}x{ctx.cfg.grid_side}x{ctx.cfg.grid_channels}, "
                    f"text tower {parameter_count(tower) / 1e6:.1f} M (joint space {sizes['embed_dim']})")
            ctx.save_final("clip", {"visual": visual, "text": tower.state_dict(),
                                    "text_config": dataclasses.asdict(tower.config), "sizes": sizes})
        else:
            ctx.save_final("clip", None)
        return
    model = LightCap(clip_config(ctx), ctx.tok, [])
    text, tokenizer = text_tower(ctx)
    obj = objectives.ClipObjective(ctx, model, text, tokenizer).to(ctx.device)
    ctx.log(f"clip: visual {parameter_count(obj.model.visual) / 1e6:.2f} M parameters, text "
            f"{parameter_count(obj.text) / 1e6:.2f} M, captioner {parameter_count(obj.model, ('visual',)) / 1e6:.2f} M")
    fit(obj, obj.parameters(), steps=obj.region_steps + r.clip_steps, lr=r.clip_lr, out_dir=ctx.path("clip"),
        log=ctx.log, d=ctx.d, name="clip", warmup=r.warmup, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every, precision=r.precision)
    visual = {k: v.cpu() for k, v in obj.model.visual.state_dict().items() if not k.startswith("attnpool")}
    ctx.save_final("clip", {"visual": visual, "text": {k: v.cpu() for k, v in obj.text.state_dict().items()},
                            "text_config": dataclasses.asdict(obj.text.config),
                            "captioner": {k: v.cpu() for k, v in obj.model.state_dict().items()}})


def text_tower(ctx: Context):
    """The small CLIP's text transformer over the fusion vocabulary, and its tokenizer."""
    r = ctx.r
    cfg = ClipTextConfig(context_length=r.text_context, vocab_size=len(ctx.tok), width=r.text_width,
                         heads=r.text_heads, layers=r.text_layers, embed_dim=ctx.cfg.visual.output_dim,
                         eot_id=ctx.tok.token_id("[SEP]"), init="embeddings")
    return CLIPTextTransformer(cfg), WordPieceTextTokenizer(ctx.tok)


def load_text_tower(ctx: Context):
    """Stage 0's text tower (the checkpoint's or the trained one) and its tokenizer."""
    from lightcap_train.reference.clip_text import ClipTokenizer

    saved = ctx.load_final("clip")
    text = CLIPTextTransformer(ClipTextConfig(**saved["text_config"]))
    text.load_state_dict(saved["text"])
    if ctx.r.clip:
        return text.eval(), ClipTokenizer(context_length=text.config.context_length)
    return text.eval(), WordPieceTextTokenizer(ctx.tok)


def frozen_visual(ctx: Context) -> LightCap:
    model = LightCap(ctx.cfg, ctx.tok, ctx.concepts)
    model.visual.load_state_dict(ctx.load_final("clip")["visual"])
    return model.eval()


# ----------------------------------------------------------------------------------------------
# features


@torch.no_grad()
def stage_features(ctx: Context) -> None:
    """Grid features of the frozen CLIP for every split, as fp16 shards (data/features.py)."""
    r = ctx.r
    out = {}
    if ctx.d.main:
        model = frozen_visual(ctx).to(ctx.device)
        model.visual.to(memory_format=torch.channels_last)
        for name in ctx.data.split_names():
            t0 = time.time()
            source = ctx.data.feature_source(name, ctx.cfg)
            grids = write_features(model.encode_image, source, ctx.path("features", name), batch=r.feature_batch,
                                   shard_size=max(r.feature_batch, r.feature_shard // r.feature_batch * r.feature_batch),
                                   workers=r.feature_workers, device=ctx.device, log=ctx.log)
            seconds = time.time() - t0
            ctx.log(f"features: {name} {tuple(grids.shape)} in {seconds:.0f} s "
                    f"({1000 * seconds / max(len(grids), 1):.1f} ms per image)")
            out[name] = {"refs": ctx.data.references(name), "meta": ctx.data.metas(name),
                         "image_ids": ctx.data.image_ids(name)}
    ctx.save_final("features", out)


class Features:
    """The features stage's output: memory-mapped grids, references, metadata per split."""

    def __init__(self, ctx: Context):
        f = ctx.load_final("features")
        self.grid = {k: GridShards(ctx.path("features", k)) for k in f}
        self.meta = {k: v["meta"] for k, v in f.items()}
        self.refs = {k: v["refs"] for k, v in f.items()}
        self.image_ids = {k: v["image_ids"] for k, v in f.items()}


# ----------------------------------------------------------------------------------------------
# (1) concepts


def stage_concepts(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    embeddings = concept_text_embeddings(ctx)  # [K, E]
    model = LightCap(ctx.cfg, ctx.tok, ctx.concepts)
    extractor = model.concepts
    extractor.embeddings.copy_(embeddings)
    labels = torch.from_numpy(ctx.data.concept_labels(feats, "train", ctx.cfg))  # [n, R, K] or [n, K]
    obj = objectives.ConceptObjective(ctx, extractor, feats.grid["train"], labels).to(ctx.device)
    fit(obj, obj.parameters(), steps=r.concept_steps, lr=r.concept_lr, out_dir=ctx.path("concepts"),
        log=ctx.log, d=ctx.d, name="concepts", warmup=r.warmup, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every, precision=r.precision)
    ext = obj.extractor.eval()
    for split in (s for s in feats.grid if s != "train"):  # val, and test where the data has one
        labels = torch.from_numpy(ctx.data.image_concept_labels(feats, split))
        ctx.log(f"concepts: {split} " + fmt(objectives.concept_quality(ext, feats.grid[split], labels, ctx.device)))
    with torch.no_grad():
        ids = {k: torch.cat([ext(g[i:i + 1000].to(ctx.device).float())[0].cpu() for i in range(0, len(g), 1000)])
               for k, g in feats.grid.items()}
    ctx.save_final("concepts", {"extractor": {k: v.cpu() for k, v in ext.state_dict().items()}, "ids": ids})


@torch.no_grad()
def concept_text_embeddings(ctx: Context) -> torch.Tensor:
    """[K, E] text embeddings of the concepts by stage 0's text tower: on the scenes the
    orthogonalised prompt ensembles (scenes_dataset.prompt_ensemble_embeddings), else the config's
    prompt ("a photo of a {}")."""
    from lightcap_train.reference.clip_text import concept_embeddings

    text, tokenizer = load_text_tower(ctx)
    if ctx.data.kind == "scenes":
        return scenes_dataset.prompt_ensemble_embeddings(text, tokenizer, ctx.r.text_context)
    return concept_embeddings(text, tokenizer, ctx.concepts, ctx.cfg.concepts.prompt)


# ----------------------------------------------------------------------------------------------
# (2)-(4) fusion models


def fusion_model(ctx: Context, cfg: LightCapConfig, bert: str = "") -> LightCap:
    """A fusion model whose concept extractor is stage 1's (frozen) and visual side unused; with
    `bert` (a Hugging Face directory) its BERT, and its MLM head in every head, start from it."""
    model = LightCap(cfg, ctx.tok, ctx.concepts)
    if model.concepts is not None:
        model.concepts.load_state_dict(ctx.load_final("concepts")["extractor"])
    if bert:
        from lightcap_train.reference.convert import load_bert_weights
        load_bert_weights(model, bert)
    for name, p in model.named_parameters():
        if name.startswith(("visual.", "concepts.")):
            p.requires_grad_(False)
    return model.to(ctx.device)


def student_model(ctx: Context, cfg: LightCapConfig | None = None) -> LightCap:
    return fusion_model(ctx, cfg or ctx.cfg, ctx.r.bert)


def concept_ids(ctx: Context) -> dict:
    return ctx.load_final("concepts")["ids"]


def stage_teacher(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    model = fusion_model(ctx, teacher_config(ctx), r.teacher_bert)
    ctx.log(f"teacher: {parameter_count(model, ('visual', 'concepts')) / 1e6:.2f} M fusion parameters")
    obj = objectives.CrossEntropyObjective(model, objectives.FusionBatches(ctx, feats, concept_ids(ctx)), r.teacher_batch)

    def snapshot(c: int) -> None:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, ctx.path("teacher", f"snapshot{c}.pt"))
        if c + 1 < r.teacher_cycles:  # progress: the last one is scored below
            ctx.log(f"teacher: snapshot {c} saved, val " + fmt(evaluate_fusion(ctx, model.eval(), feats)))
            model.train()
        else:
            ctx.log(f"teacher: snapshot {c} saved")

    fit(obj, objectives.trainable(obj), steps=r.teacher_steps, lr=r.teacher_lr, out_dir=ctx.path("teacher"),
        log=ctx.log, d=ctx.d, name="teacher", warmup=r.warmup, cycles=r.teacher_cycles,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every, on_cycle_end=snapshot, precision=r.precision)
    ctx.log("teacher: val " + fmt(evaluate_fusion(ctx, model.eval(), feats)))
    ctx.save_final("teacher", {"snapshots": [ctx.path("teacher", f"snapshot{c}.pt")
                                             for c in range(r.teacher_cycles)]})


def load_teachers(ctx: Context) -> list[LightCap]:
    teachers = []
    for saved in ctx.load_final("teacher")["snapshots"]:
        path = ctx.path("teacher", os.path.basename(saved))  # the run directory may have moved
        t = fusion_model(ctx, teacher_config(ctx))
        t.load_state_dict(torch.load(path, map_location="cpu"))
        for p in t.parameters():
            p.requires_grad_(False)
        teachers.append(t.eval())
    return teachers


def stage_student(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    batches = objectives.FusionBatches(ctx, feats, concept_ids(ctx))
    student = student_model(ctx)
    teachers = load_teachers(ctx)
    ctx.log(f"student: {parameter_count(student, ('visual', 'concepts')) / 1e6:.2f} M fusion parameters")
    layers = objectives.DistillObjective(student, teachers, batches, r.student_batch, "layers", r.temperature)
    fit(layers, layers.trainable(), steps=r.distill_steps, lr=r.student_lr, out_dir=ctx.path("student", "layers"),
        log=ctx.log, d=ctx.d, name="student/layers", warmup=r.warmup,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every, precision=r.precision)
    output = objectives.DistillObjective(student, teachers, batches, r.student_batch, "output", r.temperature)
    fit(output, output.trainable(), steps=r.output_steps, lr=r.student_lr, out_dir=ctx.path("student", "output"),
        log=ctx.log, d=ctx.d, name="student/output", warmup=r.warmup,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every, precision=r.precision)
    ctx.log("student: val " + fmt(evaluate_fusion(ctx, student.eval(), feats)))
    ctx.save_final("student", {"model": {k: v.cpu() for k, v in student.state_dict().items()}})


def stage_ensemble(ctx: Context) -> None:
    r = ctx.r
    feats = Features(ctx)
    student = student_model(ctx)
    student.load_state_dict(ctx.load_final("student")["model"])
    obj = objectives.DistillObjective(student, load_teachers(ctx), objectives.FusionBatches(ctx, feats, concept_ids(ctx)),
                             r.student_batch, "ensemble", r.temperature)
    fit(obj, obj.trainable(), steps=r.ensemble_steps, lr=r.student_lr / 2, out_dir=ctx.path("ensemble"),
        log=ctx.log, d=ctx.d, name="ensemble", warmup=r.warmup,
        checkpoint_every=r.checkpoint_every, log_every=r.log_every, precision=r.precision)
    ctx.log("ensemble: val " + fmt(evaluate_fusion(ctx, student.eval(), feats)))
    ctx.save_final("ensemble", {"model": {k: v.cpu() for k, v in student.state_dict().items()}})


# ----------------------------------------------------------------------------------------------
# (5) SCST (optional)


class ScstObjective(torch.nn.Module):
    """Self-critical sequence training on CIDEr-D: reward of a sampled caption minus the reward
    of the greedy caption. The log-probabilities of the sampled caption come from one two-stream
    pass (batches.caption_batch), which gives exactly the decoder's step distributions."""

    def __init__(self, ctx: Context, student: LightCap, feats, ids: dict):
        super().__init__()
        from lightcap_train.recipe.cider import CiderD

        self.ctx, self.student, self.feats, self.ids = ctx, student, feats, ids
        self.refs = feats.refs["train"]
        self.scorer = CiderD(self.refs)

    def forward(self, step):
        ctx, r, device = self.ctx, self.ctx.r, self.ctx.device
        rng = batch_rng(r.seed + 77, ctx.d, step)
        idx = rng.choice(len(self.refs), r.scst_batch, replace=False)
        grid = self.feats.grid["train"][idx].to(device).float()
        cids = self.ids["train"][idx].to(device)
        self.student.eval()
        greedy = objectives.greedy_on_grid(self.student, grid, cids)
        sampled = objectives.sample_on_grid(self.student, grid, cids, rng)
        self.student.train()
        refs = [self.refs[i] for i in idx]
        base = self.scorer.scores([ctx.tok.decode_caption(t) for t in greedy], refs)
        reward = self.scorer.scores([ctx.tok.decode_caption(t) for t in sampled], refs)
        cb = batches.caption_batch(self.student, sampled, cids.cpu()).to(device)
        logp = F.log_softmax(objectives.fusion_logits(self.student, grid, cids, cb)[0].mean(1).float(), -1)  # [B, M, V]
        valid = cb.targets >= 0
        tok_logp = logp.gather(-1, cb.targets.clamp(min=0)[..., None])[..., 0] * valid
        adv = torch.tensor(reward - base, dtype=torch.float32, device=device)
        loss = -(adv[:, None] * tok_logp).sum() / valid.sum()
        return loss, {"reward": float(reward.mean()), "greedy": float(base.mean())}


def stage_scst(ctx: Context) -> None:
    r = ctx.r
    src = "ensemble"
    if r.scst_steps <= 0:
        ctx.log("scst: skipped (scst_steps = 0)")
        ctx.save_final("scst", {"model": ctx.load_final(src)["model"], "skipped": True})
        return
    feats = Features(ctx)
    student = student_model(ctx)
    student.load_state_dict(ctx.load_final(src)["model"])
    obj = ScstObjective(ctx, student, feats, concept_ids(ctx))
    fit(obj, objectives.trainable(student), steps=r.scst_steps, lr=r.scst_lr, out_dir=ctx.path("scst"),
        log=ctx.log, d=ctx.d, name="scst", warmup=0, checkpoint_every=r.checkpoint_every,
        log_every=r.log_every, precision=r.precision)
    ctx.log("scst: val " + fmt(evaluate_fusion(ctx, student.eval(), feats)))
    ctx.save_final("scst", {"model": {k: v.cpu() for k, v in student.state_dict().items()}, "skipped": False})


# ----------------------------------------------------------------------------------------------
# export, evaluate


def final_model(ctx: Context, source: str = "scst") -> LightCap:
    """The whole student: visual from (0), concept extractor from (1), the rest from `source`."""
    model = LightCap(ctx.cfg, ctx.tok, ctx.concepts)
    if not ctx.done(source):
        source = "ensemble"
    fusion = ctx.load_final(source)["model"]
    state = {k: v for k, v in fusion.items() if not k.startswith(("visual.", "concepts."))}
    state.update({f"visual.{k}": v for k, v in ctx.load_final("clip")["visual"].items()})
    state.update({f"concepts.{k}": v for k, v in ctx.load_final("concepts")["extractor"].items()})
    model.load_state_dict(state)
    return model.eval()


def stage_export(ctx: Context) -> None:
    from lightcap_train.reference.export import export, load

    if ctx.d.main:
        model = final_model(ctx)
        out = export(model, ctx.tok, ctx.concepts, ctx.path("model"))
        # The exported (BatchNorm-folded) model must caption like the trained one.
        back = load(out)
        feats = Features(ctx)
        ids = concept_ids(ctx)["val"][:16]
        a = objectives.greedy_on_grid(model, feats.grid["val"][:16].float(), ids)
        b = objectives.greedy_on_grid(back, feats.grid["val"][:16].float(), ids)
        if a != b:
            raise RuntimeError("the exported model decodes differently from the trained one")
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        ctx.log(f"export: {out} ({size / 1e6:.2f} MB)")
    ctx.save_final("export", {"dir": ctx.path("model")})


def stage_evaluate(ctx: Context) -> None:
    from lightcap_train.reference.export import load

    if ctx.d.main:
        t0 = time.time()
        model = load(ctx.path("model"))
        result = ctx.data.evaluate(ctx, model)
        result["seconds"] = time.time() - t0
        with open(ctx.path("eval.json"), "w") as f:
            json.dump(result, f, indent=1)
        ctx.log(f"evaluate: {result.get('split', 'test')} " + fmt(result["scores"]))
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
    batches = objectives.FusionBatches(ctx, feats, concept_ids(ctx))
    steps = r.distill_steps + r.output_steps + r.ensemble_steps
    split = "test" if "test" in feats.grid else "val"
    rows = []

    def row(name, model, seed=0):
        t0 = time.time()
        scores = evaluate_fusion(ctx, model.eval(), feats, split, refs=True)
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
            obj = objectives.CrossEntropyObjective(model, batches, r.student_batch, salt=seed)
            fit(obj, objectives.trainable(obj), steps=steps, lr=r.student_lr, out_dir=path, log=ctx.log, d=ctx.d,
                name=f"ablation/{name}/{seed}", warmup=r.warmup, checkpoint_every=r.checkpoint_every,
                log_every=r.log_every * 5, precision=r.precision)
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

#: Command-line options that set recipe fields (path options are stored absolute).
OPTIONS = {"annotations": "annotations", "images": "images", "val_annotations": "val_annotations",
           "val_images": "val_images", "test_annotations": "test_annotations", "test_images": "test_images",
           "karpathy": "karpathy", "image_root": "image_root", "clip": "clip", "bert": "bert",
           "teacher_bert": "teacher_bert", "concepts": "concepts_file", "instances": "instances"}


def recipe_from_args(args, saved: str) -> Recipe:
    """The run's recipe: an existing run's DIR/recipe.json (so `--run DIR` alone resumes), else
    the --recipe preset; then the command line's data, checkpoint, device and --set options."""
    options = {field: os.path.abspath(getattr(args, opt)) for opt, field in OPTIONS.items() if getattr(args, opt)}
    if args.device:
        options["device"] = args.device
    if args.precision:
        options["precision"] = args.precision
    if args.skip_bad_images:
        options["skip_bad_images"] = True
    if args.annotations and args.karpathy:
        raise ValueError("give either --annotations (COCO captions) or --karpathy, not both")
    if args.annotations:
        options["data"] = "coco"
        if not args.images:
            raise ValueError("--annotations needs --images (the folder its file_name entries are in)")
    elif args.karpathy:
        options["data"] = "karpathy"
        if not args.image_root:
            raise ValueError("--karpathy needs --image-root (the folder its filepath/filename entries are in)")
    if os.path.exists(saved):
        with open(saved) as f:
            fields = json.load(f)
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Recipe)})
        if unknown:
            raise ValueError(f"{saved}: fields this recipe does not have ({', '.join(unknown)}): a run of another "
                             f"version of the recipe; start a new run directory")
        r = Recipe(**fields)
    else:
        r = Recipe.preset(args.recipe)
    return dataclasses.replace(r.updated(args.set), **options)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("stage", help="one of " + ", ".join(STAGES + ["all", "ablation"]) +
                   ", or several stages separated by commas")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run directory (checkpoints, log, model); under torchrun write --run-dir "
                        "(torchrun's own parser takes --run for its --run-path)")
    data = p.add_argument_group("data (default: the rendered scenes)")
    data.add_argument("--annotations", help="COCO captions JSON of the training images")
    data.add_argument("--images", help="folder of the training images (the file_name entries)")
    data.add_argument("--val-annotations", help="COCO captions JSON of the validation images")
    data.add_argument("--val-images", help="their folder (default: --images)")
    data.add_argument("--test-annotations", help="COCO captions JSON of the test images")
    data.add_argument("--test-images", help="their folder (default: --images)")
    data.add_argument("--karpathy", help="Karpathy's dataset_coco.json (train + restval / val / test)")
    data.add_argument("--image-root", help="folder of its filepath/filename entries")
    data.add_argument("--instances", help="COCO instances JSON of the training images (object boxes): every "
                      "grid cell of stage 0's CLIP learns what covers it (data/regions.py)")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="drop missing or corrupt images (listed in the log) instead of stopping")
    ckpt = p.add_argument_group("checkpoints (captioned data only)")
    ckpt.add_argument("--clip", help="OpenAI TorchScript RN50 or open_clip state dict (replaces stage 0)")
    ckpt.add_argument("--bert", help="Hugging Face BERT directory of the student (e.g. TinyBERT-4)")
    ckpt.add_argument("--teacher-bert", help="Hugging Face BERT directory of the teacher (same vocabulary)")
    ckpt.add_argument("--concepts", help="concept vocabulary, one a line (default: mined from the captions)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default fp32")
    p.add_argument("--recipe", default="default",
                   help="preset of a new run: default (the scenes), smoke (CI), coco or objects (docs/OBJECTS.md); an existing run keeps its recipe.json")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe fields")
    p.add_argument("--force", action="store_true", help="rerun the stages from scratch (their checkpoints are deleted)")
    p.add_argument("--seeds", type=int, default=1, help="ablation: seeds per row")
    args = p.parse_args(argv)

    stages = STAGES if args.stage == "all" else args.stage.split(",")
    unknown = [x for x in stages if x not in STAGES + ["ablation"]]
    if unknown:
        p.error(f"unknown stage {', '.join(unknown)} (stages: {', '.join(STAGES)}, all, ablation)")
    saved = os.path.join(args.run, "recipe.json")
    try:
        r = recipe_from_args(args, saved)
        r.check()
        check_checkpoints(r)
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    d = setup_dist(r.device)
    torch.set_num_threads(r.threads)
    torch.manual_seed(r.seed)
    log = Log(args.run, d)
    if d.main:
        os.makedirs(args.run, exist_ok=True)
        with open(saved + ".tmp", "w") as f:
            json.dump(dataclasses.asdict(r), f, indent=1)
        os.replace(saved + ".tmp", saved)
    d.barrier()
    ctx = Context(r, args.run, d, log)
    log(f"train {args.stage}: run {args.run}, {d.world} process(es) on {ctx.device}, recipe {args.recipe} "
        f"{' '.join(args.set)}")
    try:
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
    except ValueError as e:  # bad data or checkpoints: the message says what and where
        log(f"error: {e}")
        if d.world > 1:
            torch.distributed.destroy_process_group()
        sys.exit(f"train: error: {e}")
    if d.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
