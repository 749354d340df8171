"""The LightCap reference model in PyTorch (docs/FORMAT.md, "The computation").

Reads top to bottom like the paper's figure: CLIP ModifiedResNet grid -> concept extractor
-> modulator -> image projection + BERT fusion (OSCAR layout) -> parallel heads -> greedy /
beam decoding (plain and uncached: the reference the Swift engine's cached decoding must match).

Module and parameter names are the contract's safetensors keys: open_clip's ModifiedResNet
names under `visual.`, Hugging Face BertModel names under `bert.` (no pooler).

Shapes: B batch, S image side, C grid channels (width*32), G grid side (S/32), N = G*G visual
tokens, R regions, E concept embedding dim, K concepts in the vocabulary, k kept concepts,
D fusion hidden size, V vocabulary, A caption segment length, T text length, L = T + N.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightcap_train.reference.config import FusionConfig, LightCapConfig
from lightcap_train.reference.wordpiece import WordPiece

MASK_VALUE = -10000.0  # additive attention mask value for a blocked key (HF's extended mask)


# ----------------------------------------------------------------------------------------
# 1. Image encoder: CLIP ModifiedResNet (open_clip names and structure)
# ----------------------------------------------------------------------------------------

def _norm2d(channels: int, folded: bool) -> nn.Module:
    """BatchNorm2d, or Identity once BatchNorm has been folded into the convolution."""
    return nn.Identity() if folded else nn.BatchNorm2d(channels)


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased stride: AvgPool after conv2 and before the
    downsample conv when stride > 1. `folded`: convs carry a bias and BatchNorm is gone."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, folded: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=folded)
        self.bn1 = _norm2d(planes, folded)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=folded)
        self.bn2 = _norm2d(planes, folded)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=folded)
        self.bn3 = _norm2d(planes * self.expansion, folded)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=folded)),
                ("1", _norm2d(planes * self.expansion, folded)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, Cin, H, W]
        identity = x
        out = self.act1(self.bn1(self.conv1(x)))  # [B, P, H, W]
        out = self.act2(self.bn2(self.conv2(out)))  # [B, P, H, W]
        out = self.avgpool(out)  # [B, P, H/s, W/s]
        out = self.bn3(self.conv3(out))  # [B, 4P, H/s, W/s]
        if self.downsample is not None:
            identity = self.downsample(x)  # [B, 4P, H/s, W/s]
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pool: the mean token (plus positional embedding) attends over the grid."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, G, G]
        b, c = x.shape[:2]
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [B, N+1, C]
        tokens = tokens + self.positional_embedding[None].to(tokens.dtype)  # [B, N+1, C]
        h, dh = self.num_heads, c // self.num_heads
        q = self.q_proj(tokens[:, :1]).view(b, 1, h, dh).transpose(1, 2)  # [B, h, 1, dh]
        k = self.k_proj(tokens).view(b, -1, h, dh).transpose(1, 2)  # [B, h, N+1, dh]
        v = self.v_proj(tokens).view(b, -1, h, dh).transpose(1, 2)  # [B, h, N+1, dh]
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # [B, h, 1, N+1]
        out = (probs @ v).transpose(1, 2).reshape(b, c)  # [B, C]
        return self.c_proj(out)  # [B, output_dim]


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: 3-conv stem with AvgPool, anti-aliased bottlenecks, attention pool.
    `forward_grid` gives the grid before the pool (what captioning uses)."""

    def __init__(self, layers: list[int], output_dim: int, heads: int, image_size: int = 224,
                 width: int = 64, attention_pool: bool = True, folded: bool = False):
        super().__init__()
        self.output_dim = output_dim
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=folded)
        self.bn1 = _norm2d(width // 2, folded)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=folded)
        self.bn2 = _norm2d(width // 2, folded)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=folded)
        self.bn3 = _norm2d(width, folded)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0], 1, folded)
        self.layer2 = self._make_layer(width * 2, layers[1], 2, folded)
        self.layer3 = self._make_layer(width * 4, layers[2], 2, folded)
        self.layer4 = self._make_layer(width * 8, layers[3], 2, folded)

        embed_dim = width * 32
        self.attnpool = AttentionPool2d(image_size // 32, embed_dim, heads, output_dim) if attention_pool else None

    def _make_layer(self, planes: int, blocks: int, stride: int, folded: bool) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride, folded)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes, 1, folded) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, S, S]
        x = self.act1(self.bn1(self.conv1(x)))  # [B, W/2, S/2, S/2]
        x = self.act2(self.bn2(self.conv2(x)))  # [B, W/2, S/2, S/2]
        x = self.act3(self.bn3(self.conv3(x)))  # [B, W, S/2, S/2]
        return self.avgpool(x)  # [B, W, S/4, S/4]

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, S, S]
        x = self.stem(x)  # [B, W, S/4, S/4]
        x = self.layer1(x)  # [B, 4W, S/4, S/4]
        x = self.layer2(x)  # [B, 8W, S/8, S/8]
        x = self.layer3(x)  # [B, 16W, S/16, S/16]
        return self.layer4(x)  # [B, C=32W, G, G]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, S, S]
        if self.attnpool is None:
            raise RuntimeError("this ModifiedResNet has no attention pool (visual.attention_pool is false)")
        return self.attnpool(self.forward_grid(x))  # [B, output_dim]


