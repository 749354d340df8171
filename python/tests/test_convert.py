"""convert.py: open_clip / OpenAI CLIP + Hugging Face BERT -> LightCap, by renaming only."""

import pytest
import torch
import transformers

from lightcap_train.reference.clip_text import ClipTokenizer
from lightcap_train.reference.convert import build, main
from lightcap_train.reference.export import load, relative_error

from helpers import randomize_batchnorm

CONCEPTS = ["dog", "traffic light", "teddy bear", "beach", "sunset", "fire hydrant", "pizza"]


def peer_grid(visual, x):
    return visual.forward_intermediates(x, intermediates_only=True)["image_intermediates"][-1]


def test_convert_open_clip_rn50_and_minilm(open_clip, minilm_dir, tmp_path):
    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None).eval()
    randomize_batchnorm(clip.visual, torch.Generator().manual_seed(1))
    torch.save({"state_dict": {"module." + k: v for k, v in clip.state_dict().items()}}, tmp_path / "rn50.pt")

    model = build(tmp_path / "rn50.pt", minilm_dir, CONCEPTS)
    cfg = model.config
    assert (cfg.image.size, cfg.visual.layers, cfg.visual.width) == (224, [3, 4, 6, 3], 64)
    assert (cfg.fusion.hidden_size, cfg.fusion.num_hidden_layers, cfg.concepts.embed_dim) == (384, 6, 1024)
    assert model.visual.attnpool is None  # captioning does not need the pool

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        grid_err = relative_error(model.visual.forward_grid(x), peer_grid(clip.visual, x))
        text = clip.encode_text(ClipTokenizer()([f"a photo of a {c}" for c in CONCEPTS]))
        concept_err = relative_error(model.concepts.embeddings, text)
        peer = transformers.BertModel.from_pretrained(str(minilm_dir), add_pooling_layer=False).eval()
        ids = torch.tensor([model.tokenizer.encode("a photo of a dog on the beach")])
        positions = torch.arange(ids.shape[1])[None]
        ours = model.bert(ids, torch.zeros_like(ids), positions)[0]
        theirs = peer(input_ids=ids, output_hidden_states=True).hidden_states
        bert_err = max(relative_error(a, b) for a, b in zip(ours, theirs))
    print(f"convert: grid {grid_err:.2e}, concept embeddings {concept_err:.2e}, BERT {bert_err:.2e}")
    assert grid_err <= 1e-5 and concept_err <= 1e-5 and bert_err <= 1e-5


def small_clip(open_clip):
    torch.manual_seed(0)
    return open_clip.CLIP(embed_dim=64, quick_gelu=True,
                          vision_cfg={"layers": [1, 1, 1, 1], "width": 16, "image_size": 64},
                          text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}).eval()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_convert_torchscript_archive_cli(open_clip, minilm_dir, tmp_path):
    """An OpenAI-style TorchScript archive (quick GELU), through the command line."""
    clip = small_clip(open_clip)
    randomize_batchnorm(clip.visual, torch.Generator().manual_seed(1))
    images, texts = torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)
    torch.jit.trace(clip, (images, texts), strict=False).save(str(tmp_path / "clip.pt"))
    (tmp_path / "concepts.txt").write_text("\n".join(CONCEPTS) + "\n\n")
    main(["--clip", str(tmp_path / "clip.pt"), "--bert", str(minilm_dir),
          "--concepts", str(tmp_path / "concepts.txt"), "--out", str(tmp_path / "model")])
    model = load(tmp_path / "model")
    assert model.concept_words == CONCEPTS and model.config.visual.batchnorm_folded
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_error(model.visual.forward_grid(x), peer_grid(clip.visual, x)) <= 1e-5
        text = clip.encode_text(ClipTokenizer()([f"a photo of a {c}" for c in CONCEPTS]))
    assert relative_error(model.concepts.embeddings, text) <= 1e-5
