#!/usr/bin/env python3
"""Visual encoder benchmark: the CLIP RN50 trunk (base, 224, stem to layer4, BatchNorm folded)
on the same random weights in PyTorch (eager), ONNX Runtime (the same graph exported to ONNX),
ONNX Runtime INT8 (that graph quantized by ONNX Runtime's own static quantizer: QDQ, per-channel
s8 weights, u8 activations calibrated on --calibration random images) and the Swift engine
(`lightcap bench visual`, direct and Winograd), in one run; prints the ratio table against ONNX
Runtime, GFLOPS and the fraction of the FMA-measured FP32 peak (for the INT8 row too: its
GFLOPS count the same multiply-adds), and each engine's error against PyTorch.

    scripts/bench_visual.py [--threads 1 2] [--iterations 20] [--warmup 3] [--rounds 1]
    scripts/bench_visual.py --profile [--threads 1] [--policies exact]

--profile: where the time goes, layer by layer, on both sides: the Swift engine's own op
timings (`lightcap bench visual --profile`) beside ONNX Runtime's per-node profile of the same
graph, matched by layer name, on the first --threads count.

A benchmark, not a test: run it on a quiet machine. Builds lightcap in release mode if needed
(swift build -c release --product lightcap).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from lightcap_train.reference.config import LightCapConfig  # noqa: E402
from lightcap_train.reference.export import fold_batchnorm  # noqa: E402
from lightcap_train.tools.fixtures import make_model, random_images  # noqa: E402
from lightcap_train.reference.model import ModifiedResNet  # noqa: E402


class Trunk(torch.nn.Module):
    """ModifiedResNet stem..layer4: [1, 3, S, S] -> [1, C, G, G] (what the engine computes)."""

    def __init__(self, visual: ModifiedResNet):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.forward_grid(x)


def conv_flops(config: LightCapConfig) -> int:
    """2 * multiply-adds of every convolution of the trunk (as the Swift benchmark counts)."""
    w, s = config.visual.width, config.image.size
    total = 0

    def conv(i: int, o: int, k: int, side: int) -> None:
        nonlocal total
        total += 2 * o * i * k * k * side * side

    side = s // 2
    conv(3, w // 2, 3, side)
    conv(w // 2, w // 2, 3, side)
    conv(w // 2, w, 3, side)
    side //= 2
    inplanes = w
    for layer, blocks in enumerate(config.visual.layers):
        planes = w << layer
        for b in range(blocks):
            stride = 2 if (layer > 0 and b == 0) else 1
            conv(inplanes, planes, 1, side)
            conv(planes, planes, 3, side)
            out = side // stride
            conv(planes, planes * 4, 1, out)
            if stride > 1 or inplanes != planes * 4:
                conv(inplanes, planes * 4, 1, out)
            side, inplanes = out, planes * 4
    return total


def timed(run, warmup: int, iterations: int) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, process CPU ms per run) after `warmup` runs."""
    for _ in range(warmup):
        run()
    samples = []
    cpu = time.process_time()
    for _ in range(iterations):
        t = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples), min(samples), (time.process_time() - cpu) * 1e3 / iterations


def ort_label(node: str) -> str:
    """The Swift engine's op label for an ONNX Runtime node of the exported trunk, e.g.
    /layer2/layer2.0/act2/Relu_output_0_nchwc -> layer2.0.conv2 (ORT names a fused Conv+ReLU
    after its ReLU's output), /layer3/layer3.0/downsample/-1/AveragePool_output_0_nchwc ->
    layer3.0.downsample.-1; ReorderOutput -> output."""
    if node == "ReorderOutput":
        return "output"
    parts = [q for q in node.removesuffix("_nchwc").split("/") if q]
    if parts and "_output_" in parts[-1]:
        parts = parts[:-1]
    if len(parts) >= 2 and parts[0].startswith("layer") and parts[1].startswith(parts[0] + "."):
        parts = parts[1:]
    renamed = {"act1": "conv1", "act2": "conv2", "act3": "conv3"}
    parts = [renamed.get(q, q) for q in parts]
    if "downsample" in parts:  # downsample/downsample.0 -> downsample.0, downsample/-1 -> downsample.-1
        i = parts.index("downsample")
        parts = parts[:i] + ["downsample." + parts[i + 1].removeprefix("downsample.")] + parts[i + 2:]
    return ".".join(parts) or node