# ----------------------------------------------------------------------------------------
# 2. Visual concept extractor
# ----------------------------------------------------------------------------------------

class ConceptExtractor(nn.Module):
    """Grid windows -> region features -> alignment MLP -> cosine against the stored CLIP
    text embeddings of the concept vocabulary -> top-k concepts (score = best region)."""

    def __init__(self, channels: int, hidden_dim: int, embed_dim: int, num_concepts: int,
                 windows: list[int], top_k: int, grid_side: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embed_dim))
        self.register_buffer("embeddings", torch.zeros(num_concepts, embed_dim))  # [K, E]
        self.windows = list(windows)
        self.top_k = top_k
        self.grid_side = grid_side

    def regions(self, grid: torch.Tensor) -> torch.Tensor:  # grid: [B, N, C]
        b, n, c = grid.shape
        square = grid.transpose(1, 2).reshape(b, c, self.grid_side, self.grid_side)  # [B, C, G, G]
        cells = [F.adaptive_avg_pool2d(square, w).flatten(2) for w in self.windows]  # each [B, C, w*w]
        return torch.cat(cells, dim=2).transpose(1, 2)  # [B, R, C]

    def concept_scores(self, region_embeddings: torch.Tensor) -> torch.Tensor:  # [B, R, E]
        e = F.normalize(region_embeddings, dim=-1)  # [B, R, E]
        t = F.normalize(self.embeddings, dim=-1)  # [K, E]
        return (e @ t.T).amax(dim=1)  # [B, K]

    def select(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # scores: [B, K]
        k = min(self.top_k, scores.shape[1])
        # Stable descending sort: equal scores keep the lower concept index first.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]  # [B, k]
        return order, scores.gather(1, order)  # [B, k], [B, k]

    def forward(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # grid: [B, N, C]
        region_embeddings = self.mlp(self.regions(grid))  # [B, R, E]
        return self.select(self.concept_scores(region_embeddings))  # [B, k], [B, k]


# ----------------------------------------------------------------------------------------
# 3. Cross-modal modulator
# ----------------------------------------------------------------------------------------

class Modulator(nn.Module):
    """Concept word embeddings -> per-channel sigmoid weights, averaged over the concepts."""

    def __init__(self, word_dim: int, hidden_dim: int, channels: int):
        super().__init__()
        self.fc1 = nn.Linear(word_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, channels)

    def forward(self, concept_words: torch.Tensor) -> torch.Tensor:  # [B, k, D]
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(concept_words))))  # [B, k, C]
        return weights.mean(dim=1)  # [B, C]


# ----------------------------------------------------------------------------------------
# 4. Fusion model: BERT with Hugging Face names
# ----------------------------------------------------------------------------------------

