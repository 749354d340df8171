"""The LightCap configuration: a dataclass mirror of config.json (docs/FORMAT.md).

Every size of the model lives here; nothing else in the package hard-codes one.
Missing keys take the defaults of the `tiny` example in docs/FORMAT.md, unknown keys
are ignored, `format_version` is required and must be 1.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class ImageConfig:
    size: int = 128
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))


@dataclass
class VisualConfig:
    layers: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    width: int = 16
    attention_pool: bool = False
    heads: int = 8
    output_dim: int = 128
    batchnorm_folded: bool = True
    # "none", or "int8" (`lightcap quantize`: the Swift engine's INT8 trunk; the reference
    # runs F32 models only and refuses it)
    quantization: str = "none"


@dataclass
class ConceptsConfig:
    enabled: bool = True  # false: no concept segment, no modulation (the ablation)
    embed_dim: int = 128
    hidden_dim: int = 128
    top_k: int = 8
    windows: list[int] = field(default_factory=lambda: [1, 2, 3])
    prompt: str = "a photo of a {}"


@dataclass
class ModulatorConfig:
    enabled: bool = True
    hidden_dim: int = 16


@dataclass
class FusionConfig:
    vocab_size: int = 64
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    # A learned position embedding per grid cell, added to the visual tokens before the
    # projection's LayerNorm (DESIGN.md's model has none; docs/FORMAT.md).
    visual_position_embeddings: bool = False
    # Training only (the engine never reads them): dropout probabilities.
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


@dataclass
class HeadsConfig:
    count: int = 3


@dataclass
class DecodingConfig:
    max_length: int = 20
    caption_segment_length: int = 22
    beam_size: int = 5


@dataclass
class TokensConfig:
    cls: str = "[CLS]"
    sep: str = "[SEP]"
    mask: str = "[MASK]"
    pad: str = "[PAD]"
    unk: str = "[UNK]"


@dataclass
class TokenizerConfig:
    do_lower_case: bool = True


_SECTIONS = {
    "image": ImageConfig,
    "visual": VisualConfig,
    "concepts": ConceptsConfig,
    "modulator": ModulatorConfig,
    "fusion": FusionConfig,
    "heads": HeadsConfig,
    "decoding": DecodingConfig,
    "tokens": TokensConfig,
    "tokenizer": TokenizerConfig,
}


def missing_size_keys(data: dict[str, Any]) -> list[str]:
    """The required keys of docs/FORMAT.md that `data` lacks (or holds as null), as paths."""
    def absent(section: str, key: str | None = None) -> bool:
        value = data.get(section)
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
        return value is None

    def flag(section: str, key: str, default: bool) -> bool:
        value = data.get(section)
        return bool(value.get(key, default)) if isinstance(value, dict) else default

    concepts = flag("concepts", "enabled", True)
    required = [("format_version", None), ("image", "size"), ("visual", "layers"), ("visual", "width")]
    if flag("visual", "attention_pool", False):
        required += [("visual", "heads"), ("visual", "output_dim")]
    if concepts:
        required += [("concepts", "embed_dim"), ("concepts", "hidden_dim"), ("concepts", "top_k")]
        if flag("modulator", "enabled", True):
            required += [("modulator", "hidden_dim")]
    required += [("fusion", k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                          "intermediate_size", "max_position_embeddings", "type_vocab_size")]
    required += [("heads", "count")]
    return [s if k is None else f"{s}.{k}" for s, k in required if absent(s, k)]


def _section_from_dict(cls, data: dict[str, Any] | None):
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"config section for {cls.__name__} must be an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class LightCapConfig:
    """All hyperparameters of a LightCap model (config.json)."""

    name: str = "tiny"
    format_version: int = FORMAT_VERSION
    image: ImageConfig = field(default_factory=ImageConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    modulator: ModulatorConfig = field(default_factory=ModulatorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    # Derived quantities (never stored).
    @property
    def grid_channels(self) -> int:  # C
        return self.visual.width * 32

    @property
    def grid_side(self) -> int:  # G
        return self.image.size // 32

    @property
    def num_visual_tokens(self) -> int:  # N
        return self.grid_side ** 2

    @property
    def use_modulator(self) -> bool:
        return self.concepts.enabled and self.modulator.enabled

    def validate(self) -> "LightCapConfig":
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not supported (only {FORMAT_VERSION})")
        if self.image.size % 32 != 0 or self.image.size <= 0:
            raise ValueError(f"image.size must be a positive multiple of 32, got {self.image.size}")
        if len(self.visual.layers) != 4:
            raise ValueError(f"visual.layers must have 4 entries, got {self.visual.layers}")
        if self.visual.width % 2 != 0:
            raise ValueError(f"visual.width must be even, got {self.visual.width}")
        if self.visual.attention_pool and self.grid_channels % self.visual.heads != 0:
            raise ValueError("visual.heads must divide the grid channels (width * 32)")
        f = self.fusion
        if f.hidden_size % f.num_attention_heads != 0:
            raise ValueError("fusion.num_attention_heads must divide fusion.hidden_size")
        if f.hidden_act not in ("gelu", "relu", "gelu_new"):
            raise ValueError(f"fusion.hidden_act {f.hidden_act!r} is not supported")
        if self.heads.count < 1:
            raise ValueError("heads.count must be >= 1")
        d = self.decoding
        if d.caption_segment_length < d.max_length + 2:
            raise ValueError("decoding.caption_segment_length must be >= max_length + 2")
        if self.modulator.enabled and not self.concepts.enabled:
            raise ValueError("modulator.enabled requires concepts.enabled (set modulator.enabled false too)")
        if any(n < 1 for n in self.concepts.windows):
            raise ValueError("concepts.windows must be positive")
        return self

    # --- (de)serialisation -------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LightCapConfig":
        if "format_version" not in data:
            raise ValueError("config.json: format_version is required")
        kwargs: dict[str, Any] = {"format_version": data["format_version"], "name": data.get("name", "tiny")}
        for key, section in _SECTIONS.items():
            kwargs[key] = _section_from_dict(section, data.get(key))
        return cls(**kwargs).validate()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": self.format_version, "name": self.name}
        for key in _SECTIONS:
            out[key] = dataclasses.asdict(getattr(self, key))
        return out

    @classmethod
    def load(cls, path: str | Path) -> "LightCapConfig":
        """A model directory's config.json: the size keys are required (docs/FORMAT.md), as in
        the Swift loader; `from_dict` alone fills absent keys from `tiny`."""
        data = json.loads(Path(path).read_text())
        missing = missing_size_keys(data)
        if missing:
            raise ValueError(f"{path}: invalid configuration: {missing[0]} is missing")
        cfg = cls.from_dict(data)
        if cfg.visual.quantization != "none":
            raise ValueError(f"{path}: visual.quantization is {cfg.visual.quantization!r}: the reference runs F32 models "
                             "only (an INT8 trunk from `lightcap quantize` runs in the Swift engine)")
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **sections: Any) -> "LightCapConfig":
        """A copy with some sections or fields replaced (deep copy of the rest)."""
        data = self.to_dict()
        for key, value in sections.items():
            if key in _SECTIONS and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return LightCapConfig.from_dict(data)

    # --- named sizes ---------------------------------------------------------
    @classmethod
    def tiny(cls, vocab_size: int = 64) -> "LightCapConfig":
        """The small test / default size (docs/FORMAT.md example)."""
        cfg = cls(name="tiny")
        cfg.fusion.vocab_size = vocab_size
        return cfg.validate()

    @classmethod
    def base(cls) -> "LightCapConfig":
        """The paper's size: CLIP RN50 at 224 + TinyBERT-4 (vocab 30522)."""
        return cls(
            name="base",
            image=ImageConfig(size=224),
            visual=VisualConfig(layers=[3, 4, 6, 3], width=64, heads=32, output_dim=1024),
            concepts=ConceptsConfig(embed_dim=1024, hidden_dim=1024, top_k=20),
            modulator=ModulatorConfig(hidden_dim=39),
            fusion=FusionConfig(vocab_size=30522, hidden_size=312, num_hidden_layers=4,
                                num_attention_heads=12, intermediate_size=1200,
                                max_position_embeddings=512),
        ).validate()
