#!/usr/bin/env python3
"""End-to-end caption benchmark at the paper's sizes (not a test): a 224 px JPEG in, a 20-token
greedy caption out, stage by stage, one thread, every engine in the same run.

    PYTHONPATH=python .venv/bin/python scripts/bench_caption.py [--runs 5] [--out /tmp/lightcap-bench-caption]

The model: base size (CLIP RN50 trunk at 224 px, TinyBERT-4 fusion, 1,000 concepts), random
weights with the [SEP] bias pushed down so that every caption runs all 20 steps (as
bench_decode.py). The engines:
  - Swift: `lightcap bench caption` on the model directory, with the exact and the
    lightcap-winograd backbone, and the latter with INT8 fusion weights (`--fusion-weights int8`);
    then with the INT8 trunk of `lightcap quantize` (calibrated on the benchmark image and 7
    other random JPEGs; F32 where it keeps F32 by default: the stem's first convolution, layer4's
    conv3s and downsample), alone and with INT8 fusion weights;
  - PyTorch eager: the reference (Pillow decode by load_image, clip_preprocess, the trunk,
    the concepts with the modulator and projection, the uncached greedy loop);
  - ONNX Runtime FP32: the same decode and preprocessing, the trunk's graph, the concepts in
    PyTorch (a few ms), the fusion step's graph in the same uncached loop;
  - ONNX Runtime INT8: those graphs through ONNX Runtime's own quantizers: the trunk static
    (QDQ, per-channel s8 weights, u8 activations calibrated on the benchmark image and 7
    random ones), the fusion step dynamic (per-channel s8 weights; a transformer's
    activations are quantized per call).
Each stage's limit on this host: the trunk's multiply-adds at the FP32 FMA peak that
`lightcap bench visual` measures; decoding's weight bytes (the fusion layers and the heads, FP32,
read once a step) at the memory bandwidth of a 512 MB copy. The fraction is limit / time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = 20


def memory_bandwidth_gbs() -> float:
    """Bytes moved per second by numpy copying 512 MB (read + write), best of 5."""
    import numpy as np

    a = np.ones(64 << 20, dtype=np.float64)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def decoding_weight_bytes(model) -> int:
    """FP32 bytes a greedy step reads: the fusion layers, the heads' transforms and biases, and
    the vocabulary matrix (tied to the word embeddings) once: the heads' mean is linear, so one
    product serves them all. The embeddings' other reads (one row per token) are left out."""
    total = sum(p.numel() for p in model.bert.encoder.parameters())
    total += sum(p.numel() for h in model.heads for p in h.parameters())
    total += model.bert.embeddings.word_embeddings.weight.numel()
    return 4 * total


