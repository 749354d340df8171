#!/usr/bin/env python3
"""Quality budget of LightCap's INT8 modes against the exact F32 path.

    PYTHONPATH=python .venv/bin/python scripts/quality_budget.py [--count 500] [--out /tmp/lightcap-quality]

The modes: INT8 fusion weights (`lightcap caption --fusion-weights int8`), the INT8 trunk (the
model directory of `lightcap quantize`, calibrated on `--calibration-count` scenes *val* images,
never the test images) and both together. For each model, captions the same images with each
mode and with the exact F32 path, greedy (beam 1) and with beam 5, and prints a markdown table:
the share of captions identical to F32's, the share of images whose top-k concept sets are
equal (as sets: the order within the k may change), and CIDEr-D of each (where the images
have references; `lightcap eval`, equal to pycocoevalcap). Quantized directories are kept in
`--out` and reused. Models:
  - models/default on the scenes test split (`--count` images, seed 2026, as the engine parity
    check in scripts/test.sh draws them);
  - the paper-size random fixture (.fixtures/base/model: RN50 trunk, TinyBERT-4, random
    weights) on the first `--base-count` of those images (no meaningful references: identity
    only). Random weights give flat next-token distributions, the hardest case for a rounding;
    as a yardstick, the same captions after the Winograd trunk (`--convolutions
    lightcap-winograd`, features within about 2e-6 of the exact ones) against the exact ones.
The budget (docs/DECODING.md, docs/VISUAL.md): identical on >= 98% of images, CIDEr-D within
1%, concept sets equal on >= 95%.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def caption(lightcap: Path, model: Path, images: list[Path], weights: str, beam: int,
            convolutions: str = "exact") -> dict[str, dict]:
    """{file name: the jsonl record} of every image."""
    cmd = [str(lightcap), "caption", "--format", "jsonl", "--model", str(model), "--fusion-weights", weights,
           "--beam", str(beam), "--convolutions", convolutions, *map(str, images)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    return {Path(r["path"]).name: r for r in records}


def cider(lightcap: Path, annotations: Path, records: dict[str, dict], out: Path) -> float:
    """CIDEr-D of the captions against the annotations (image ids from the file names)."""
    images = json.loads(annotations.read_text())["images"]
    ids = {im["file_name"]: im["id"] for im in images}
    results = [{"image_id": ids[name], "caption": r["caption"]} for name, r in records.items()]
    out.write_text(json.dumps(results))
    run = subprocess.run([str(lightcap), "eval", "--annotations", str(annotations), "--results", str(out),
                          "--format", "json", "--no-meteor"], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)["CIDEr"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=500, help="scenes test images for models/default")
    p.add_argument("--base-count", type=int, default=100, help="of those, images for the paper-size fixture")
    p.add_argument("--calibration-count", type=int, default=100, help="scenes val images the INT8 trunks are calibrated on")
    p.add_argument("--out", type=Path, default=Path("/tmp/lightcap-quality"))
    p.add_argument("--lightcap", type=Path, default=REPO / ".build/release/lightcap")
    p.add_argument("--base-model", type=Path, default=REPO / ".fixtures/base/model")
    p.add_argument("--keep-f32", default=None, help="lightcap quantize's --keep-f32 (default: its own default)")
    args = p.parse_args()

    def scenes(split: str, seed: int, count: int) -> Path:
        data = args.out / f"scenes-{split}-{count}"
        if not (data / "captions.json").exists():
            subprocess.run([sys.executable, "-m", "lightcap_train.data.scenes", "--split", split, "--seed", str(seed),
                            "--count", str(count), "--out", str(data)], check=True)
        return data

    data = scenes("test", 2026, args.count)
    calibration = scenes("val", 2, args.calibration_count) / "images"
    images = sorted((data / "images").iterdir())
    rows = []
    for label, model, subset, refs in [("models/default, scenes test", REPO / "models/default", images, True),
                                       ("paper-size random fixture", args.base_model, images[:args.base_count], False)]:
        if not (model / "config.json").exists():
            print(f"skipping {label}: {model} not found (scripts/setup.sh builds the fixtures)", file=sys.stderr)
            continue
        keep = [] if args.keep_f32 is None else ["--keep-f32", args.keep_f32]
        quantized = args.out / f"{model.parent.name}-{model.name}-int8{'-keep-' + args.keep_f32 if keep else ''}"
        if not quantized.exists():
            subprocess.run([str(args.lightcap), "quantize", str(model), str(quantized), "--calibration", str(calibration),
                            "--count", str(args.calibration_count), *keep], check=True)
        for beam in (1, 5):
            f32 = caption(args.lightcap, model, subset, "f32", beam)
            modes = [("INT8 fusion weights", caption(args.lightcap, model, subset, "int8", beam)),
                     ("INT8 trunk", caption(args.lightcap, quantized, subset, "f32", beam)),
                     ("INT8 trunk + fusion weights", caption(args.lightcap, quantized, subset, "int8", beam))]
            if not refs:
                # The yardstick of how sensitive these captions are: F32 decoding after the
                # Winograd trunk, whose features differ from the exact ones by about 2e-6.
                modes.append(("yardstick: F32, Winograd trunk",
                              caption(args.lightcap, model, subset, "f32", beam, "lightcap-winograd")))
            for mode, other in modes:
                row = {"model": label, "mode": mode, "beam": beam, "images": len(f32),
                       "identical": sum(f32[n]["caption"] == other[n]["caption"] for n in f32) / len(f32),
                       "concepts": sum({c["name"] for c in f32[n]["concepts"]} == {c["name"] for c in other[n]["concepts"]}
                                       for n in f32) / len(f32)}
                if refs:
                    row["cider_f32"] = cider(args.lightcap, data / "captions.json", f32, args.out / "f32.json")
                    row["cider_int8"] = cider(args.lightcap, data / "captions.json", other, args.out / "int8.json")
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

    print("| model, images | mode | beam | captions identical to F32 | top-k concepts equal | CIDEr-D F32 | CIDEr-D mode | change |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "cider_f32" in r:
            change = (r["cider_int8"] - r["cider_f32"]) / r["cider_f32"] * 100
            scores = f"{r['cider_f32']:.4f} | {r['cider_int8']:.4f} | {change:+.2f}%"
        else:
            scores = "- | - | -"
        print(f"| {r['model']}, {r['images']} | {r['mode']} | {r['beam']} | {r['identical'] * 100:.1f}% | "
              f"{r['concepts'] * 100:.1f}% | {scores} |")


if __name__ == "__main__":
    main()
