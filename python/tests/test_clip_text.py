"""CLIP BPE tokenizer and text transformer equal open_clip's."""

import pytest
import torch

from lightcap_train.reference.clip_text import CLIPTextTransformer, ClipTokenizer, concept_embeddings
from lightcap_train.reference.export import load_state_strict, relative_error

SAMPLE = [
    "a photo of a dog", "A Photo Of A FIRE HYDRANT.", "a photo of a teddy bear",
    "Hello, World! It's 2024 &amp; naïve café", "東京タワー 🐶🐱 ❤️", "", "   spaces\t\tand\nlines  ",
    "don't we'll they've I'm you'd", "supercalifragilisticexpialidocious", "x" * 400,
    "numbers 12345 and 3.14159", "&lt;html&gt; tags &amp;amp;", "Привет мир", "e-mail@ex.com #tag",
]


def test_tokenizer_matches_open_clip(open_clip):
    ours, peer = ClipTokenizer(), open_clip.get_tokenizer("RN50")
    assert torch.equal(ours(SAMPLE), peer(SAMPLE))
    for text in SAMPLE[:4]:
        assert ours.decode(ours.encode(text)).strip() == peer.decode(peer.encode(text)).strip()


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_text_transformer_matches_open_clip(open_clip, quick_gelu):
    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None, force_quick_gelu=quick_gelu).eval()
    text_state = {k: v for k, v in clip.state_dict().items()
                  if k.startswith(("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection"))}
    config = CLIPTextTransformer.config_from_state_dict(text_state, "quick_gelu" if quick_gelu else "gelu")
    assert (config.width, config.layers, config.heads, config.embed_dim) == (512, 12, 8, 1024)
    ours = CLIPTextTransformer(config).eval()
    load_state_strict(ours, text_state)
    prompts = ["a photo of a {}".format(c) for c in ["dog", "traffic light", "teddy bear", "sunset over the sea"]]
    ids = ClipTokenizer()(prompts)
    with torch.no_grad():
        peer = clip.encode_text(ids)
    mine = concept_embeddings(ours, ClipTokenizer(), ["dog", "traffic light", "teddy bear", "sunset over the sea"])
    err = relative_error(mine, peer)
    print(f"CLIP text transformer vs open_clip (quick_gelu={quick_gelu}): rel. max diff {err:.2e}")
    assert err <= 1e-5
