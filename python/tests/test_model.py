"""Properties of the reference model that the contract (and the Swift cache) relies on."""

import pytest
import torch

from lightcap_train.reference.config import LightCapConfig
from lightcap_train.reference.export import relative_error
from lightcap_train.tools.fixtures import make_model, random_images
from lightcap_train.reference.model import MASK_VALUE, LightCap


@pytest.fixture(scope="module")
def tiny():
    return make_model("tiny", seed=1)


@pytest.fixture(scope="module")
def images(tiny):
    return random_images(3, tiny.config.image.size, torch.Generator().manual_seed(7))


def test_shapes(tiny, images):
    cfg = tiny.config
    ctx = tiny.prepare_images(images)
    n, c, d = cfg.num_visual_tokens, cfg.grid_channels, cfg.fusion.hidden_size
    assert ctx.grid.shape == (3, n, c) and ctx.visual_tokens.shape == (3, n, d)
    assert ctx.concept_ids.shape == (3, cfg.concepts.top_k)
    assert (ctx.concept_scores[:, :-1] >= ctx.concept_scores[:, 1:]).all()
    out = tiny(images, [[5], [6, 7], []], output_hidden_states=True, output_attentions=True)
    a, v = cfg.decoding.caption_segment_length, cfg.fusion.vocab_size
    assert out.head_logits.shape == (3, cfg.heads.count, a, v) and out.logits.shape == (3, a, v)
    assert len(out.hidden_states) == cfg.fusion.num_hidden_layers + 1
    assert out.attentions[0].shape[1] == cfg.fusion.num_attention_heads


def test_regions_follow_adaptive_pooling(tiny, images):
    grid = tiny.encode_image(images[:1])  # [1, N, C]
    regions = tiny.concepts.regions(grid)[0]  # [R, C]
    g = tiny.config.grid_side
    assert regions.shape[0] == sum(w * w for w in tiny.config.concepts.windows)
    assert torch.allclose(regions[0], grid[0].mean(0), atol=1e-6)  # window 1 = whole image
    square = grid[0].T.reshape(-1, g, g)  # [C, G, G]
    assert torch.allclose(regions[1], square[:, :g // 2, :g // 2].mean((1, 2)), atol=1e-6)  # 2x2, top-left


def test_batch_equals_one_at_a_time(tiny, images):
    captions = [[5, 9], [6], []]
    batch = tiny(images, captions, end="mask").logits
    for i in range(3):
        single = tiny(images[i:i + 1], captions[i:i + 1], end="mask").logits
        assert relative_error(batch[i:i + 1], single) <= 1e-5


def test_mask_layout(tiny, images):
    ctx = tiny.prepare_images(images[:1])
    captions = tiny.caption_segment([[5, 6]], "mask")
    ids, types, pos, mask = tiny.build_inputs(captions, ctx.concept_ids)
    a = tiny.config.decoding.caption_segment_length
    t = ids.shape[1]
    assert ids[0, :4].tolist() == [tiny.cls_id, 5, 6, tiny.mask_id] and (ids[0, 4:a] == tiny.pad_id).all()
    assert ids[0, -1] == tiny.sep_id and (types[0, :a] == 0).all() and (types[0, a:] == 1).all()
    assert pos[0].tolist() == list(range(t))
    m = mask[0]
    assert m[2, 3] == MASK_VALUE and m[3, 2] == 0 and m[3, 3] == 0  # caption: causal
    assert m[3, 5] == MASK_VALUE  # [PAD] keys never seen
    assert (m[a:, :a] == MASK_VALUE).all() and (m[a:, a:] == 0).all()  # concepts/visual: no caption
    assert (m[:4, a:] == 0).all()


def test_caption_prefix_independence(tiny, images):
    """Rows before position i and all concept/visual rows do not depend on caption tokens after i
    (what makes key/value caching exact)."""
    ctx = tiny.prepare_images(images[:1])
    outs = []
    for caption in ([5, 6, 7], [5, 6, 9]):
        inputs = tiny.build_inputs(tiny.caption_segment([caption], "mask"), ctx.concept_ids)
        hidden, _ = tiny.bert(*inputs[:3], inputs[3], ctx.visual_tokens)
        outs.append(hidden[-1][0])
    a = tiny.config.decoding.caption_segment_length
    assert torch.equal(outs[0][:3], outs[1][:3])  # [CLS] 5 6
    assert torch.allclose(outs[0][a:], outs[1][a:], atol=1e-6)  # concepts + visual
    assert not torch.allclose(outs[0][3], outs[1][3])


def test_beam_one_equals_greedy(tiny, images):
    greedy = tiny.greedy(images)
    beam = tiny.beam_search(images, beam=1)
    for g, b in zip(greedy, beam):
        assert g.ids == b.ids
        assert abs(g.score - b.score) <= 1e-5


def test_beam_is_deterministic_and_not_worse(tiny, images):
    first, second = tiny.beam_search(images), tiny.beam_search(images)
    assert [c.ids for c in first] == [c.ids for c in second]
    assert all(len(c.ids) <= tiny.config.decoding.max_length for c in first)


def test_ensemble_is_mean_of_heads_and_shared_decoder(tiny, images):
    """mean_h(logits_h) == mean_h(transform_h(x)) @ W^T + mean_h(bias_h) (docs/FORMAT.md 10)."""
    ctx = tiny.prepare_images(images[:1])
    ids, types, pos, mask = tiny.build_inputs(tiny.caption_segment([[5]], "mask"), ctx.concept_ids)
    out = tiny.fusion(ids, types, pos, ctx.visual_tokens, mask, output_hidden_states=True)
    hidden = out.hidden_states[-1][:, :tiny.config.decoding.caption_segment_length]  # [1, A, D]
    transformed = torch.stack([h.transform(hidden) for h in tiny.heads]).mean(0)  # [1, A, D]
    bias = torch.stack([h.bias for h in tiny.heads]).mean(0)  # [V]
    w = tiny.bert.embeddings.word_embeddings.weight  # [V, D]
    assert relative_error(transformed @ w.T + bias, out.logits) <= 1e-5


def test_concept_ablation_builds_without_concepts():
    tok = make_model("tiny", seed=0).tokenizer
    cfg = LightCapConfig.tiny(vocab_size=len(tok)).replace(concepts={"enabled": False}, modulator={"enabled": False})
    model = LightCap(cfg, tok, []).eval()
    assert model.concepts is None and model.modulator is None
    assert not any(k.startswith(("concepts.", "modulator.")) for k in model.state_dict())
    x = random_images(1, cfg.image.size, torch.Generator().manual_seed(0))
    ids, *_ = model.build_inputs(model.caption_segment([[5]], "mask"), None)
    assert ids.shape[1] == cfg.decoding.caption_segment_length
    assert len(model.greedy(x)[0].ids) <= cfg.decoding.max_length


def test_batched_greedy_equals_reference(tiny, images):
    one, many = tiny.greedy(images), tiny.greedy(images, batched=True)
    assert [c.ids for c in one] == [c.ids for c in many]
    assert all(abs(a.score - b.score) <= 1e-5 for a, b in zip(one, many))


def test_attention_outputs(tiny, images):
    out = tiny(images[:1], [[5]], end="sep", output_attentions=True)
    probs, scores = out.attentions[0], out.attention_scores[0]
    assert torch.allclose(torch.softmax(scores, -1), probs)
    assert torch.allclose(probs.sum(-1), torch.ones(()))
