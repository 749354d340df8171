#!/usr/bin/env python3
"""Throughput of `lightcap serve` with and without request batching (docs/SERVER.md).

For each server setting (by default --max-batch 1, one request at a time, and --max-batch 8),
starts `lightcap serve` on 127.0.0.1 and runs Debian's wrk with good images only (the example
scenes, through scripts/load_test.lua) at each number of concurrent clients, after a warm-up.
Prints a Markdown table: images per second, latency p50 / p99, the mean batch size the server
reports (/metrics), and the speed-up over one at a time at the same number of clients.

The service batches the fusion model only; each image goes through the backbone on its own.
What batching the backbone could add is measured on the peer: the model's backbone in PyTorch
eager (the Python reference, one thread) at batch 1 and 8, beside the Swift backbone's time per
image (`lightcap bench caption`), when PyTorch is installed (.venv).

    PYTHONPATH=python .venv/bin/python scripts/bench_serve.py [--seconds 20] [--clients 1,4,16,64] [--batches 1,8]
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def batch_counts(port: int) -> tuple[float, float]:
    """Images decoded in batches so far, and batches, from the server's Prometheus metrics."""
    text = get(f"http://127.0.0.1:{port}/metrics")
    total = re.search(r"^lightcap_batch_images_sum ([0-9.e+]+)$", text, re.M)
    count = re.search(r"^lightcap_batch_images_count ([0-9.e+]+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def backbone_peer(model_dir: str, lightcap: str) -> str:
    """Per-image backbone time: PyTorch eager at batch 1 and 8, and the Swift engine (batch 1)."""
    try:
        import torch
        sys.path.insert(0, os.path.join(ROOT, "python"))
        from lightcap_train.reference.export import load
    except ImportError as error:
        return f"(backbone peer skipped: {error})"
    torch.set_num_threads(1)
    visual = load(model_dir).eval().visual
    side = json_size(model_dir)
    rows = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, side, side)
        times = []
        with torch.no_grad():
            for i in range(23):
                start = time.thread_time()
                visual.forward_grid(x)
                if i >= 3:
                    times.append((time.thread_time() - start) / batch * 1e3)
        rows.append(sorted(times)[len(times) // 2])
    out = subprocess.run([lightcap, "bench", "caption", "--model", model_dir, "--runs", "20", "--threads", "1", "--json",
                          "--image", os.path.join(ROOT, "examples", "scene1.png")],
                         check=True, capture_output=True, text=True).stdout
    swift = json.loads(out)["stages"]["backbone"]["median_ms"]
    return (f"Backbone per image, one thread: PyTorch eager {rows[0]:.2f} ms at batch 1, {rows[1]:.2f} ms at batch 8 "
            f"({rows[0] / rows[1]:.2f}x from batching); Swift {swift:.2f} ms at batch 1 "
            f"({rows[1] / swift:.2f}x PyTorch's batch of 8).")


def json_size(model_dir: str) -> int:
    return json.load(open(os.path.join(model_dir, "config.json")))["image"]["size"]


def wrk(port: int, clients: int, seconds: float, bodies: list[str]) -> dict:
    out = subprocess.run(
        ["wrk", "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", os.path.join(ROOT, "scripts", "load_test.lua"), f"http://127.0.0.1:{port}", "--"] + bodies,
        check=True, capture_output=True, text=True).stdout
    requests = re.search(r"^requests (\d+) seconds ([0-9.]+)", out, re.M)
    latency = re.search(r"^latency_ms p50 ([0-9.]+) p90 [0-9.]+ p99 ([0-9.]+)", out, re.M)
    good = sum(int(n) for n in re.findall(r"^count good 200 (\d+)$", out, re.M))
    bad = sum(int(n) for s, n in re.findall(r"^count good (\d+) (\d+)$", out, re.M) if s != "200")
    if bad:
        raise SystemExit(f"bench_serve: {bad} good requests were not answered 200:\n{out}")
    seconds_run = float(requests.group(2))
    return {"rate": good / seconds_run, "p50": float(latency.group(1)), "p99": float(latency.group(2))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of warm-up per server")
    parser.add_argument("--clients", default="1,4,16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--batches", default="1,8", help="--max-batch values, comma-separated (1 first: the baseline)")
    parser.add_argument("--window-ms", type=float, default=2, help="--batch-window-ms")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count(), help="--concurrency (worker threads)")
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    parser.add_argument("--lightcap", default=os.path.join(ROOT, ".build", "release", "lightcap"))
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    bodies = [f"good:image/png:{os.path.join(ROOT, 'examples', f'scene{i}.png')}" for i in (1, 2, 3)]

    results: dict[tuple[int, int], dict] = {}
    for batch in batches:
        port = free_port()
        server = subprocess.Popen(
            [args.lightcap, "serve", "--port", str(port), "--model", args.model, "--concurrency", str(args.concurrency),
             "--max-batch", str(batch), "--batch-window-ms", str(args.window_ms), "--max-queue", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    get(f"http://127.0.0.1:{port}/readyz")
                    break
                except OSError:
                    time.sleep(0.05)
            wrk(port, max(clients), args.warmup, bodies)
            for c in clients:
                before = batch_counts(port)
                r = wrk(port, c, args.seconds, bodies)
                after = batch_counts(port)
                images, count = after[0] - before[0], after[1] - before[1]
                r["batch"] = images / count if count else 0.0
                results[(batch, c)] = r
                print(f"max-batch {batch}, {c} clients: {r['rate']:.1f} images/s, p50 {r['p50']:.1f} ms, "
                      f"p99 {r['p99']:.1f} ms, mean batch {r['batch']:.2f}", file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait()

    peer = backbone_peer(args.model, args.lightcap)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    print(f"`lightcap serve` with {os.path.relpath(args.model, ROOT)}, --concurrency {args.concurrency}, "
          f"--batch-window-ms {args.window_ms:g}; wrk, good images only, {args.seconds:g} s per row; "
          f"{os.cpu_count()} cores: {cpu}\n")
    print("| --max-batch | clients | images per second | latency p50 / p99 ms | mean batch | vs one at a time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in batches:
        for c in clients:
            r = results[(batch, c)]
            base = results.get((batches[0], c))
            ratio = f"{r['rate'] / base['rate']:.2f}x" if base and base["rate"] else "-"
            print(f"| {batch} | {c} | {r['rate']:.1f} | {r['p50']:.1f} / {r['p99']:.1f} | {r['batch']:.2f} | {ratio} |")
    print(f"\n{peer}")


if __name__ == "__main__":
    main()
