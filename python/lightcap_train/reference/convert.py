"""Builds a LightCap model directory from real checkpoints, by renaming only.

    python -m lightcap_train.reference.convert --clip CKPT --bert HFDIR --concepts FILE --out DIR

--clip:     an OpenAI CLIP RN50 checkpoint (TorchScript archive, as OpenAI ships it, or its
            state dict) or an open_clip state dict (optionally wrapped in {"state_dict": ...},
            "module." prefixes allowed). Gives `visual.*` and, through the checkpoint's own
            text tower, `concepts.embeddings` of "a photo of a {concept}".
--bert:     a Hugging Face BERT directory (config.json, vocab.txt, model.safetensors or
            pytorch_model.bin; BertModel or BertFor* keys). Gives `bert.*` and vocab.txt, and
            the heads' transform/bias when the checkpoint has an MLM head (`cls.predictions`).
--concepts: one concept a line.
The remaining parts (concept MLP, modulator, image projection, heads without an MLM head)
start from the reference's initialisation: they are what LightCap trains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from lightcap_train.reference.clip_text import CLIPTextTransformer, ClipTokenizer, concept_embeddings
from lightcap_train.reference.config import FusionConfig, LightCapConfig
from lightcap_train.reference.export import export, load_state_strict, read_lines
from lightcap_train.reference.model import LightCap
from lightcap_train.reference.wordpiece import WordPiece
from lightcap_train.data.concepts import read_concepts

#: The fusion sizes a Hugging Face BERT config.json gives (FusionConfig's names).
FUSION_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act")

TEXT_TOWER_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


# --- CLIP -------------------------------------------------------------------------------

def load_clip_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, kind): kind "openai" for a TorchScript archive, else "state_dict"."""
    try:
        archive = torch.jit.load(str(path), map_location="cpu")
        state, kind = {k: v for k, v in archive.state_dict().items()}, "openai"
    except (RuntimeError, ValueError):
        state, kind = torch.load(str(path), map_location="cpu", weights_only=True), "state_dict"
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict or TorchScript archive")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if "visual.conv1.weight" not in state or "visual.layer1.0.conv1.weight" not in state:
        raise ValueError(f"{path}: no ModifiedResNet visual tower (visual.conv1.weight, visual.layer1.*)")
    return state, kind


