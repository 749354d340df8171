"""Fixture files: every tensor docs/FORMAT.md lists, with its shape and dtype."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightcap_train.reference.export import load
from lightcap_train.tools.fixtures import DEFAULT_SIZES, VARIANTS, main


def check_size_dir(root: Path) -> None:
    info = json.loads((root / "fixtures.json").read_text())
    tensors = load_file(str(root / "fixtures.safetensors"))
    model = load(root / "model")
    cfg = model.config
    s, n, c, d = cfg.image.size, cfg.num_visual_tokens, cfg.grid_channels, cfg.fusion.hidden_size
    a, v, h, layers = cfg.decoding.caption_segment_length, cfg.fusion.vocab_size, cfg.heads.count, cfg.fusion.num_hidden_layers
    r = sum(w * w for w in cfg.concepts.windows)
    k = min(cfg.concepts.top_k, len(model.concept_words))
    assert len(info["cases"]) >= 2
    for case in info["cases"]:
        get = lambda name: tensors[f"{case}.{name}"]
        t = get("token_ids").shape[0]
        concept_part = {"regions": (r, c), "region_embeddings": (r, cfg.concepts.embed_dim),
                        "concept_ids": (k,), "concept_scores": (k,)}
        expected = {
            "input": (3, s, s), "grid": (n, c), "modulated": (n, c),
            "visual_tokens": (n, d), "token_type_ids": (t,), "position_ids": (t,),
            "attention_mask": (t + n, t + n), "head_logits": (h, a, v), "logits": (a, v),
            "greedy_score": (1,), "beam_score": (1,), "pooled": (cfg.visual.output_dim,), "unfolded_grid": (n, c),
            **{f"hidden.{i}": (t + n, d) for i in range(layers + 1)},
            **(concept_part if cfg.concepts.enabled else {}),
            **({"modulation": (c,)} if cfg.use_modulator else {}),
        }
        absent = set(concept_part) if not cfg.concepts.enabled else set()
        absent |= {"modulation"} if not cfg.use_modulator else set()
        assert not {name for name in absent if f"{case}.{name}" in tensors}, f"{case}: tensors of a disabled part"
        if not cfg.concepts.enabled:  # no concept segment: the text is the caption segment alone
            assert t == a and get("token_type_ids").eq(0).all()
        for name, shape in expected.items():
            assert tuple(get(name).shape) == shape, f"{case}.{name}"
            assert get(name).dtype == torch.float32 or name in ("concept_ids", "token_type_ids", "position_ids")
        ints = ["token_ids", "token_type_ids", "position_ids", "greedy_ids", "beam_ids"]
        for name in ints + (["concept_ids"] if cfg.concepts.enabled else []):
            assert get(name).dtype == torch.int64, f"{case}.{name}"
        assert get("greedy_ids").numel() <= cfg.decoding.max_length
        caption = info["caption_tokens"][case]
        assert get("token_ids")[:len(caption) + 2].tolist() == [model.cls_id, *caption, model.mask_id]
        assert info["min_margin"][case] >= 2e-4
        assert get("grid").std() > 0.05 and get("logits").std() > 0.05  # non-degenerate
        assert (get("unfolded_grid") - get("grid")).abs().max() <= 1e-5 * get("grid").abs().max()
        assert info["max_abs"][f"{case}.grid"] == pytest.approx(get("grid").abs().max().item())
        # The fixture numbers are what the exported model computes.
        with torch.no_grad():
            again = model.greedy(get("input")[None])[0]
        assert again.ids == get("greedy_ids").tolist()


def test_tiny_fixtures_are_complete(tmp_path):
    main(["--out", str(tmp_path), "--sizes", "tiny"])
    check_size_dir(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "model_unfolded" / "model.safetensors").exists()


def test_ablation_variant_fixtures_are_complete(tmp_path):
    main(["--out", str(tmp_path), "--sizes", *VARIANTS])
    for name in VARIANTS:
        check_size_dir(tmp_path / name)
    assert not load(tmp_path / "tiny-no-concepts" / "model").config.concepts.enabled
    no_modulator = load(tmp_path / "tiny-no-modulator" / "model").config
    assert no_modulator.concepts.enabled and not no_modulator.use_modulator


@pytest.mark.skipif(not os.environ.get("LIGHTCAP_FIXTURES"), reason="LIGHTCAP_FIXTURES not set")
def test_written_fixtures_are_complete():
    """scripts/test.sh writes .fixtures (every default size and variant) first; check what it wrote."""
    root = Path(os.environ["LIGHTCAP_FIXTURES"])
    for size in DEFAULT_SIZES:
        assert (root / size / "fixtures.json").exists(), f"{root / size} has no fixtures"
        check_size_dir(root / size)
