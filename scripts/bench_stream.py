#!/usr/bin/env python3
"""Throughput of `lightcap caption --stream` (docs/SCALE.md): images per second per process
(one core each: --threads 1), on sets of files written to .build/bench-stream/.

    PYTHONPATH=python .venv/bin/python scripts/bench_stream.py [--count 1000] [--processes 1 2]

Sets: rendered scenes at 256 px and at 224 px (PNG), the three 256 px examples/ PNGs, 224 px
JPEGs of them, and a 12-megapixel phone-style JPEG (scripts/bench_image.py's). Each set's
list repeats its files up to --count inputs (the files stay in the page cache, as on a busy
worker's local disk). P processes take every P-th line each and run at once. Reported: each
process's rate (wall clock, without model loading: lightcap's own summary line), images per
CPU-second of each process (user + system time, model loading included: what one fully used
core gives, and what other jobs on a shared machine disturb least), and all processes' images
over the wall time. Prints the CPU model and the load average. Not a test.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_image import workloads  # noqa: E402
from lightcap_train.data.scenes import write_split  # noqa: E402

DONE = re.compile(r"done: (\d+) images \((\d+) failed\) in ([\d.]+) s, ([\d.]+) img/s")


def image_sets(out: Path) -> dict[str, list[Path]]:
    sets = {}
    for size in (256, 224):
        folder = out / f"scenes{size}"
        if not (folder / "images").exists():
            write_split("test", 7, 200, str(folder), image_size=size, progress=False)
        sets[f"scenes, {size} px PNG"] = sorted((folder / "images").glob("*.png"))
    sets["examples/, 256 px PNG"] = sorted((ROOT / "examples").glob("*.png"))
    jpegs = []
    for png in sets["examples/, 256 px PNG"]:
        jpg = out / f"{png.stem}-224.jpg"
        if not jpg.exists():
            Image.open(png).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC).save(jpg, quality=90)
        jpegs.append(jpg)
    sets["examples/ as 224 px JPEG"] = jpegs
    sets["12 MP JPEG (4000x3000)"] = [workloads(ROOT / ".build" / "bench-images")[0]]
    return sets


def run(lightcap: str, model: str, files: list[Path], count: int, processes: int) -> dict:
    inputs = [f"{files[i % len(files)]}\n" for i in range(count)]
    lists = []
    for k in range(processes):
        # By position, not --shard: a repeated path always hashes to the same shard.
        f = tempfile.TemporaryFile("w+")
        f.writelines(inputs[k::processes])
        f.seek(0)
        lists.append(f)
    start = time.perf_counter()
    cmd = [lightcap, "caption", "--stream", "--threads", "1", "--model", model]
    procs = [subprocess.Popen(cmd, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for f in lists]
    rates, per_cpu, images = [], [], 0
    for p in procs:
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        m = DONE.search(err)
        assert p.returncode == 0 and m, err
        assert m.group(2) == "0", err
        images += int(m.group(1))
        rates.append(float(m.group(4)))
        per_cpu.append(int(m.group(1)) / (usage.ru_utime + usage.ru_stime))
    wall = time.perf_counter() - start
    return {"images": images, "rates": rates, "per_cpu": per_cpu, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lightcap", default=str(ROOT / ".build/release/lightcap"))
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--count", type=int, default=1000, help="inputs per set (the 12 MP JPEG: a tenth)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    print("| images | processes | img/s per process (wall) | img per CPU-second, per process | all processes (wall) |")
    print("|---|---|---|---|---|")
    for name, files in image_sets(ROOT / ".build" / "bench-stream").items():
        count = args.count // 10 if "12 MP" in name else args.count
        for p in args.processes:
            r = run(args.lightcap, args.model, files, count, p)
            per = ", ".join(f"{x:.1f}" for x in r["rates"])
            cpu_rate = ", ".join(f"{x:.1f}" for x in r["per_cpu"])
            print(f"| {name} | {p} | {per} | {cpu_rate} | {r['images']} in {r['wall']:.1f} s = "
                  f"{r['images'] / r['wall']:.1f} img/s |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
