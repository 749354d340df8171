#!/usr/bin/env python3
"""Image decode + CLIP preprocessing: LightCapImage (Swift) against Pillow, same files, same run.

    PYTHONPATH=python .venv/bin/python scripts/bench_image.py [--size 224] [--iterations 20]

Workloads (written to .build/bench-images/, from the scikit-image photos with a little sensor-like noise):
a 12-megapixel phone-style JPEG (4000x3000, quality 92, 4:2:0) and a 1-megapixel PNG (1224x816).
Pillow path: open + convert("RGB") + resize(BICUBIC, reducing_gap=None) + centre crop + normalise.
Swift path: read + decode (JPEG DCT-scaled to the smallest size whose shorter side >= S) +
resize + crop + normalise. Both single-threaded; medians of thread CPU time (the machine is shared,
so wall time swings with other processes; wall-clock medians are printed too). Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
from lightcap_train.reference import preprocess as pp  # noqa: E402


def workloads(out: Path) -> list[Path]:
    import skimage.data
    data_dir = Path(os.path.dirname(skimage.data.__file__))
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    jpg, png = out / "photo_12mp.jpg", out / "photo_1mp.png"
    if not jpg.exists():
        img = pp.load_image(data_dir / "astronaut.png").resize((4000, 3000), Image.Resampling.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.normal(0, 4, (3000, 4000, 3)).astype(np.int16)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(jpg, quality=92, subsampling=2)
    if not png.exists():
        img = pp.load_image(data_dir / "motorcycle_left.png").resize((1224, 816), Image.Resampling.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.normal(0, 2, (816, 1224, 3)).astype(np.int16)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(png)
    return [jpg, png]


def pillow_once(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return pp.normalize(pp.center_crop(pp.resize_shorter(rgb, size), size))


def bench_pillow(path: Path, size: int, iterations: int, warmup: int = 3) -> tuple[float, float]:
    """(median thread CPU ms, median wall ms)."""
    cpu, wall = [], []
    for i in range(warmup + iterations):
        w0, t0 = time.perf_counter(), time.thread_time()
        pillow_once(path, size)
        t1, w1 = time.thread_time(), time.perf_counter()
        if i >= warmup:
            cpu.append((t1 - t0) * 1e3)
            wall.append((w1 - w0) * 1e3)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / ".build" / "bench-images"))
    args = ap.parse_args()
    files = workloads(Path(args.out))
    subprocess.run(["swift", "build", "-c", "release", "--product", "lightcap"], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    bench = [str(ROOT / ".build" / "release" / "lightcap"), "bench", "image"]
    print(f"{'workload':<21} {'source':>10} {'decoded':>10} {'swift dec':>9} {'swift pre':>9} "
          f"{'swift ms':>8} {'pillow ms':>9} {'ratio':>6}   {'wall: swift':>11} {'pillow':>7} {'ratio':>6}")
    runs = [(files[0], []), (files[0], ["--no-dct-scaling"]), (files[1], [])]
    for f, extra in runs:
        # Alternate the two sides for a few rounds and keep each side's best median, so that load
        # from other processes on the machine hits both alike.
        swift, pil, pil_wall = None, float("inf"), float("inf")
        for _ in range(args.rounds):
            c, w = bench_pillow(f, args.size, args.iterations)
            pil, pil_wall = min(pil, c), min(pil_wall, w)
            res = subprocess.run(bench + [str(f), "--size", str(args.size), "--iterations", str(args.iterations)]
                                 + extra,
                                 check=True, capture_output=True, text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            if swift is None or r["totalMs"] < swift["totalMs"]:
                swift = r
        r = swift
        wall = r["wallTotalMs"]
        name = f.name + (" (full)" if extra else "")
        print(f"{name:<21} {r['sourceWidth']:>5}x{r['sourceHeight']:<4} {r['decodedWidth']:>5}x{r['decodedHeight']:<4} "
              f"{r['decodeMs']:>9.2f} {r['preprocessMs']:>9.2f} {r['totalMs']:>8.2f} {pil:>9.2f} "
              f"{pil / r['totalMs']:>5.1f}x   {wall:>11.2f} {pil_wall:>7.2f} {pil_wall / wall:>5.1f}x")

if __name__ == "__main__":
    main()
