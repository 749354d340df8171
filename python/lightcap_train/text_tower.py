"""The text tower of the scenes CLIP (stage 0 of the recipe): CLIP's text transformer with
open_clip's `TextTransformer` parameter names, over the domain WordPiece vocabulary.

The scenes CLIP needs no BPE: every caption and concept word is one token of the domain
vocabulary (scenes.vocabulary), with [CLS] as start and [SEP] as end of text (the pooled
token). The tower only exists at training time (it gives the concept embeddings); the model
directory never holds it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .wordpiece import WordPiece


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (open_clip names)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x, mask):  # x: [B, T, W], mask: [T, T] additive
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x, mask):  # [B, T, W]
        for block in self.resblocks:
            x = block(x, mask)
        return x


class CLIPTextTransformer(nn.Module):
    """Token + position embedding, causal pre-LN transformer, ln_final, the end-of-text token's
    state projected by `text_projection` [W, output_dim]."""

    def __init__(self, context_length: int, vocab_size: int, width: int, heads: int, layers: int,
                 output_dim: int, eot_id: int):
        super().__init__()
        self.context_length, self.eot_id = context_length, eot_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width ** -0.5)
        causal = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", causal, persistent=False)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # text: [B, T] token ids
        t = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:t]  # [B, T, W]
        x = self.ln_final(self.transformer(x, self.attn_mask[:t, :t]))  # [B, T, W]
        eot = (text == self.eot_id).int().argmax(dim=1)  # [B] first end-of-text token
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection  # [B, output_dim]


class TextTokenizer:
    """Texts -> [B, context] ids: [CLS] words [SEP], [PAD] after; too long texts are cut and
    still end with [SEP]."""

    def __init__(self, wordpiece: WordPiece):
        self.wp = wordpiece
        self.cls, self.sep, self.pad = (wordpiece.token_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))

    def __call__(self, texts: list[str], context_length: int) -> torch.Tensor:
        out = torch.full((len(texts), context_length), self.pad, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.cls] + self.wp.encode(text)[:context_length - 2] + [self.sep]
            out[i, :len(ids)] = torch.tensor(ids)
        return out
