"""Export: BatchNorm folding, strict loading, NaN refusal, config round trip."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lightcap_train.reference.config import LightCapConfig
from lightcap_train.reference.export import export, load, relative_error
from lightcap_train.tools.fixtures import make_model, random_images


@pytest.fixture(scope="module")
def tiny():
    return make_model("tiny", seed=3)


def test_folded_and_unfolded_agree(tiny, tmp_path):
    folded = load(export(tiny, tiny.tokenizer, None, tmp_path / "folded"))
    unfolded = load(export(tiny, tiny.tokenizer, None, tmp_path / "unfolded", fold=False))
    assert folded.config.visual.batchnorm_folded and not unfolded.config.visual.batchnorm_folded
    x = random_images(2, tiny.config.image.size, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = tiny.encode_image(x)
        errors = [relative_error(m.encode_image(x), reference) for m in (folded, unfolded)]
        pooled = relative_error(folded.visual(x), tiny.visual(x))
        logits = relative_error(folded(x, [[5, 6], [7]]).logits, tiny(x, [[5, 6], [7]]).logits)
    print(f"fold: grid rel. err {errors[0]:.2e}, pooled {pooled:.2e}, logits {logits:.2e}")
    assert errors[0] <= 1e-5 and pooled <= 1e-5 and logits <= 1e-5
    assert errors[1] == 0.0  # unfolded export is a lossless round trip
    assert reference.std() > 0.1


def test_model_directory_contents(tiny, tmp_path):
    out = export(tiny, tiny.tokenizer, None, tmp_path / "m")
    keys = set(load_file(str(out / "model.safetensors")))
    assert not any("num_batches_tracked" in k or ".bn" in k or "downsample.1." in k for k in keys)
    assert "visual.layer1.0.downsample.0.bias" in keys and "visual.conv1.bias" in keys
    assert not any(k.startswith("heads.") and "decoder" in k for k in keys)  # decoder tied, not stored
    assert "concepts.embeddings" in keys and "bert.embeddings.word_embeddings.weight" in keys
    assert all(v.dtype == torch.float32 for v in load_file(str(out / "model.safetensors")).values())
    config = json.loads((out / "config.json").read_text())
    assert config["format_version"] == 1 and config["visual"]["batchnorm_folded"] is True
    assert (out / "vocab.txt").read_text().splitlines() == tiny.tokenizer.vocab
    assert (out / "concepts.txt").read_text().splitlines() == tiny.concept_words


def test_export_refuses_non_finite(tiny, tmp_path):
    broken = make_model("tiny", seed=3)
    with torch.no_grad():
        broken.bert.encoder.layer[1].output.dense.weight[0, 0] = float("nan")
        broken.visual.layer2[0].bn2.running_var[3] = float("inf")
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.1\.output\.dense\.weight.*visual\.layer2\.0\.bn2\.running_var|visual\.layer2\.0\.bn2\.running_var.*bert\.encoder\.layer\.1\.output\.dense\.weight"):
        export(broken, broken.tokenizer, None, tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_load_is_strict(tiny, tmp_path):
    out = export(tiny, tiny.tokenizer, None, tmp_path / "m")
    weights = load_file(str(out / "model.safetensors"))
    extra = dict(weights, **{"heads.0.decoder.weight": torch.zeros(3)})
    save_file(extra, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unused tensors: heads\.0\.decoder\.weight"):
        load(out)
    missing = {k: v for k, v in weights.items() if k != "modulator.fc1.bias"}
    save_file(missing, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensors: modulator\.fc1\.bias"):
        load(out)
    wrong = dict(weights, **{"image_projection.dense.bias": torch.zeros(7)})
    save_file(wrong, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"image_projection\.dense\.bias: file \(7,\)"):
        load(out)


def test_config_round_trip_and_errors(tmp_path):
    base = LightCapConfig.base()
    assert LightCapConfig.from_dict(base.to_dict()) == base
    assert base.grid_channels == 2048 and base.grid_side == 7 and base.num_visual_tokens == 49
    tiny = LightCapConfig.from_dict({"format_version": 1, "unknown": 3, "fusion": {"hidden_size": 128, "x": 1}})
    assert tiny == LightCapConfig.tiny()
    with pytest.raises(ValueError, match="format_version is required"):
        LightCapConfig.from_dict({})
    with pytest.raises(ValueError, match="format_version 2"):
        LightCapConfig.from_dict({"format_version": 2})
    with pytest.raises(ValueError, match="requires concepts.enabled"):
        LightCapConfig.from_dict({"format_version": 1, "concepts": {"enabled": False}})
    ablation = LightCapConfig.from_dict({"format_version": 1, "concepts": {"enabled": False},
                                         "modulator": {"enabled": False}})
    ablation.save(tmp_path / "c.json")
    assert LightCapConfig.load(tmp_path / "c.json") == ablation


@pytest.mark.parametrize("path", ["fusion.hidden_size", "image.size", "heads.count", "concepts.top_k",
                                  "modulator.hidden_dim", "visual.width"])
def test_a_config_file_without_a_size_key_names_it(tmp_path, path):
    """docs/FORMAT.md's required keys, as the Swift loader enforces them."""
    data = LightCapConfig.tiny().to_dict()
    section, key = path.split(".")
    del data[section][key]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"invalid configuration: {path} is missing"):
        LightCapConfig.load(tmp_path / "config.json")
    data = LightCapConfig.tiny().to_dict()
    data["concepts"]["enabled"] = data["modulator"]["enabled"] = False
    del data["concepts"]["top_k"], data["modulator"]["hidden_dim"]
    (tmp_path / "ablation.json").write_text(json.dumps(data))
    assert LightCapConfig.load(tmp_path / "ablation.json").concepts.enabled is False


def test_the_reference_refuses_an_int8_trunk(tmp_path):
    """`lightcap quantize`'s INT8 trunks run in the Swift engine only."""
    data = LightCapConfig.tiny().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert LightCapConfig.load(tmp_path / "config.json").visual.quantization == "none"
    data["visual"]["quantization"] = "int8"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="visual.quantization is 'int8'"):
        LightCapConfig.load(tmp_path / "config.json")
