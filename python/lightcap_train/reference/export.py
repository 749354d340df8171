"""Model directory export and strict loading (docs/FORMAT.md, "Files" and "Weights").

    export(model, vocab, concepts, out_dir)   -> config.json, model.safetensors, vocab.txt, concepts.txt
    load(model_dir)                           -> LightCap (eval mode), loaded strictly

BatchNorm is folded into the preceding convolution here, in one place:
    scale = gamma / sqrt(running_var + eps);  W' = W * scale;  b' = beta + (b - running_mean) * scale
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lightcap_train.reference.config import LightCapConfig
from lightcap_train.reference.model import LightCap
from lightcap_train.reference.wordpiece import WordPiece

BN_EPS = 1e-5


def conv_bn_pairs(config: LightCapConfig) -> list[tuple[str, str]]:
    """(conv prefix, BatchNorm prefix) of every conv followed by a BatchNorm in `visual`."""
    pairs = [(f"visual.conv{i}", f"visual.bn{i}") for i in (1, 2, 3)]
    inplanes = config.visual.width
    for layer, blocks in enumerate(config.visual.layers, start=1):
        planes = config.visual.width * 2 ** (layer - 1)
        for b in range(blocks):
            p = f"visual.layer{layer}.{b}"
            pairs += [(f"{p}.conv{i}", f"{p}.bn{i}") for i in (1, 2, 3)]
            stride = 2 if (layer > 1 and b == 0) else 1
            if b == 0 and (stride > 1 or inplanes != planes * 4):
                pairs.append((f"{p}.downsample.0", f"{p}.downsample.1"))
            inplanes = planes * 4
    return pairs


def fold_batchnorm(state: dict[str, torch.Tensor], config: LightCapConfig) -> dict[str, torch.Tensor]:
    """A copy of `state` with every visual BatchNorm folded into its conv (computed in F64)."""
    out = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    for conv, bn in conv_bn_pairs(config):
        w = out.pop(f"{conv}.weight").double()  # [O, I, kh, kw]
        b = out.pop(f"{conv}.bias").double() if f"{conv}.bias" in out else torch.zeros(w.shape[0], dtype=torch.float64)
        gamma, beta = out.pop(f"{bn}.weight").double(), out.pop(f"{bn}.bias").double()  # [O]
        mean, var = out.pop(f"{bn}.running_mean").double(), out.pop(f"{bn}.running_var").double()  # [O]
        scale = gamma / torch.sqrt(var + BN_EPS)  # [O]
        out[f"{conv}.weight"] = (w * scale[:, None, None, None]).float()
        out[f"{conv}.bias"] = (beta + (b - mean) * scale).float()
    return out


def check_finite(state: dict[str, torch.Tensor]) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"refusing to export non-finite weights (NaN/Inf) in: {', '.join(bad)}")


def export(model: LightCap, tokenizer_vocab: WordPiece | list[str], concepts: list[str] | None,
           out_dir: str | Path, fold: bool = True) -> Path:
    """Writes the model directory. `fold`: fold BatchNorm (the normal case; a model that is
    already folded is written as is). Refuses NaN/Inf weights, naming them."""
    out = Path(out_dir)
    vocab = tokenizer_vocab.vocab if isinstance(tokenizer_vocab, WordPiece) else list(tokenizer_vocab)
    concepts = list(model.concept_words if concepts is None else concepts)
    config = copy.deepcopy(model.config)
    if len(vocab) != config.fusion.vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} tokens, config says {config.fusion.vocab_size}")
    if config.concepts.enabled and len(concepts) != model.concepts.embeddings.shape[0]:
        raise ValueError(f"{len(concepts)} concepts for {model.concepts.embeddings.shape[0]} embeddings")

    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    check_finite(state)
    if fold and not config.visual.batchnorm_folded:
        state = fold_batchnorm(state, config)
        config.visual.batchnorm_folded = True
    state = {k: v.float().contiguous() for k, v in state.items()}
    check_finite(state)

    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.json")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    (out / "concepts.txt").write_text("".join(c + "\n" for c in concepts), encoding="utf-8")
    return out


def read_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads `state` into `model`; a missing, unused or mis-shaped tensor is an error naming it."""
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unused = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if unused:
        problems.append("unused tensors: " + ", ".join(unused))
    if shapes:
        problems.append("wrong shapes: " + "; ".join(shapes))
    if problems:
        raise ValueError("; ".join(problems))
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(state[k].to(v.dtype))


def load(model_dir: str | Path) -> LightCap:
    """Reads a model directory back into a LightCap module (eval mode)."""
    d = Path(model_dir)
    config = LightCapConfig.load(d / "config.json")
    tokenizer = WordPiece(read_lines(d / "vocab.txt"), do_lower_case=config.tokenizer.do_lower_case,
                          unk_token=config.tokens.unk)
    concepts = read_lines(d / "concepts.txt") if (d / "concepts.txt").exists() else []
    model = LightCap(config, tokenizer, concepts)
    load_state_strict(model, load_file(str(d / "model.safetensors")))
    return model.eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (the scale-relative error used by the parity checks)."""
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


__all__ = ["export", "load", "fold_batchnorm", "conv_bn_pairs", "check_finite", "load_state_strict",
           "relative_error", "read_lines"]