def quantize_int8(onnx_path: Path, out: Path, images: torch.Tensor) -> None:
    """ONNX Runtime's static INT8 quantization of the trunk: its pre-processing (shape inference,
    graph optimization), then QDQ with per-channel s8 weights and u8 activations whose ranges are
    calibrated (min/max) on `images` [N, 3, S, S], one at a time."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": images[i:i + 1].numpy()} for i in range(images.shape[0])])

        def get_next(self):
            return next(self.batches, None)

    prepared = out.with_suffix(".prepared.onnx")
    quant_pre_process(str(onnx_path), str(prepared))
    quantize_static(str(prepared), str(out), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def ort_session(onnx_path: Path, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session on `threads` intra-op threads, all graph optimizations,
    sequential; with its node profiler on when `profile_prefix` is given."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def ort_node_times(sess, feed: dict, warmup: int, iterations: int) -> dict[str, float]:
    """Median milliseconds of every node of the profiling session `sess` over `iterations` runs."""
    for _ in range(warmup + iterations):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    samples: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            samples.setdefault(e["name"].removesuffix("_kernel_time"), []).append(e["dur"] / 1e3)
    return {ort_label(n): statistics.median(v[warmup:] or v) for n, v in samples.items()}


def print_profile(swift: dict, ort: dict[str, float], policies: list[str], threads: int, peak: float) -> None:
    """One row per op: the Swift engine's time per policy beside ONNX Runtime's."""
    labels = [op["label"] for op in swift[policies[0]]]
    labels += [l for l in ort if l not in labels]
    by_label = {a: {op["label"]: op for op in swift[a]} for a in policies}
    print(f"Per op, {threads} thread(s), median ms; % of the FMA peak ({peak:.1f} GFLOPS) for convolutions")
    header = f"{'op':<24}{'implementation (' + policies[0] + ')':<32}" + "".join(f"{a:>15}" for a in policies)
    print(header + f"{'ONNX Runtime':>14}{'ratio':>7}  (first / ORT)")
    totals = {a: 0.0 for a in policies}
    ort_total = 0.0
    for label in labels:
        first = by_label[policies[0]].get(label)
        row = f"{label:<24}{(first['implementation'] if first else '-'):<32}"
        for a in policies:
            op = by_label[a].get(label)
            if op:
                totals[a] += op["milliseconds"]
                pct = f" {100 * op['flops'] / op['milliseconds'] / 1e6 / peak:3.0f}%" if op["flops"] else "     "
                row += f"{op['milliseconds']:>10.3f}{pct}"
            else:
                row += f"{'-':>15}"
        o = ort.get(label)
        ort_total += o or 0.0
        row += f"{o:>14.3f}" if o is not None else f"{'-':>14}"
        row += f"{first['milliseconds'] / o:>7.2f}" if first and o else f"{'':>7}"
        print(row)
    print(f"{'total':<56}" + "".join(f"{totals[a]:>10.2f}     " for a in policies) + f"{ort_total:>14.2f}"
          f"{totals[policies[0]] / ort_total:>7.2f}")


def keep_best(results: dict, key, *values: float) -> None:
    old = results.get(key)
    results[key] = tuple(min(v, o) for v, o in zip(values, old)) if old else tuple(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every measurement, keep the best median")
    parser.add_argument("--policies", default="exact,onednn-winograd,lightcap-winograd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", type=int, default=8, help="random images that calibrate ONNX Runtime INT8")
    parser.add_argument("--lightcap", type=Path, default=ROOT / ".build/release/lightcap")
    parser.add_argument("--profile", action="store_true", help="per-op times of the Swift engine beside ONNX Runtime's")
    args = parser.parse_args()

    if not args.lightcap.exists():
        print("building lightcap (release)", file=sys.stderr)
        subprocess.run(["swift", "build", "-c", "release", "--product", "lightcap"], cwd=ROOT, check=True)
    bench = [str(args.lightcap), "bench", "visual"]

    # The same random, non-degenerate weights as the fixtures' base model, BatchNorm folded.
    torch.set_num_threads(max(args.threads))
    full = make_model("base", args.seed)
    config = full.config
    state = {f"visual.{k}": v for k, v in full.visual.state_dict().items() if not k.startswith("attnpool.")}
    folded = fold_batchnorm(state, config)
    size = config.image.size
    visual = ModifiedResNet(config.visual.layers, config.visual.output_dim, config.visual.heads, size,
                            config.visual.width, attention_pool=False, folded=True)
    visual.load_state_dict({k[len("visual."):]: v for k, v in folded.items()}, strict=True)
    trunk = Trunk(visual).eval()
    del full
    x = random_images(1, size, torch.Generator().manual_seed(args.seed + 1))  # [1, 3, S, S]
    flops = conv_flops(config)

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "visual.safetensors"
        save_file({k: v.contiguous() for k, v in folded.items()}, str(weights))
        onnx_path = Path(tmp) / "trunk.onnx"
        with torch.no_grad():
            torch.onnx.export(trunk, (x,), str(onnx_path), input_names=["pixels"], output_names=["grid"],
                              opset_version=17, dynamo=False)
        int8_path = Path(tmp) / "trunk.int8.onnx"
        if not args.profile:
            quantize_int8(onnx_path, int8_path,
                          random_images(args.calibration, size, torch.Generator().manual_seed(args.seed + 2)))

        if args.profile:
            t = args.threads[0]
            policies = args.policies.split(",")

            ort_times = ort_node_times(ort_session(onnx_path, t, str(Path(tmp) / "ort-profile")),
                                       {"pixels": x.numpy()}, args.warmup, args.iterations)
            out = subprocess.run(bench + ["--weights", str(weights), "--json", "--profile", "--threads", str(t),
                                  "--policies", args.policies, "--iterations", str(args.iterations)],
                                 check=True, capture_output=True, text=True).stdout
            peak = json.loads(subprocess.run(bench + ["--weights", str(weights), "--json", "--threads", str(t),
                                              "--policies", policies[0], "--iterations", "1", "--warmup", "0"],
                                             check=True, capture_output=True, text=True).stdout)["rows"][0]["peakGflops"]
            print_profile(json.loads(out), ort_times, policies, t, peak)
            return

        with torch.inference_mode():
            expected = trunk(x).numpy()

        results: dict[tuple[str, int], tuple[float, float]] = {}
        peaks: dict[int, tuple[float, float]] = {}  # threads -> (wall, CPU-time) FMA peak GFLOPS
        extra: dict = {}
        for _ in range(args.rounds):
            for t in args.threads:
                torch.set_num_threads(t)
                with torch.inference_mode():
                    keep_best(results, ("PyTorch eager", t), *timed(lambda: trunk(x), args.warmup, args.iterations))

                sess = ort_session(onnx_path, t)
                feed = {"pixels": x.numpy()}
                got = sess.run(None, feed)[0]
                err = float(np.abs(got - expected).max() / np.abs(expected).max())
                extra["onnxruntime_relative_error_vs_torch"] = max(err, extra.get("onnxruntime_relative_error_vs_torch", 0.0))
                keep_best(results, ("ONNX Runtime", t), *timed(lambda: sess.run(None, feed), args.warmup, args.iterations))

                int8 = ort_session(int8_path, t)
                got = int8.run(None, feed)[0]
                err = float(np.abs(got - expected).max() / np.abs(expected).max())
                extra["onnxruntime_int8_relative_error_vs_torch"] = max(err, extra.get("onnxruntime_int8_relative_error_vs_torch", 0.0))
                extra["onnxruntime_int8_relative_rms_error_vs_torch"] = float(
                    np.linalg.norm(got - expected) / np.linalg.norm(expected))
                keep_best(results, ("ONNX Runtime INT8", t), *timed(lambda: int8.run(None, feed), args.warmup, args.iterations))

            out = subprocess.run(bench + ["--weights", str(weights), "--json",
                                  "--threads", ",".join(map(str, args.threads)), "--policies", args.policies,
                                  "--iterations", str(args.iterations), "--warmup", str(args.warmup)],
                                 check=True, capture_output=True, text=True).stdout
            report = json.loads(out)
            for row in report["rows"]:
                keep_best(results, (f"Swift {row['policy']}", row["threads"]), row["medianMs"], row["minMs"], row["cpuMs"])
                old = peaks.get(row["threads"], (0.0, 0.0))
                peaks[row["threads"]] = (max(row["peakGflops"], old[0]), max(row["cpuPeakGflops"], old[1]))
                if row["policy"] != "exact":
                    extra[f"{row['policy']}_relative_error_vs_exact"] = row["relativeErrorVsExact"]
            extra["swift_load_ms_warm_primitive_cache"] = report["loadMs"]
            extra["swift_first_load_ms"] = report["firstLoadMs"]
            for policy in args.policies.split(","):  # a process holding only the backbone
                mem = subprocess.run(bench + ["--memory", "--weights", str(weights), "--policies", policy],
                                     check=True, capture_output=True, text=True).stdout
                extra[f"swift_backbone_process_{policy}"] = json.loads(mem)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    print(f"CLIP RN50 trunk, {size}x{size}, {flops / 1e9:.2f} GFLOP of convolutions; {cpu} ({' '.join(isa)}); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("FMA peak (measured, wall / CPU time): " + ", ".join(
        f"{t} thread(s) {w:.1f} / {c:.1f} GFLOPS" for t, (w, c) in sorted(peaks.items())))
    print("wall: median (and min) ms of the runs, GFLOPS from the median; CPU: process CPU ms per run"
          " (GFLOPS = flops / (CPU ms / threads)), less sensitive to other processes sharing the cores")
    engines = ["PyTorch eager", "ONNX Runtime", "ONNX Runtime INT8"] + [f"Swift {a}" for a in args.policies.split(",")]
    width = max(map(len, engines)) + 1
    print(f"{'engine':<{width}}{'thr':>4}{'wall ms':>9}{'(min)':>8}{'GFLOPS':>8}{'%peak':>7}{'vs ORT':>8}{'(min)':>7}  |"
          f"{'CPU ms':>8}{'GFLOPS':>8}{'%peak':>7}{'vs ORT':>8}")
    for t in args.threads:
        ort_wall, ort_min, ort_cpu = results[("ONNX Runtime", t)]
        peak_wall, peak_cpu = peaks.get(t, (0.0, 0.0))
        for e in engines:
            if (e, t) not in results:
                continue
            wall, low, cpu = results[(e, t)]
            g_wall = flops / wall / 1e6
            g_cpu = flops / (cpu / t) / 1e6
            print(f"{e:<{width}}{t:>4}{wall:>9.2f}{low:>8.2f}{g_wall:>8.1f}{100 * g_wall / peak_wall if peak_wall else 0:>6.0f}%"
                  f"{wall / ort_wall:>8.2f}{low / ort_min:>7.2f}  |{cpu:>8.2f}{g_cpu:>8.1f}{100 * g_cpu / peak_cpu if peak_cpu else 0:>6.0f}%"
                  f"{cpu / ort_cpu:>8.2f}")
    for k, v in extra.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
