"""Caption a folder (or a list of paths) with Ray Data: map_batches on a pool of actors, each
keeping one `lightcap caption --stream` process and feeding it a batch's paths line by line;
the records are written as Parquet.

    python examples/engines/ray_caption.py --images photos/ --out captions.parquet
    python examples/engines/ray_caption.py --paths paths.txt --out captions.parquet \
        --address auto --actors 64 --lightcap ./lightcap --model ./models/default

--address auto joins a running cluster (`ray start`); without it a local cluster is started
with --actors CPUs. Every node must be able to run --lightcap and read --model and the images
(docs/SCALE.md).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import lightcap_stream as ls

ROOT = Path(__file__).resolve().parents[2]


class Captioner:
    """A map_batches actor: one lightcap process for its lifetime (the model loads once)."""

    def __init__(self, command):
        self.command = command
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1)

    def __call__(self, batch):
        import pyarrow as pa
        rows = []
        for path in batch["path"].to_pylist():
            # lightcap answers each line before it reads the next, so writing one line and
            # reading one keeps the two in step and never fills a pipe.
            self.process.stdin.write(path + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.command[0]} exited with status {self.process.wait()}")
            rows.append(ls.row(line))
        return pa.Table.from_pylist(rows, schema=ls.arrow_schema())

    def __del__(self):
        if getattr(self, "process", None) and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (listed on the driver)")
    src.add_argument("--paths", help="a text file of image paths, one a line (read by Ray Data)")
    ap.add_argument("--out", required=True, help="the Parquet output (a folder)")
    ap.add_argument("--lightcap", default=str(ROOT / ".build/release/lightcap"), help="the lightcap executable")
    ap.add_argument("--model", default=None, help="model directory (default: lightcap's own default)")
    ap.add_argument("--address", default=None, help="a Ray cluster to join ('auto'); default: start a local one")
    ap.add_argument("--actors", type=int, default=2, help="captioning actors, one CPU each")
    ap.add_argument("--batch-size", type=int, default=64, help="paths per batch")
    args = ap.parse_args(argv)

    import ray

    # The actors import lightcap_stream (ls.row, ls.arrow_schema): ship it with the job.
    runtime_env = {"py_modules": [ls]}
    if args.address:
        ray.init(address=args.address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=args.actors, include_dashboard=False, runtime_env=runtime_env)
    try:
        start = time.monotonic()
        if args.images:
            paths = ray.data.from_items([{"path": p} for p in ls.list_images(args.images)])
        else:
            paths = ray.data.read_text(args.paths).rename_columns({"text": "path"})
        records = paths.map_batches(
            Captioner, fn_constructor_args=(ls.command(args.lightcap, args.model),),
            batch_size=args.batch_size, batch_format="pyarrow", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=args.actors))
        records.write_parquet(args.out)
        import pyarrow.parquet as pq
        errors = pq.read_table(args.out, columns=["error"]).column("error")
        total, failed = len(errors), len(errors) - errors.null_count
        seconds = time.monotonic() - start
        print(f"ray_caption: {total} images ({failed} failed) in {seconds:.1f} s "
              f"({total / seconds:.1f} img/s) -> {args.out}")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
