"""CLIP's text side: the byte-level BPE tokenizer and the text transformer (open_clip's
`TextTransformer` names), used to compute the concept embeddings (`concepts.embeddings`)
with the text tower that belongs to the visual tower in use.

    tok = ClipTokenizer()                     # reads bpe_simple_vocab_16e6.txt.gz from open_clip's wheel
    ids = tok(["a photo of a dog"])           # [B, 77] long: <start_of_text> ... <end_of_text> 0 0 ...
    text = CLIPTextTransformer(...); emb = text(ids)   # [B, embed_dim], not normalised
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

try:
    import ftfy
except ImportError:  # pragma: no cover - ftfy is in requirements.txt
    ftfy = None
import regex

NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP (the file has more lines)


def default_bpe_path() -> Path:
    """The BPE vocabulary shipped in the open_clip_torch wheel (found without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip_torch is not installed: its bpe_simple_vocab_16e6.txt.gz is needed")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    return path


@lru_cache()
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters: printable Latin-1
    bytes map to themselves, the others to code points 256, 257, ... The dict's order (the
    printable bytes first, then the others) is the order of the first 256 vocabulary entries."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table


class ClipTokenizer:
    """CLIP's BPE tokenizer: ftfy + HTML unescape, whitespace collapse, lower case, regex
    pre-split, byte-level BPE with `</w>` end-of-word marks."""

    def __init__(self, bpe_path: str | Path | None = None, context_length: int = 77):
        lines = gzip.open(bpe_path or default_bpe_path()).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        symbols = list(byte_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.sot_id = self.encoder["<start_of_text>"]
        self.eot_id = self.encoder["<end_of_text>"]
        self.context_length = context_length
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.pattern = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE)
        self._cache: dict[str, list[str]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @staticmethod
    def clean(text: str) -> str:
        if ftfy is not None:
            text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        return " ".join(text.split()).lower()

    def bpe(self, word: str) -> list[str]:
        """Merges the lowest-ranked adjacent pair until none is mergeable."""
        if word in ("<start_of_text>", "<end_of_text>"):
            return [word]
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, at = min(pairs)
            if rank == math.inf:
                break
            first, second = parts[at], parts[at + 1]
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the pair, left to right
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without start/end tokens."""
        ids = []
        for word in self.pattern.findall(self.clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids += [self.encoder[p] for p in self.bpe(mapped)]
        return ids

    def decode(self, ids) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        """[B, context_length] ids: start, text, end, zero padding (truncated: last = end)."""
        texts = [texts] if isinstance(texts, str) else texts
        n = context_length or self.context_length
        out = torch.zeros(len(texts), n, dtype=torch.long)  # [B, n]
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > n:
                ids = ids[:n]
                ids[-1] = self.eot_id
            out[row, :len(ids)] = torch.tensor(ids)
        return out


# ----------------------------------------------------------------------------------------
# Text transformer (pre-LN, causal, pooled at the end-of-text token)
# ----------------------------------------------------------------------------------------

@dataclass
class ClipTextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    embed_dim: int = 1024  # output (joint space) dimension
    act: str = "gelu"  # "gelu" (open_clip default) or "quick_gelu" (OpenAI checkpoints)
    # The pooled token: None = the largest id of the row (CLIP's <end_of_text>); an id = the
    # first occurrence of that id (the scenes CLIP's [SEP], which is not its largest id).
    eot_id: int | None = None
    # Random init: "open_clip" (its std per weight kind) or "embeddings" (only the embeddings
    # and the projection redrawn; the blocks keep PyTorch's init, as the scenes CLIP trains).
    init: str = "open_clip"


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (open_clip's names and its
    nn.MultiheadAttention)."""

    def __init__(self, width: int, heads: int, act: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU() if act == "quick_gelu" else nn.GELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))

    def forward(self, x, mask):  # x: [B, T, W], mask: [T, T] additive
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]  # [B, T, W]
        return x + self.mlp(self.ln_2(x))  # [B, T, W]


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, act: str):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, act) for _ in range(layers))

    def forward(self, x, mask):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class CLIPTextTransformer(nn.Module):
    """open_clip's TextTransformer (as laid out in the CLIP model's text tower): token +
    positional embedding, causal pre-LN transformer, ln_final, pooled at the end-of-text
    token, projected by `text_projection` [width, embed_dim]. The one text tower of the
    project: a converted checkpoint's, and the scenes CLIP's (over its WordPiece vocabulary)."""

    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.config = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.act)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        causal = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)  # [T, T]
        self.init_parameters()

    def init_parameters(self):
        w, n = self.config.width, self.config.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if self.config.init == "open_clip":
            for block in self.transformer.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=w ** -0.5)
                nn.init.normal_(block.attn.out_proj.weight, std=w ** -0.5 * (2 * n) ** -0.5)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * w) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=w ** -0.5 * (2 * n) ** -0.5)
        nn.init.normal_(self.text_projection, std=w ** -0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: [B, T], T <= context_length
        t = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:t]  # [B, T, W]
        x = self.ln_final(self.transformer(x, self.attn_mask[:t, :t]))  # [B, T, W]
        eot = self.config.eot_id
        end = ids.argmax(dim=-1) if eot is None else (ids == eot).int().argmax(dim=1)  # [B]
        return x[torch.arange(x.shape[0]), end] @ self.text_projection  # [B, E]

    @classmethod
    def config_from_state_dict(cls, state: dict[str, torch.Tensor], act: str = "gelu") -> ClipTextConfig:
        """Sizes of a CLIP text tower from its (prefix-free) weights."""
        layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        width = state["ln_final.weight"].shape[0]
        return ClipTextConfig(context_length=state["positional_embedding"].shape[0],
                              vocab_size=state["token_embedding.weight"].shape[0], width=width,
                              heads=width // 64, layers=layers,
                              embed_dim=state["text_projection"].shape[1], act=act)


class WordPieceTextTokenizer:
    """The scenes CLIP's tokenizer: texts -> [B, context] ids `[CLS] words [SEP]`, [PAD] after,
    over the fusion model's WordPiece vocabulary; too long texts are cut and still end with [SEP]."""

    def __init__(self, wordpiece):
        self.wp = wordpiece
        self.cls, self.sep, self.pad = (wordpiece.token_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))

    def __call__(self, texts: list[str], context_length: int) -> torch.Tensor:
        out = torch.full((len(texts), context_length), self.pad, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.cls] + self.wp.encode(text)[:context_length - 2] + [self.sep]
            out[i, :len(ids)] = torch.tensor(ids)
        return out


@torch.no_grad()
def concept_embeddings(text: CLIPTextTransformer, tokenizer: ClipTokenizer, concepts: list[str],
                       prompt: str = "a photo of a {}", batch: int = 64) -> torch.Tensor:
    """CLIP text embeddings (not normalised) of `prompt.format(c)` for every concept: [K, E]."""
    text.eval()
    rows = []
    for i in range(0, len(concepts), batch):
        ids = tokenizer([prompt.format(c) for c in concepts[i:i + batch]], text.config.context_length)
        rows.append(text(ids))  # [b, E]
    return torch.cat(rows) if rows else torch.zeros(0, text.config.embed_dim)
