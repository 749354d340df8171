#!/usr/bin/env python3
"""Decode benchmark (not a test): base size, random weights, one thread.

    PYTHONPATH=python .venv/bin/python scripts/bench_decode.py [--out /tmp/lightcap-bench] [--repeats 5]

Builds a base-size model with random weights (the [SEP] bias pushed down so every decode runs
all 20 steps), then times the same decode of one image's features
  - PyTorch: the reference's uncached loop (LightCap.greedy / beam_search, transformers style),
  - ONNX Runtime: the reference's fusion graph (BERT + heads at the [MASK] row) exported,
    run by the same uncached loop,
  - Swift: `lightcap bench decode` (cached and uncached, and the stages of one step),
all in the same run, one thread each, and prints a table with ratios to ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))


def median_ms(fn, repeats: int) -> float:
    """Median thread CPU time in ms (every engine here runs on the calling thread; the machine
    is shared, and CPU time is steadier than wall time there)."""
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        times.append((time.thread_time() - t) * 1e3)
    return statistics.median(times)


def build_model(out: Path, seed: int):
    import torch
    from safetensors.torch import save_file

    from lightcap_train.reference.config import LightCapConfig
    from lightcap_train.reference.model import LightCap
    from lightcap_train.reference.wordpiece import WordPiece
    from lightcap_train.tools.tokenizer_cases import vocab_path

    torch.manual_seed(seed)
    vocab = vocab_path().read_text(encoding="utf-8").splitlines()
    words = [w for w in vocab[2000:] if w.isalpha() and w.isascii() and len(w) > 3][:1000]
    cfg = LightCapConfig.base()
    model = LightCap(cfg, WordPiece(vocab), words).eval()
    with torch.no_grad():
        model.concepts.embeddings.normal_()
        for h in model.heads:  # every decode runs max_length steps
            h.bias[model.sep_id] = -1000.0
    md = out / "model"
    md.mkdir(parents=True, exist_ok=True)
    cfg.save(md / "config.json")
    (md / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (md / "concepts.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    save_file(state, str(md / "model.safetensors"))
    return model


class NextLogits:
    """The reference's fusion graph for one decoding step: BERT over [text; visual] with the
    mask, the heads' ensemble at the [MASK] row."""

    def __init__(self, model):
        import torch

        class Graph(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, token_ids, type_ids, position_ids, visual, mask, row):
                hidden, _ = self.m.bert(token_ids, type_ids, position_ids, mask, visual)
                at = hidden[-1][0, row]  # [1, D]
                return self.m.head_logits(at[None])[:, :, 0].mean(dim=1)  # [1, V]

        self.graph = Graph(model).eval()


def ort_greedy(model, session, ctx, max_len: int) -> list[int]:
    """The reference's uncached greedy loop over ONNX Runtime's `session` of the step graph
    (NextLogits): the whole sequence through the fusion model at every step."""
    import numpy as np

    visual = ctx.visual_tokens.numpy()
    tokens: list[int] = []
    for _ in range(max_len):
        i, t, p, m = model.build_inputs(model.caption_segment([tokens], "mask"), ctx.concept_ids)
        logits = session.run(None, {"token_ids": i.numpy(), "type_ids": t.numpy(), "position_ids": p.numpy(),
                                    "visual": visual, "mask": m.numpy(),
                                    "row": np.array([len(tokens) + 1], dtype=np.int64)})[0][0]
        token = int(np.argmax(logits))
        if token == model.sep_id:
            break
        tokens.append(token)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lightcap-bench"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-swift", action="store_true")
    parser.add_argument("--lightcap", type=Path, default=REPO / ".build/release/lightcap")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.out, args.seed)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        ctx = model.prepare_images(image)
    save_file({"grid": ctx.grid[0].contiguous()}, str(args.out / "grid.safetensors"))
    model.prepare_images = lambda images: ctx  # time the decode only
    max_len, beam = 20, 5

    rows = {}
    with torch.no_grad():
        greedy = model.greedy(image, max_length=max_len)[0]
        rows["greedy 20, PyTorch uncached"] = median_ms(lambda: model.greedy(image, max_length=max_len), args.repeats)
        rows["beam 5, PyTorch uncached"] = median_ms(lambda: model.beam_search(image, beam=beam, max_length=max_len), 1)
        beam_ids = model.beam_search(image, beam=beam, max_length=max_len)[0].ids

    # ONNX Runtime: export the step graph, run the same greedy loop.
    graph = NextLogits(model).graph
    a = model.config.decoding.caption_segment_length
    ids, types, pos, mask = model.build_inputs(model.caption_segment([[]], "mask"), ctx.concept_ids)
    onnx_path = args.out / "fusion_step.onnx"
    with torch.no_grad():
        torch.onnx.export(graph, (ids, types, pos, ctx.visual_tokens, mask, torch.tensor([1])), str(onnx_path),
                          input_names=["token_ids", "type_ids", "position_ids", "visual", "mask", "row"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    assert ort_greedy(model, session, ctx, max_len) == greedy.ids, "ONNX Runtime and PyTorch greedy tokens differ"
    rows["greedy 20, ONNX Runtime uncached"] = median_ms(lambda: ort_greedy(model, session, ctx, max_len), args.repeats)

    if not args.skip_swift:
        if not args.lightcap.exists():
            subprocess.run(["swift", "build", "-c", "release", "--product", "lightcap"], cwd=REPO, check=True)
        run = subprocess.run([str(args.lightcap), "bench", "decode", "--data", str(args.out), "--repeats", str(args.repeats)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            raise SystemExit("lightcap bench decode failed")
        swift = json.loads(run.stdout)
        assert swift["greedy_ids"] == greedy.ids, f"Swift greedy {swift['greedy_ids']} != PyTorch {greedy.ids}"
        assert swift["beam_ids"] == beam_ids, f"Swift beam {swift['beam_ids']} != PyTorch {beam_ids}"
        int8_same = (swift["greedy_ids_int8_fusion"] == greedy.ids, swift["beam_ids_int8_fusion"] == beam_ids)
        for name, ms in sorted(swift["timings"].items(), key=lambda kv: (kv[0].startswith("  "), kv[0])):
            rows[name] = ms

    ref = rows["greedy 20, ONNX Runtime uncached"]
    print(f"\nbase fusion decode, random weights, 1 thread, {len(greedy.ids)} greedy tokens, beam {beam} (median thread CPU time)")
    print(f"{'workload':66s} {'ms':>9s} {'x ORT greedy':>13s}")
    for name, ms in rows.items():
        print(f"{name:66s} {ms:9.2f} {ms / ref:13.3f}")
    if not args.skip_swift:
        print(f"INT8 fusion weights give the F32 tokens: greedy {int8_same[0]}, beam {int8_same[1]}")


if __name__ == "__main__":
    main()