def visual_sizes(state: dict[str, torch.Tensor]) -> dict:
    """ModifiedResNet hyperparameters read off the weight shapes."""
    width = state["visual.conv1.weight"].shape[0] * 2
    layers = [len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{i}.")}) for i in range(1, 5)]
    sizes = {"layers": layers, "width": width, "heads": width * 32 // 64}
    if "visual.attnpool.positional_embedding" in state:
        side = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        sizes["image_size"] = side * 32
        sizes["output_dim"] = state["visual.attnpool.c_proj.weight"].shape[0]
    return sizes


def clip_text_tower(state: dict[str, torch.Tensor], act: str) -> CLIPTextTransformer:
    text_state = {k: v for k, v in state.items() if k.startswith(TEXT_TOWER_PREFIXES)}
    if "text_projection" not in text_state:
        raise ValueError("the CLIP checkpoint has no text tower (text_projection missing)")
    tower = CLIPTextTransformer(CLIPTextTransformer.config_from_state_dict(text_state, act))
    load_state_strict(tower, text_state)
    return tower.eval()


# --- BERT -------------------------------------------------------------------------------

def read_bert_config(path: str | Path) -> tuple[FusionConfig, WordPiece]:
    """(fusion sizes, tokenizer) of a Hugging Face BERT directory, without its weights."""
    d = Path(path)
    for name in ("config.json", "vocab.txt"):
        if not (d / name).is_file():
            raise ValueError(f"{d}: no {name} (a Hugging Face BERT directory has config.json, vocab.txt and weights)")
    hf = json.loads((d / "config.json").read_text())
    names = {f: hf[f] for f in FUSION_KEYS if f in hf}
    fusion = FusionConfig(**names)
    lower = True
    if (d / "tokenizer_config.json").exists():
        lower = json.loads((d / "tokenizer_config.json").read_text()).get("do_lower_case", True)
    tokenizer = WordPiece(read_lines(d / "vocab.txt"), do_lower_case=lower)
    if len(tokenizer) != fusion.vocab_size:
        raise ValueError(f"{d}: vocab.txt has {len(tokenizer)} tokens, config.json vocab_size {fusion.vocab_size}")
    return fusion, tokenizer


def load_bert_dir(path: str | Path) -> tuple[FusionConfig, dict[str, torch.Tensor], WordPiece, dict]:
    """(fusion config, `bert.*` state, tokenizer, MLM head tensors or {}) of a HF BERT dir."""
    d = Path(path)
    fusion, tokenizer = read_bert_config(d)
    if (d / "model.safetensors").exists():
        raw = load_file(str(d / "model.safetensors"))
    elif (d / "pytorch_model.bin").exists():
        raw = torch.load(str(d / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{d}: neither model.safetensors nor pytorch_model.bin")
    state, head = {}, {}
    for key, value in raw.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if key.startswith("cls.predictions."):
            head[key[len("cls.predictions."):]] = value
            continue
        if key.startswith("bert."):
            key = key[len("bert."):]
        if key.startswith(("embeddings.", "encoder.")) and not key.endswith("position_ids"):
            state["bert." + key] = value
    return fusion, state, tokenizer, head


def load_bert_weights(model: LightCap, path: str | Path) -> None:
    """Loads a Hugging Face BERT directory into `model.bert` (strictly: every tensor, every
    shape) and, when it has an MLM head of the model's vocabulary, into every prediction head."""
    _, state, _, mlm = load_bert_dir(path)
    load_state_strict(model.bert, {k[len("bert."):]: v for k, v in state.items()})
    if mlm and mlm.get("bias") is not None and mlm["bias"].shape[0] == model.config.fusion.vocab_size:
        with torch.no_grad():
            for head in model.heads:  # every head starts from the checkpoint's MLM head
                head.transform.dense.weight.copy_(mlm["transform.dense.weight"])
                head.transform.dense.bias.copy_(mlm["transform.dense.bias"])
                head.transform.LayerNorm.weight.copy_(mlm["transform.LayerNorm.weight"])
                head.transform.LayerNorm.bias.copy_(mlm["transform.LayerNorm.bias"])
                head.bias.copy_(mlm["bias"])


# --- the whole model ----------------------------------------------------------------------

def build(clip: str | Path, bert: str | Path, concepts: list[str], text_act: str | None = None,
          keep_attention_pool: bool = False, config: LightCapConfig | None = None) -> LightCap:
    """A LightCap (BatchNorm unfolded) with CLIP's visual tower, the concept embeddings of
    CLIP's own text tower and the BERT fusion weights."""
    clip_state, kind = load_clip_checkpoint(clip)
    act = text_act or ("quick_gelu" if kind == "openai" else "gelu")
    fusion, tokenizer = read_bert_config(bert)
    sizes = visual_sizes(clip_state)
    has_pool = "image_size" in sizes
    cfg = config or LightCapConfig.base()
    cfg = cfg.replace(
        name="converted",
        image={"size": sizes.get("image_size", cfg.image.size)},
        visual={"layers": sizes["layers"], "width": sizes["width"], "heads": sizes["heads"],
                "output_dim": sizes.get("output_dim", cfg.visual.output_dim),
                "attention_pool": keep_attention_pool and has_pool, "batchnorm_folded": False},
        fusion={k: getattr(fusion, k) for k in FUSION_KEYS},
        concepts={"embed_dim": clip_state["text_projection"].shape[1]},
    )
    model = LightCap(cfg, tokenizer, concepts)

    prefix = "visual."
    visual = {k[len(prefix):]: v for k, v in clip_state.items()
              if k.startswith(prefix) and not k.endswith("num_batches_tracked")
              and (cfg.visual.attention_pool or not k.startswith("visual.attnpool."))}
    load_state_strict(model.visual, visual)
    load_bert_weights(model, bert)

    if model.concepts is not None:
        tower = clip_text_tower(clip_state, act)
        with torch.no_grad():
            model.concepts.embeddings.copy_(concept_embeddings(tower, ClipTokenizer(context_length=tower.config.context_length),
                                                               concepts, cfg.concepts.prompt))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert CLIP RN50 + HF BERT checkpoints to a LightCap model directory")
    parser.add_argument("--clip", required=True, help="OpenAI TorchScript archive / state dict or open_clip state dict")
    parser.add_argument("--bert", required=True, help="Hugging Face BERT directory")
    parser.add_argument("--concepts", required=True, help="concept vocabulary, one a line")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--text-act", choices=["gelu", "quick_gelu"], default=None,
                        help="CLIP text MLP activation (default: quick_gelu for OpenAI archives, gelu otherwise)")
    parser.add_argument("--keep-attention-pool", action="store_true", help="also export visual.attnpool.*")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    concepts = read_concepts(args.concepts)
    model = build(args.clip, args.bert, concepts, args.text_act, args.keep_attention_pool)
    export(model, model.tokenizer, concepts, args.out)
    print(f"convert: wrote {args.out} ({len(concepts)} concepts, vocab {len(model.tokenizer)})")


if __name__ == "__main__":
    main()