def _activation(name: str):
    if name == "gelu":
        return F.gelu  # erf form
    if name == "gelu_new":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported activation {name!r}")


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, token_ids, type_ids, position_ids) -> torch.Tensor:  # each [B, T]
        x = self.word_embeddings(token_ids) + self.position_embeddings(position_ids) \
            + self.token_type_embeddings(type_ids)  # [B, T, D]
        return self.dropout(self.LayerNorm(x))  # [B, T, D]


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None):  # x: [B, L, D], mask: [B, L, L]
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # [B, h, L, dh]
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, h, L, L]
        if mask is not None:
            scores = scores + mask[:, None]  # [B, h, L, L]
        probs = torch.softmax(scores, dim=-1)  # [B, h, L, L]
        context = (self.dropout(probs) @ v).transpose(1, 2).reshape(b, n, d)  # [B, L, D]
        return context, (probs, scores)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, context, residual):  # [B, L, D] each
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)  # [B, L, D]


class BertAttention(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x, mask):  # x: [B, L, D]
        context, maps = self.self(x, mask)
        return self.output(context, x), maps  # [B, L, D], (probs, scores) each [B, h, L, L]


class BertIntermediate(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = _activation(cfg.hidden_act)

    def forward(self, x):  # [B, L, D]
        return self.act(self.dense(x))  # [B, L, I]


class BertOutput(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, residual):  # x: [B, L, I], residual: [B, L, D]
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)  # [B, L, D]


class BertLayer(nn.Module):
    """Post-LN transformer layer."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x, mask):  # x: [B, L, D]
        attended, maps = self.attention(x, mask)  # [B, L, D]
        return self.output(self.intermediate(attended), attended), maps  # [B, L, D]


class BertEncoder(nn.Module):
    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x, mask):  # x: [B, L, D] -> every hidden state and attention map
        hidden, maps = [x], []
        for layer in self.layer:
            x, layer_maps = layer(x, mask)
            hidden.append(x)
            maps.append(layer_maps)
        return hidden, maps


class BertModel(nn.Module):
    """Hugging Face BertModel without pooler. Extra (visual) tokens, already embedded, are
    appended after the text embeddings and get no position or type embedding."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(self, token_ids, type_ids, position_ids, mask=None, extra_tokens=None, return_scores=False):
        """Returns (hidden, probs): (layers+1) x [B, L, D] and layers x [B, h, L, L] softmax
        probabilities; with `return_scores` also the pre-softmax scores (mask added)."""
        x = self.embeddings(token_ids, type_ids, position_ids)  # [B, T, D]
        if extra_tokens is not None:
            x = torch.cat([x, extra_tokens], dim=1)  # [B, L = T + N, D]
        hidden, maps = self.encoder(x, mask)
        probs = [p for p, _ in maps]
        return (hidden, probs, [s for _, s in maps]) if return_scores else (hidden, probs)


