#!/usr/bin/env python3
"""Compares the Swift engine's captions with the Python reference's on a scenes split.

    scripts/compare_engines.py --data DIR [--model models/default] [--out docs/ENGINE_PARITY.md]

Runs the reference greedy decoder (python/lightcap_train, uncached, F32) and
`lightcap caption DIR/images --format jsonl` on the same images and model, and reports the
share of identical captions and every difference (issue: Swift equals Python on >= 99.5%).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))


def swift_captions(model: str, images_dir: str, exe: str) -> dict[str, str]:
    if not os.path.exists(exe):
        subprocess.run(["swift", "build", "-c", "release", "--product", "lightcap"], cwd=ROOT, check=True)
    proc = subprocess.run([exe, "caption", images_dir, "--model", model, "--format", "jsonl", "--beam", "1"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"lightcap failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        out[os.path.basename(row["path"])] = row["caption"]
    return out


def smallest_gap(model, data_dir: str, file_name: str) -> float:
    """The smallest top-1 minus top-2 logit gap of the reference's greedy decode of one image."""
    from lightcap_train.recipe.evaluate import load_pixels

    x = load_pixels([os.path.join(data_dir, "images", file_name)], model.config)
    margins: list[float] = []
    model.greedy(x, margins=margins)
    return min(margins)


def main() -> None:
    import torch
    from lightcap_train.recipe.evaluate import caption_split, load_references
    from lightcap_train.reference.export import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a scenes split (python -m lightcap_train.data.scenes)")
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--out", help="write a Markdown report here")
    p.add_argument("--lightcap", default=os.path.join(ROOT, ".build", "release", "lightcap"),
                   help="the lightcap executable (built with `swift build -c release` if missing)")
    args = p.parse_args()
    torch.set_num_threads(1)

    t0 = time.time()
    model = load(args.model).eval()
    reference = caption_split(model, args.data, beam=1, log=None)
    t1 = time.time()
    swift = swift_captions(args.model, os.path.join(args.data, "images"), args.lightcap)
    t2 = time.time()
    images, _, _ = load_references(args.data)
    diffs = []
    for im in images:
        ref, got = reference[im["id"]], swift.get(im["file_name"])
        if ref != got:
            diffs.append((im["file_name"], ref, got))
    n = len(images)
    same = n - len(diffs)
    lines = [
        "# Swift engine vs Python reference: greedy captions",
        "",
        f"Model `{os.path.relpath(args.model, ROOT)}`, data `{args.data}` ({n} images). "
        f"Made by `scripts/compare_engines.py`.",
        "",
        f"Identical captions: **{same}/{n} ({100.0 * same / n:.2f}%)**. "
        f"Python reference {t1 - t0:.0f} s, Swift `lightcap caption` {t2 - t1:.0f} s (whole process, 1 thread).",
        "",
    ]
    if diffs:
        lines += ["Each difference with the smallest gap between the two best ensemble logits on the "
                  "reference's greedy path (a near-tie, which float rounding can flip, shows as a gap "
                  "near 0):", "",
                  "| image | Python reference | Swift | smallest logit gap |", "|---|---|---|---|"]
        lines += [f"| {f} | {r} | {g} | {smallest_gap(model, args.data, f):.2e} |" for f, r, g in diffs]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    sys.exit(0 if same >= 0.995 * n else 1)


if __name__ == "__main__":
    main()