def write_jpeg(path: Path, seed: int) -> None:
    """A 224x224 JPEG (quality 90) of smooth random colour: what a camera-sized image becomes
    after a resize, with structure for the decoder to work on."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
    Image.fromarray(small).resize((224, 224), Image.BICUBIC).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lightcap-bench-caption"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lightcap", type=Path, default=REPO / ".build/release/lightcap")
    args = parser.parse_args()

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bench_decode import NextLogits, build_model, median_ms, ort_greedy
    from bench_visual import Trunk, conv_flops, ort_session, quantize_int8
    from lightcap_train.recipe.evaluate import load_pixels
    from lightcap_train.tools.fixtures import random_images

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.out, args.seed)
    cfg = model.config
    image_path = args.out / "image.jpg"
    write_jpeg(image_path, args.seed)
    pixels = load_pixels([str(image_path)], cfg)  # [1, 3, S, S]

    # --- PyTorch eager, stage by stage --------------------------------------------------------
    stages: dict[str, dict[str, float]] = {}
    torch_rows = stages.setdefault("PyTorch eager", {})
    with torch.no_grad():
        torch_rows["decode + preprocess"] = median_ms(lambda: load_pixels([str(image_path)], cfg), args.runs)
        grid = model.encode_image(pixels)
        torch_rows["backbone"] = median_ms(lambda: model.encode_image(pixels), args.runs)

        def image_features():
            ids, _ = model.extract_concepts(grid)
            return ids, model.image_projection(model.modulate(grid, ids))
        torch_rows["concepts"] = median_ms(image_features, args.runs)
        ctx = model.prepare_images(pixels)
        model.prepare_images = lambda images: ctx  # the greedy loop alone
        greedy = model.greedy(pixels, max_length=STEPS)[0].ids
        torch_rows["decoding"] = median_ms(lambda: model.greedy(pixels, max_length=STEPS), args.runs)
    assert len(greedy) == STEPS, f"the caption has {len(greedy)} tokens, not {STEPS}"

    # --- ONNX Runtime FP32 and INT8 -----------------------------------------------------------
    trunk_onnx, trunk_int8 = args.out / "trunk.onnx", args.out / "trunk.int8.onnx"
    step_onnx, step_int8 = args.out / "fusion_step.onnx", args.out / "fusion_step.int8.onnx"
    ids, types, pos, mask = model.build_inputs(model.caption_segment([[]], "mask"), ctx.concept_ids)
    with torch.no_grad():
        torch.onnx.export(Trunk(model.visual).eval(), (pixels,), str(trunk_onnx), input_names=["pixels"],
                          output_names=["grid"], opset_version=17, dynamo=False)
        torch.onnx.export(NextLogits(model).graph, (ids, types, pos, ctx.visual_tokens, mask, torch.tensor([1])),
                          str(step_onnx), input_names=["token_ids", "type_ids", "position_ids", "visual", "mask", "row"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    calibration = torch.cat([pixels, random_images(7, cfg.image.size, torch.Generator().manual_seed(args.seed + 2))])
    quantize_int8(trunk_onnx, trunk_int8, calibration)
    quantize_dynamic(str(step_onnx), str(step_int8), weight_type=QuantType.QInt8, per_channel=True)

    tokens_of: dict[str, list[int]] = {}
    for name, trunk_path, step_path in [("ONNX Runtime FP32", trunk_onnx, step_onnx),
                                        ("ONNX Runtime INT8", trunk_int8, step_int8)]:
        rows = stages.setdefault(name, {})
        trunk = ort_session(trunk_path, 1)
        step = ort_session(step_path, 1)
        feed = {"pixels": pixels.numpy()}
        rows["decode + preprocess"] = torch_rows["decode + preprocess"]
        rows["backbone"] = median_ms(lambda: trunk.run(None, feed), args.runs)
        rows["concepts"] = torch_rows["concepts"]
        tokens_of[name] = ort_greedy(model, step, ctx, STEPS)
        rows["decoding"] = median_ms(lambda: ort_greedy(model, step, ctx, STEPS), args.runs)
    assert tokens_of["ONNX Runtime FP32"] == greedy, "ONNX Runtime FP32 and PyTorch greedy tokens differ"

    # --- Swift --------------------------------------------------------------------------------
    if not args.lightcap.exists():
        subprocess.run(["swift", "build", "-c", "release", "--product", "lightcap"], cwd=REPO, check=True)
    swift_captions = []
    swift_int8_captions = []
    # The INT8 trunk: `lightcap quantize`, calibrated on the benchmark image and 7 other random JPEGs.
    calibration_dir = args.out / "calibration"
    calibration_dir.mkdir(exist_ok=True)
    for i in range(8):
        write_jpeg(calibration_dir / f"{i}.jpg", args.seed + i)
    int8_model = args.out / "model-int8-trunk"
    if not int8_model.exists():
        subprocess.run([str(args.lightcap), "quantize", str(args.out / "model"), str(int8_model),
                        "--calibration", str(calibration_dir)], check=True, capture_output=True)
    for policy, weights, model_dir in [("exact", "f32", "model"), ("lightcap-winograd", "f32", "model"),
                                       ("lightcap-winograd", "int8", "model"),
                                       ("lightcap-winograd", "f32", "model-int8-trunk"),
                                       ("lightcap-winograd", "int8", "model-int8-trunk")]:
        out = subprocess.run([str(args.lightcap), "bench", "caption", "--model", str(args.out / model_dir),
                              "--image", str(image_path), "--runs", str(args.runs), "--json", "--threads", "1",
                              "--convolutions", policy, "--fusion-weights", weights, "--max-length", str(STEPS),
                              "--beam", "1"],
                             check=True, capture_output=True, text=True).stdout
        report = json.loads(out)
        s = {k: v["median_ms"] for k, v in report["stages"].items()}
        name = ("Swift INT8 trunk" if model_dir != "model" else f"Swift {policy}") + (" + INT8 fusion" if weights == "int8" else "")
        stages[name] = {"decode + preprocess": s["decode"] + s["preprocess"], "backbone": s["backbone"],
                        "concepts": s["concepts"], "decoding": s["fusion"]}
        (swift_int8_captions if weights == "int8" or model_dir != "model" else swift_captions).append(report["caption"])
    peak = json.loads(subprocess.run([str(args.lightcap), "bench", "visual", "--json", "--threads", "1",
                                      "--policies", "exact", "--iterations", "1", "--warmup", "0"],
                                     check=True, capture_output=True, text=True).stdout)["rows"][0]["peakGflops"]

    # --- the table ----------------------------------------------------------------------------
    bandwidth = memory_bandwidth_gbs()
    limits = {"backbone": conv_flops(cfg) / (peak * 1e9) * 1e3,
              "decoding": decoding_weight_bytes(model) * STEPS / (bandwidth * 1e9) * 1e3}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    isa = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
    print(f"\nA {cfg.image.size} px JPEG to a {STEPS}-token greedy caption, base size, random weights, 1 thread; "
          f"{cpu} ({isa})")
    print(f"limits: FP32 FMA peak {peak:.1f} GFLOPS -> backbone {limits['backbone']:.1f} ms "
          f"({conv_flops(cfg) / 1e9:.2f} GFLOP); memory bandwidth {bandwidth:.1f} GB/s -> decoding "
          f"{limits['decoding']:.1f} ms ({decoding_weight_bytes(model) / 1e6:.1f} MB of FP32 weights x {STEPS} steps)")
    print("median thread CPU ms per stage; (x) = ratio to ONNX Runtime FP32; [%] = the stage's limit / its time")
    names = ["decode + preprocess", "backbone", "concepts", "decoding"]
    print(f"{'engine':<38}" + "".join(f"{n:>26}" for n in names) + f"{'total':>18}")
    ref = stages["ONNX Runtime FP32"]
    for engine, rows in stages.items():
        line = f"{engine:<38}"
        for n in names:
            cell = f"{rows[n]:.2f} ({rows[n] / ref[n]:.2f}x)"
            if n in limits:
                cell += f" [{100 * limits[n] / rows[n]:.0f}%]"
            line += f"{cell:>26}"
        total, ref_total = sum(rows.values()), sum(ref.values())
        print(line + f"{f'{total:.1f} ({total / ref_total:.2f}x)':>18}")
    print(f"ONNX Runtime INT8's tokens equal FP32's: {tokens_of['ONNX Runtime INT8'] == greedy} "
          f"({sum(a == b for a, b in zip(tokens_of['ONNX Runtime INT8'], greedy))} of {STEPS} in place)")
    expected = model.tokenizer.decode_caption(greedy)
    print(f"Swift's captions equal PyTorch's: {all(c == expected for c in swift_captions)} ({expected!r}); "
          f"with INT8 fusion weights or trunk: {sum(c == expected for c in swift_int8_captions)} of {len(swift_int8_captions)}")


if __name__ == "__main__":
    main()