class ImageProjection(nn.Module):
    """Grid tokens -> fusion hidden size: LayerNorm(dense(x)), or LayerNorm(dense(x) + P) with
    a learned position embedding P [N, D] per grid cell (fusion.visual_position_embeddings)."""

    def __init__(self, channels: int, hidden_size: int, eps: float, positions: int = 0):
        super().__init__()
        self.dense = nn.Linear(channels, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.position_embeddings = nn.Parameter(torch.zeros(positions, hidden_size)) if positions else None

    def forward(self, x):  # [B, N, C]
        y = self.dense(x)  # [B, N, D]
        if self.position_embeddings is not None:
            if y.shape[1] != self.position_embeddings.shape[0]:
                raise ValueError(f"{y.shape[1]} visual tokens, {self.position_embeddings.shape[0]} positions")
            y = y + self.position_embeddings
        return self.LayerNorm(y)  # [B, N, D]


class HeadTransform(nn.Module):
    def __init__(self, hidden_size: int, act: str, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = _activation(act)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x):  # [B, A, D]
        return self.LayerNorm(self.act(self.dense(x)))  # [B, A, D]


class PredictionHead(nn.Module):
    """One parallel head: transform, then the decoder tied to the word embeddings + own bias."""

    def __init__(self, hidden_size: int, vocab_size: int, act: str, eps: float):
        super().__init__()
        self.transform = HeadTransform(hidden_size, act, eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x, decoder_weight):  # x: [B, A, D], decoder_weight: [V, D]
        return self.transform(x) @ decoder_weight.T + self.bias  # [B, A, V]


# ----------------------------------------------------------------------------------------
# 5. LightCap
# ----------------------------------------------------------------------------------------

@dataclass
class FusionOutput:
    head_logits: torch.Tensor  # [B, H, A, V] caption-segment rows only
    logits: torch.Tensor  # [B, A, V] ensemble (mean over heads)
    hidden_states: list[torch.Tensor] | None = None  # (layers+1) x [B, L, D]
    attentions: list[torch.Tensor] | None = None  # layers x [B, h, L, L] softmax probabilities
    attention_scores: list[torch.Tensor] | None = None  # layers x [B, h, L, L] before softmax, mask added
    #   (TinyBERT's attention distillation uses these scores)


@dataclass
class ImageContext:
    """Everything decoding needs from the images (computed once)."""
    grid: torch.Tensor  # [B, N, C]
    concept_ids: torch.Tensor | None  # [B, k]
    concept_scores: torch.Tensor | None  # [B, k]
    modulated: torch.Tensor  # [B, N, C]
    visual_tokens: torch.Tensor  # [B, N, D]


@dataclass
class Caption:
    ids: list[int]  # caption token ids, without [CLS] / [SEP]
    score: float  # greedy: mean log-prob; beam: normalised score (docs/FORMAT.md 11-12)


class LightCap(nn.Module):
    """The whole captioner. `tokenizer` maps token strings to ids (vocab.txt);
    `concepts` is the concept vocabulary (concepts.txt), row i of `concepts.embeddings`."""

    def __init__(self, config: LightCapConfig, tokenizer: WordPiece, concepts: list[str]):
        super().__init__()
        cfg = config.validate()
        self.config = cfg
        self.tokenizer = tokenizer
        self.concept_words = list(concepts)
        if len(tokenizer) != cfg.fusion.vocab_size:
            raise ValueError(f"vocabulary has {len(tokenizer)} tokens, config fusion.vocab_size is {cfg.fusion.vocab_size}")
        t = cfg.tokens
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = (
            tokenizer.token_id(t.cls), tokenizer.token_id(t.sep), tokenizer.token_id(t.mask), tokenizer.token_id(t.pad))
        c, d = cfg.grid_channels, cfg.fusion.hidden_size
        v = cfg.visual
        self.visual = ModifiedResNet(v.layers, v.output_dim, v.heads, cfg.image.size, v.width,
                                     v.attention_pool, v.batchnorm_folded)
        if cfg.concepts.enabled:
            if not self.concept_words:
                raise ValueError("concepts.enabled needs a non-empty concept vocabulary")
            cc = cfg.concepts
            self.concepts = ConceptExtractor(c, cc.hidden_dim, cc.embed_dim, len(self.concept_words),
                                             cc.windows, cc.top_k, cfg.grid_side)
            pieces = [tokenizer.encode(w) for w in self.concept_words]
            for word, p in zip(self.concept_words, pieces):
                if not p:
                    raise ValueError(f"concept {word!r} tokenizes to nothing")
            width = max(len(p) for p in pieces)
            table = torch.full((len(pieces), width), -1, dtype=torch.long)  # [K, P], -1 = none
            for i, p in enumerate(pieces):
                table[i, :len(p)] = torch.tensor(p)
            self.register_buffer("concept_pieces", table, persistent=False)
        else:
            self.concepts = None
        self.modulator = Modulator(d, cfg.modulator.hidden_dim, c) if cfg.use_modulator else None
        self.bert = BertModel(cfg.fusion)
        self.image_projection = ImageProjection(
            c, d, cfg.fusion.layer_norm_eps,
            cfg.num_visual_tokens if cfg.fusion.visual_position_embeddings else 0)
        self.heads = nn.ModuleList(
            PredictionHead(d, cfg.fusion.vocab_size, cfg.fusion.hidden_act, cfg.fusion.layer_norm_eps)
            for _ in range(cfg.heads.count))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """BERT-style init for the linear/embedding/LayerNorm parts (the ResNet keeps
        PyTorch's default init)."""
        for name, module in self.named_modules():
            if name.startswith("visual"):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.image_projection.position_embeddings is not None:
            nn.init.normal_(self.image_projection.position_embeddings, std=std)

    # --- image side ------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:  # images: [B, 3, S, S]
        grid = self.visual.forward_grid(images)  # [B, C, G, G]
        return grid.flatten(2).transpose(1, 2)  # [B, N, C] row-major (y, x)

    def extract_concepts(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, N, C]
        if self.concepts is None:
            raise RuntimeError("concepts are disabled in this model")
        return self.concepts(grid)  # ids [B, k], scores [B, k]

    def concept_word_embeddings(self, concept_ids: torch.Tensor) -> torch.Tensor:  # [B, k]
        """Mean word embedding of each concept's WordPiece ids."""
        pieces = self.concept_pieces[concept_ids]  # [B, k, P]
        valid = (pieces >= 0).to(self.bert.embeddings.word_embeddings.weight.dtype)  # [B, k, P]
        rows = self.bert.embeddings.word_embeddings(pieces.clamp(min=0))  # [B, k, P, D]
        return (rows * valid[..., None]).sum(2) / valid.sum(2, keepdim=True)  # [B, k, D]

    def modulation(self, concept_ids: torch.Tensor) -> torch.Tensor:  # [B, k]
        return self.modulator(self.concept_word_embeddings(concept_ids))  # [B, C]

    def modulate(self, grid: torch.Tensor, concept_ids: torch.Tensor | None) -> torch.Tensor:  # [B, N, C]
        if self.modulator is None:
            return grid
        return grid * self.modulation(concept_ids)[:, None, :]  # [B, N, C]

    def prepare_images(self, images: torch.Tensor) -> ImageContext:  # [B, 3, S, S]
        grid = self.encode_image(images)  # [B, N, C]
        ids = scores = None
        if self.concepts is not None:
            ids, scores = self.extract_concepts(grid)  # [B, k]
        modulated = self.modulate(grid, ids)  # [B, N, C]
        return ImageContext(grid, ids, scores, modulated, self.image_projection(modulated))

    # --- text side -------------------------------------------------------------------
    def caption_segment(self, captions: list[list[int]], end: str = "mask") -> torch.Tensor:
        """`[CLS] t1..tn` + `[MASK]` (end="mask", decoding) or `[SEP]` (end="sep", training)
        or nothing (end="none"), padded with [PAD] to A. Returns [B, A] long."""
        a = self.config.decoding.caption_segment_length
        tail = {"mask": [self.mask_id], "sep": [self.sep_id], "none": []}[end]
        out = torch.full((len(captions), a), self.pad_id, dtype=torch.long)  # [B, A]
        for i, cap in enumerate(captions):
            seq = [self.cls_id] + [int(t) for t in cap] + tail
            if len(seq) > a:
                raise ValueError(f"caption of {len(cap)} tokens does not fit the caption segment ({a})")
            out[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out

    def build_inputs(self, caption_ids: torch.Tensor, concept_ids: torch.Tensor | None):
        """Token ids, type ids, position ids [B, T] and the additive mask [B, T+N, T+N]
        (docs/FORMAT.md 7-8). In a batch, concept segments of different lengths are padded
        with [PAD] at their end (never seen; the same result as one image at a time)."""
        b, a = caption_ids.shape  # [B, A]
        device = caption_ids.device
        segments = []
        if self.concepts is not None:
            if concept_ids is None:
                raise ValueError("this model needs concept ids")
            if concept_ids.shape[0] != b:
                raise ValueError(f"{concept_ids.shape[0]} concept rows for {b} captions")
            for row in concept_ids.tolist():
                seg = [p for c in row for p in self.concept_pieces[c].tolist() if p >= 0]
                segments.append(seg + [self.sep_id])
        width = max((len(s) for s in segments), default=0)
        concept_part = torch.full((b, width), self.pad_id, dtype=torch.long)  # [B, T-A]
        for i, seg in enumerate(segments):
            concept_part[i, :len(seg)] = torch.tensor(seg, dtype=torch.long)
        token_ids = torch.cat([caption_ids, concept_part.to(device)], dim=1)  # [B, T]
        t = token_ids.shape[1]
        type_ids = (torch.arange(t, device=device) >= a).long().expand(b, t)  # [B, T]
        position_ids = torch.arange(t, device=device).expand(b, t)  # [B, T]
        if t > self.config.fusion.max_position_embeddings:
            raise ValueError(f"text of {t} tokens exceeds max_position_embeddings")

        n = self.config.num_visual_tokens
        total = t + n
        key_is_caption = torch.arange(total, device=device) < a  # [L]
        key_ok = torch.cat([token_ids != self.pad_id, torch.ones(b, n, dtype=torch.bool, device=device)], 1)  # [B, L]
        idx = torch.arange(total, device=device)
        causal = idx[None, :] <= idx[:, None]  # [L, L] key j <= query i
        query_is_caption = key_is_caption[:, None]  # [L, 1]
        allowed = torch.where(query_is_caption,
                              ~key_is_caption[None, :] | causal,  # caption query: later caption keys blocked
                              ~key_is_caption[None, :].expand(total, total))  # others: no caption key
        allowed = allowed[None] & key_ok[:, None, :]  # [B, L, L]
        mask = torch.zeros(b, total, total, device=device)
        mask.masked_fill_(~allowed, MASK_VALUE)  # [B, L, L]
        return token_ids, type_ids, position_ids, mask

    # --- fusion + heads --------------------------------------------------------------
    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # hidden: [B, *, D]
        w = self.bert.embeddings.word_embeddings.weight  # [V, D]
        return torch.stack([head(hidden, w) for head in self.heads], dim=1)  # [B, H, *, V]

    def fusion(self, token_ids, type_ids, position_ids, visual_tokens, mask,
               output_hidden_states: bool = False, output_attentions: bool = False) -> FusionOutput:
        """BERT over [text; visual] and the heads on the caption-segment rows."""
        hidden, probs, scores = self.bert(token_ids, type_ids, position_ids, mask, visual_tokens, return_scores=True)
        a = self.config.decoding.caption_segment_length
        head_logits = self.head_logits(hidden[-1][:, :a])  # [B, H, A, V]
        return FusionOutput(head_logits, head_logits.mean(dim=1),
                            hidden if output_hidden_states else None,
                            probs if output_attentions else None,
                            scores if output_attentions else None)

    def forward(self, images: torch.Tensor, captions: list[list[int]], end: str = "sep",
                output_hidden_states: bool = False, output_attentions: bool = False) -> FusionOutput:
        """Whole pipeline on a batch: images [B, 3, S, S], caption token lists (no specials)."""
        ctx = self.prepare_images(images)
        inputs = self.build_inputs(self.caption_segment(captions, end).to(images.device), ctx.concept_ids)
        return self.fusion(*inputs[:3], ctx.visual_tokens, inputs[3], output_hidden_states, output_attentions)

    # --- decoding (plain, uncached) -----------------------------------------------------
    def _next_logits(self, ctx: ImageContext, image_rows: list[int], prefixes: list[list[int]]) -> torch.Tensor:
        """Ensemble logits at the [MASK] after each prefix; prefix p belongs to image
        image_rows[p] of `ctx`. Returns [P, V]."""
        p = len(prefixes)
        rows = torch.tensor(image_rows, device=ctx.visual_tokens.device)  # [P]
        captions = self.caption_segment(prefixes, "mask").to(ctx.visual_tokens.device)  # [P, A]
        concept_ids = None if ctx.concept_ids is None else ctx.concept_ids[rows]  # [P, k]
        token_ids, type_ids, position_ids, mask = self.build_inputs(captions, concept_ids)
        hidden, _ = self.bert(token_ids, type_ids, position_ids, mask, ctx.visual_tokens[rows])  # [P, N, D] visual
        at = torch.tensor([len(t) + 1 for t in prefixes], device=rows.device)  # [MASK] positions
        at_mask = hidden[-1][torch.arange(p), at]  # [P, D]
        return self.head_logits(at_mask[:, None])[:, :, 0].mean(dim=1)  # [P, V]

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, max_length: int | None = None,
               margins: list[float] | None = None, batched: bool = False) -> list[Caption]:
        """docs/FORMAT.md rule 11, no cache. One image at a time (the reference), or with
        `batched` all unfinished images in one forward per step (faster evaluation; the same
        tokens up to float rounding). `margins`, if given, collects the top-1 minus top-2
        logit gap of every step (fixtures reject near-ties)."""
        max_length = max_length or self.config.decoding.max_length
        ctx = self.prepare_images(images)
        b = images.shape[0]
        tokens: list[list[int]] = [[] for _ in range(b)]
        logps: list[list[torch.Tensor]] = [[] for _ in range(b)]
        for group in ([list(range(b))] if batched else [[i] for i in range(b)]):
            active = group
            for _ in range(max_length):
                if not active:
                    break
                logits = self._next_logits(ctx, active, [tokens[i] for i in active])  # [P, V]
                still = []
                for row, i in enumerate(active):
                    token = int(torch.argmax(logits[row]))  # first maximum = lowest id on ties
                    if margins is not None:
                        top2 = torch.topk(logits[row], 2).values
                        margins.append(float(top2[0] - top2[1]))
                    logps[i].append(torch.log_softmax(logits[row], dim=-1)[token])
                    if token != self.sep_id:
                        tokens[i].append(token)
                        still.append(i)
                active = still
        return [Caption(tokens[i], float(torch.stack(logps[i]).mean())) for i in range(b)]

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, beam: int | None = None,
                    max_length: int | None = None, margins: list[float] | None = None) -> list[Caption]:
        """docs/FORMAT.md rule 12, one image at a time, no cache. `margins`, if given,
        collects the score gaps that decide the result (selection cut-offs, [SEP] rank B-1/B,
        the final choice), so fixtures can reject near-ties."""
        beam = beam or self.config.decoding.beam_size
        max_length = max_length or self.config.decoding.max_length
        ctx = self.prepare_images(images)
        results = []
        for i in range(images.shape[0]):
            live: list[tuple[list[int], torch.Tensor]] = [([], torch.zeros(()))]  # (tokens, score)
            finished: list[tuple[torch.Tensor, list[int]]] = []  # (normalised score, tokens)
            for _ in range(max_length):
                logp = torch.log_softmax(self._next_logits(ctx, [i] * len(live), [t for t, _ in live]), dim=-1)  # [nb, V]
                vocab = logp.shape[1]
                cand = (torch.stack([s for _, s in live])[:, None] + logp).reshape(-1)  # [nb*V], index b*V+v
                order = torch.sort(cand, descending=True, stable=True).indices[:2 * beam]  # ties: lower index
                next_live = []
                for rank, flat in enumerate(order.tolist()):
                    b, v = divmod(flat, vocab)
                    tokens_b = live[b][0]
                    if v == self.sep_id:
                        if rank < beam:
                            finished.append((cand[flat] / (len(tokens_b) + 1), tokens_b))
                    else:
                        next_live.append((tokens_b + [v], cand[flat]))
                    if len(next_live) == beam:
                        break
                if margins is not None:
                    ranked = cand[order]  # [2B] descending
                    if rank + 1 < len(ranked):
                        margins.append(float(ranked[rank] - ranked[rank + 1]))  # walk cut-off
                    seps = [r for r, f in enumerate(order.tolist()) if f % vocab == self.sep_id]
                    if any(r in (beam - 1, beam) for r in seps) and len(ranked) > beam:
                        margins.append(float(ranked[beam - 1] - ranked[beam]))  # [SEP] admission
                live = next_live
                if len(finished) >= beam:
                    break
            else:
                finished += [(score / len(tokens), tokens) for tokens, score in live]
            best = max(range(len(finished)), key=lambda j: (float(finished[j][0]), -j))
            if margins is not None and len(finished) > 1:
                norm = sorted((float(f[0]) for f in finished), reverse=True)
                margins.append(norm[0] - norm[1])  # final choice
            results.append(Caption(list(finished[best][1]), float(finished[best][0])))
        return results


# CLIP's text tower lives in clip_text.py; re-exported here so that `model` holds every part.
from lightcap_train.reference.clip_text import CLIPTextTransformer, ClipTextConfig, ClipTokenizer  # noqa: E402,F401
