"""Training recipe: the two-stream objective equals the reference decoder, the evaluation
parsers, CIDEr-D against pycocoevalcap, and a smoke run of every stage (single process and
torchrun DDP with 2 gloo processes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lightcap_train.data import batches as B
from lightcap_train.data import scenes as S
from lightcap_train.data import scenes_dataset as D
from lightcap_train.recipe import evaluate as E
from lightcap_train.recipe import objectives as O
from lightcap_train.recipe import train as T
from lightcap_train.reference.model import LightCap
from lightcap_train.reference.wordpiece import WordPiece

PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scenes_tokenizer() -> WordPiece:
    return WordPiece(S.vocabulary())


def tiny_model(**sections):
    torch.manual_seed(0)
    tok = scenes_tokenizer()
    return LightCap(T.student_config(len(tok), **sections), tok, S.CONCEPTS).eval()


@pytest.mark.parametrize("sections", [{}, {"concepts": {"enabled": False}, "modulator": {"enabled": False}},
                                      {"fusion": {"visual_position_embeddings": True}}])
def test_two_stream_batch_gives_the_decoders_logits(sections):
    model = tiny_model(**sections)
    images = torch.randn(2, 3, 128, 128)
    ctx = model.prepare_images(images)
    caps = ["a small red circle to the left of a large blue cross",
            "four shapes: a small purple ring, a small green cross, a large purple star and a small red triangle"]
    ids = [model.tokenizer.encode(c) for c in caps]
    cb = B.caption_batch(model, ids, ctx.concept_ids)
    with torch.no_grad():
        logits = O.fusion_logits(model, ctx.grid, ctx.concept_ids, cb)[0].mean(1)  # [B, M, V]
    for i in range(2):
        assert cb.targets[i, len(ids[i])] == model.sep_id
        assert cb.targets[i, :len(ids[i])].tolist() == ids[i]
        for p in range(len(ids[i]) + 1):
            ref = model._next_logits(ctx, [i], [ids[i][:p]])[0]
            torch.testing.assert_close(logits[i, p], ref, atol=2e-5, rtol=1e-5)


def test_batched_greedy_equals_reference_greedy():
    model = tiny_model()
    images = torch.randn(3, 3, 128, 128)
    ctx = model.prepare_images(images)
    ref = [c.ids for c in model.greedy(images, max_length=6)]
    assert O.greedy_on_grid(model, ctx.grid, ctx.concept_ids, max_length=6) == ref


def test_offset_targets_are_the_named_object_s_offset_to_the_other_and_decide_the_relation():
    tok = scenes_tokenizer()
    small = {"shape": "ring", "colour": "yellow", "size": "small", "centre": [40.0, 200.0], "radius": 25.0}
    large = {"shape": "star", "colour": "red", "size": "large", "centre": [60.0, 40.0], "radius": 60.0}
    metas = [{"width": 256, "objects": [small, large]}] * 3
    caps = ["a small yellow ring below a large red star", "a large red star above a small yellow ring",
            "a small yellow ring and a large red star"]
    model = tiny_model()
    concepts = torch.zeros(3, model.config.concepts.top_k, dtype=torch.long)
    cb = B.caption_batch(model, [tok.encode(c) for c in caps], concepts)
    rows, queries, target = D.offset_targets(tok, metas, cb.targets)
    assert rows.tolist() == [0, 1] and queries.tolist() == [4, 4]
    # ring - star = (-20, 160) render pixels = (-0.078125, 0.625) image sides = (-0.3125, 2.5) quarters
    expected = torch.tensor([[-0.3125, 2.5, 0.3125 - 2.5], [0.3125, -2.5, 0.3125 - 2.5]])
    assert torch.allclose(target, expected)
    # horizontal against vertical is the sign of |dx| - |dy|, as the scenes' own rule has it
    assert (target[0, 2] > 0) == (S.relation_of_centres(small["centre"], large["centre"]).startswith("to"))


class FakeContext:
    """What FusionBatches reads of a recipe Context, on the scenes."""

    def __init__(self, **recipe):
        self.r = T.Recipe(**recipe)
        self.d, self.tok, self.device = T.setup_dist(), scenes_tokenizer(), torch.device("cpu")
        self.data = D.ScenesData(self.r)

    def encode_captions(self, texts):
        return [self.tok.encode(t) for t in texts]


def fake_features(grid, captions, metas):
    return type("F", (), {"grid": {"train": grid}, "refs": {"train": captions}, "meta": {"train": metas}})()


def test_fusion_batches_add_two_object_scenes_captioned_with_their_relation():
    tok = scenes_tokenizer()
    one = {"objects": [{"shape": "ring"}]}
    two = {"objects": [{"shape": "ring"}, {"shape": "star"}]}
    metas = [one, two, one, two, two, one, one, one]
    # Caption f of image i: "a {colour i} {shape f}" (words of the vocabulary).
    colours, shapes = list(S.COLOURS), list(S.SHAPES)
    captions = [[f"a {colours[i]} {shapes[f]}" for f in range(5)] for i in range(len(metas))]
    model = tiny_model()
    feats = fake_features(torch.arange(8.0)[:, None, None].repeat(1, 16, 4), captions, metas)
    ids = {"train": torch.arange(8)[:, None].repeat(1, 8)}
    assert D.two_object_scenes(metas).tolist() == [1, 3, 4]
    ctx = FakeContext(relation_extra=2, relation_hard=0.0, primary_weight=0.0)
    grid, cids, cb, idx = O.FusionBatches(ctx, feats, ids)(model, step=5, batch=3)
    assert len(idx) == 5 and len(set(idx[:3].tolist())) == 3 and set(idx[3:].tolist()) <= {1, 3, 4}
    assert grid[:, 0, 0].tolist() == [float(i) for i in idx] and cids[:, 0].tolist() == idx.tolist()
    for row, i in enumerate(idx):  # primary_weight 0: the sampled rows never use family 1 ...
        words = tok.decode([t for t in cb.targets[row].tolist() if t >= 0 and t != model.sep_id])
        assert words.startswith(f"a {colours[i]} ")
        if row >= 3:  # ... the two-object extras always do (it states the relation)
            assert words == f"a {colours[i]} {shapes[1]}"
        else:
            assert words != f"a {colours[i]} {shapes[1]}"
    # Without extras the draw is the one of the recipe before relation_extra existed.
    ctx0 = FakeContext(relation_extra=0, relation_hard=0.0, primary_weight=0.0)
    _, _, cb0, idx0 = O.FusionBatches(ctx0, feats, ids)(model, step=5, batch=3)
    assert idx0.tolist() == idx[:3].tolist() and cb0.targets.shape[0] == 3


def test_relation_hard_draws_that_share_of_the_extras_from_near_diagonal_pairs():
    def scene(a, b):
        return {"objects": [{"centre": a}, {"centre": b}]}
    diagonal = scene([10.0, 10.0], [50.0, 46.0])  # ratio 0.9
    straight = scene([10.0, 10.0], [50.0, 12.0])  # ratio 0.05
    one = {"objects": [{"centre": [5.0, 5.0]}]}
    assert D.diagonality(diagonal) == pytest.approx(0.9) and D.diagonality(straight) == pytest.approx(0.05)
    metas = [one, diagonal, straight, diagonal, straight, straight, straight, one]
    feats = fake_features(torch.zeros(8, 16, 4), [["a ring"] * 5] * 8, metas)
    ids = {"train": torch.zeros(8, 8, dtype=torch.long)}
    for hard, want in [(0.5, 2), (0.75, 2), (0.25, 1)]:  # only two near-diagonal pairs exist
        batches = O.FusionBatches(FakeContext(relation_extra=4, relation_hard=hard), feats, ids)
        assert batches.hard_pairs.tolist() == [1, 3] and batches.easy_pairs.tolist() == [2, 4, 5, 6]
        for step in range(5):
            idx = batches(tiny_model(), step=step, batch=2)[3]
            extra = idx[2:].tolist()
            assert len(extra) == 4 and len(set(extra)) == 4
            assert sum(i in (1, 3) for i in extra) == want


def scenes_context(tmp_path, **recipe):
    d = T.setup_dist()
    return T.Context(T.Recipe(**recipe), str(tmp_path / "run"), d, T.Log(str(tmp_path / "run"), d))


def test_recipe_image_size_sets_every_stage_s_input_and_grid(tmp_path):
    ctx = scenes_context(tmp_path, image_size=160)
    for cfg in (T.clip_config(ctx), T.teacher_config(ctx), ctx.cfg):
        assert (cfg.image.size, cfg.grid_side, cfg.num_visual_tokens) == (160, 5, 25)
    model = LightCap(T.teacher_config(ctx), scenes_tokenizer(), S.CONCEPTS).eval()
    with torch.no_grad():
        images = model.prepare_images(torch.randn(1, 3, 160, 160))
    assert images.grid.shape[1] == 25
    assert T.clip_config(scenes_context(tmp_path)).image.size == 128
    # the scenes CLIP keeps the tiny size's two fusion layers, the student the recipe's three
    assert T.clip_config(scenes_context(tmp_path)).fusion.num_hidden_layers == 2
    assert scenes_context(tmp_path).cfg.fusion.num_hidden_layers == 3


def test_ensemble_heads_learn_from_the_last_snapshots():
    assert [O.ensemble_teacher(h, 3, 3) for h in range(3)] == [0, 1, 2]
    assert [O.ensemble_teacher(h, 3, 4) for h in range(3)] == [1, 2, 3]
    assert [O.ensemble_teacher(h, 3, 1) for h in range(3)] == [0, 0, 0]
    assert [O.ensemble_teacher(h, 3, 2) for h in range(3)] == [1, 0, 1]


def test_mentions_and_relations_on_references():
    for i in range(300):
        sc = S.sample_scene(S.scene_rng("val", 4, i))
        objs = S.scene_metadata(sc, i, "")["objects"]
        caps = S.captions(sc)
        primary = caps[D.primary_family(len(objs))]
        assert E.attribute_counts(primary, objs) == (len(objs),) * 3, primary
        if len(objs) == 2:
            assert E.relation_correct(caps[1], objs) is True
            assert E.relation_correct(caps[4], objs) is True
            assert E.relation_correct(caps[0], objs) is None
    objs = [{"size": "small", "colour": "red", "shape": "circle", "centre": [10, 50]},
            {"size": "large", "colour": "blue", "shape": "cross", "centre": [200, 60]}]
    assert E.relation_correct("a small red circle to the right of a large blue cross", objs) is False
    assert E.relation_correct("a small red circle above a large blue cross", objs) is False
    assert E.attribute_counts("a small green circle and a large blue cross", objs) == (1, 2, 2)
    assert E.attribute_counts("two large blue crosses", objs) == (1, 2, 2)
    assert E.attribute_counts("three shapes on a gray background", objs) == (0, 0, 2)
    s = E.scene_scores({0: "a small red circle to the left of a large blue cross"}, {0: {"objects": objs}})
    assert s["attribute_f1"] == 1.0 and s["relation_accuracy"] == 1.0


def test_hard_negatives_change_the_caption():
    rng = np.random.default_rng(0)
    for i in range(200):
        for cap in S.captions(S.sample_scene(S.scene_rng("train", 5, i))):
            neg = D.hard_negative(cap, rng)
            assert neg != cap and len(neg.split()) == len(cap.split())
            assert set(neg.replace(":", " :").replace(",", " ,").split()) <= set(S.vocabulary())


def test_cider_d_matches_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider

    from lightcap_train.recipe.cider import CiderD

    refs, cands = {}, {}
    for i in range(40):
        caps = S.captions(S.sample_scene(S.scene_rng("val", 6, i)))
        refs[i] = caps
        cands[i] = caps[(i % 5)] if i % 3 else S.captions(S.sample_scene(S.scene_rng("val", 7, i)))[0]
    spaced = lambda t: t.replace(",", " , ").replace(":", " : ").replace("  ", " ").strip()
    ours = CiderD([refs[i] for i in refs])
    mine = ours.scores([cands[i] for i in refs], [refs[i] for i in refs])
    _, peer = Cider().compute_score({i: [spaced(c) for c in refs[i]] for i in refs}, {i: [spaced(cands[i])] for i in refs})
    np.testing.assert_allclose(mine, peer, rtol=1e-6, atol=1e-9)


def _smoke(tmp_path, launcher, run, stages="all"):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")}
    cmd = launcher + ["-m", "lightcap_train.recipe.train", stages, "--run-dir", str(tmp_path / run),
                      "--recipe", "smoke", "--set", f"cache={tmp_path / 'cache'}",
                      f"test_dir={tmp_path / 'test'}"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_smoke_recipe_runs_every_stage_and_resumes(tmp_path):
    log = _smoke(tmp_path, [PYTHON], "run")
    for stage in T.STAGES:
        assert f"{stage}: finished" in log, stage
        assert (tmp_path / "run" / stage / "final.pt").exists()
    model_dir = tmp_path / "run" / "model"
    assert sorted(os.listdir(model_dir)) == ["concepts.txt", "config.json", "model.safetensors", "vocab.txt"]
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["visual"]["batchnorm_folded"] and not cfg["visual"]["attention_pool"]
    scores = json.loads((tmp_path / "run" / "eval.json").read_text())["scores"]
    assert {"CIDEr-D", "BLEU-4", "METEOR", "ROUGE-L", "attribute_f1", "relation_accuracy"} <= set(scores)
    # The figure of docs/RESULTS.md: one curve per training stage, from the log.
    from lightcap_train.recipe import results
    curves = results.training_curves(str(tmp_path / "run" / "train.log"))
    assert {"clip", "concepts", "teacher", "student/layers", "student/output", "ensemble"} <= set(curves)
    steps, losses = curves["clip"]["loss"]
    assert steps == [1, 2, 3, 4, 5] and len(losses) == 5  # region pretraining, then the full objective
    assert curves["clip"]["i2t_acc"][0] == [3, 4, 5]
    results.plot(str(tmp_path / "run"), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Interrupted stage: drop the final file of the last training stage; it resumes from its checkpoint.
    os.remove(tmp_path / "run" / "ensemble" / "final.pt")
    log = _smoke(tmp_path, [PYTHON], "run", "teacher,ensemble")
    assert "ensemble: resuming at step 3/3" in log and "teacher: done already" in log
    # The ablation table: three students trained from scratch, then the teacher and the full one,
    # in a run directory that was moved after training (the teacher snapshots are found in it).
    os.rename(tmp_path / "run", tmp_path / "moved")
    _smoke(tmp_path, [PYTHON], "moved", "ablation")
    ablation = json.loads((tmp_path / "moved" / "ablation.json").read_text())
    assert ablation["steps"] == 9 and ablation["relation_extra"] == 4
    assert [r["row"] for r in ablation["rows"]] == ["no distillation", "no concept extractor", "no modulator",
                                                    "teacher", "full student (distilled)"]
    assert ablation["rows"][1]["parameters"] < ablation["rows"][0]["parameters"] == ablation["rows"][4]["parameters"]
    assert "| no modulator |" in results.ablation_table(str(tmp_path / "moved" / "ablation.json"))


def test_smoke_recipe_under_torchrun_ddp(tmp_path):
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    log = _smoke(tmp_path, torchrun, "ddp", "data,clip,features,concepts,teacher,student,ensemble,scst,export")
    assert "2 process(es)" in log and "ensemble: finished" in log and "export: finished" in log
    assert (tmp_path / "ddp" / "model" / "model.safetensors").exists()


def test_cell_targets_say_what_is_where():
    def obj(x, y, r, colour="red", shape="circle", size="small"):
        return {"centre": [x, y], "radius": r, "colour": colour, "shape": shape, "size": size}

    a = obj(40, 30, 20)  # top left: cell (0, 0) of a 4x4 grid over 256 pixels
    b = obj(60, 200, 50, "blue", "star", "large")  # cell (3, 0)
    c = obj(70, 210, 20, "green")  # smaller, in b's cell: b (the larger) wins it
    scenes = [{"objects": [a, b]}, {"objects": [a, b, c]}]
    t = D.cell_targets(scenes, side=4)
    assert t["present"][0].nonzero().flatten().tolist() == [0, 12]
    assert t["shape"][0, 12] == list(S.SHAPES).index("star") and t["shape"][0, 5] == -100
    assert t["colour"][1, 12] == list(S.COLOURS).index("blue")
    assert torch.allclose(t["centre"][0, 0], torch.tensor([40 / 256, 30 / 256]))
    out = torch.zeros(2, 16, D.CELL_OUTPUTS, requires_grad=True)
    D.cell_loss(out, t).backward()
    assert out.grad[0, 0].abs().sum() > 0 and out.grad[0, 5, 1:].abs().sum() == 0  # no object: only "present"


def test_caption_concept_scores_count_the_concepts_a_caption_names():
    concepts = ["dog", "fire hydrant", "bicycle"]
    refs = [["two dogs by a fire hydrant", "dogs near a fire hydrant", "a dog"],
            ["a bicycle on a path", "a bike on a path"]]
    # image 0 shows dog and fire hydrant (>= 2 references each); image 1 only bicycle (1 reference
    # of 2 names it: below min_refs 2, so it is no label)
    s = T.caption_concept_scores(["a dog and a bicycle", "a fire hydrant"], refs, concepts, 2)
    assert s["concept_precision"] == pytest.approx(1 / 3)  # dog right; bicycle, fire hydrant wrong
    assert s["concept_recall"] == pytest.approx(1 / 2)  # dog of {dog, fire hydrant}
    assert s["concept_F1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert T.caption_concept_scores(["two dogs by a fire hydrant", "a cat"], refs, concepts, 2)["concept_F1"] == 1.0
    assert T.caption_concept_scores(["a cat", "a cat"], refs, concepts, 2)["concept_F1"] == 0.0


def test_concept_token_weight_weighs_the_concept_words_pieces():
    tok = scenes_tokenizer()

    class Ctx:
        concepts = ["red", "circle"]
        device = "cpu"

        class r:
            concept_token_weight = 3.0
    Ctx.tok = tok
    w = O.concept_token_weights(Ctx, len(tok))
    heavy = {i for c in Ctx.concepts for i in tok.encode(c)}
    assert {int(i) for i in torch.nonzero(w == 3.0)} == heavy and int((w == 1.0).sum()) == len(tok) - len(heavy)
    Ctx.r.concept_token_weight = 1.0
    assert O.concept_token_weights(Ctx, len(tok)) is None
    # the weighted mean: targets [red, a] with losses l1, l2 -> (3 l1 + l2) / 4
    logits = torch.randn(1, 2, len(tok))
    targets = torch.tensor([[tok.encode("red")[0], tok.encode("a")[0]]])
    losses = torch.nn.functional.cross_entropy(logits[0], targets[0], reduction="none")
    got = O.token_ce(logits, targets, w)
    assert float(got) == pytest.approx(float((3 * losses[0] + losses[1]) / 4), rel=1e-6)


def test_validation_curve_reads_minutes_and_scores_from_the_log(tmp_path):
    from lightcap_train.recipe.results import validation_curve

    log = tmp_path / "train.log"
    log.write_text("[23:50:00 +     0s] train teacher: run r, val_eval_count=300\n"
                   "[23:55:30 +   330s] teacher: step 20/40 loss 1.0 token_acc 0.5 lr 1e-3 0.5 s/step\n"
                   "[23:58:00 +   480s] teacher: snapshot 0 saved, val CIDEr-D 0.5 concept_F1 0.25 images 3 example a dog\n"
                   "[00:02:00 +   720s] student/output: val CIDEr-D 0.7 images 3\n"
                   "[00:05:00 +   900s] ensemble: val CIDEr-D 0.9 concept_F1 0.5 images 3 example a cat\n")
    assert validation_curve(str(log), "concept_F1") == [(8.0, "teacher", 0.25), (15.0, "ensemble", 0.5)]
    assert [p[2] for p in validation_curve(str(log), "CIDEr-D")] == [0.5, 0.7, 0.9]
