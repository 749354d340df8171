"""Frozen CLIP grid features on disk: fp16 shards written once, memory-mapped by every reader.

The recipe's image tower is frozen, so the grid tokens of every image are computed once and
read back at each step. At COCO scale (113,287 train images x 49 tokens x 2048 channels) a
split is 22.7 GB in fp16: too large to hold per rank, so it lives on disk as

    out_dir/shard-00000.npy, shard-00001.npy, ...   np.float16 [rows, N, C]
    out_dir/manifest.json                            {"count", "tokens", "channels", "dtype",
                                                      "shard_size", "shards": [{"file", "rows"}],
                                                      "complete"}

and is opened with np.load(mmap_mode="r"): data-parallel ranks on one machine then share the
page cache instead of each holding a copy.

- ImageFiles / PixelArray: the two image sources, each item (index, float32 [3, S, S]).
  ImageFiles goes through lightcap_train.reference.preprocess, the one preprocessing that
  equals the Swift engine's; PixelArray normalises pixels already at the model size (the
  rendered scenes) exactly like data.batches.normalize.
- write_features: runs the encoder over a source in order and writes the shards. Each shard
  and the manifest are written to a temporary name and renamed, so a file with a final name is
  always whole; a rerun keeps the finished shards and resumes at the first missing one. Host
  memory stays at about one shard plus one batch.
- GridShards: the reader; indexes like a tensor and returns torch.float16 [b, N, C].

One writer per out_dir at a time (in a distributed run, the main rank writes and the others
wait, then open GridShards).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lightcap_train.reference.preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess, load_image

MANIFEST = "manifest.json"
DTYPE = "float16"
LOG_EVERY_SHARDS = 5


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npy"


# ----------------------------------------------------------------------------------------------
# Image sources


class ImageError(ValueError):
    """An image file that cannot be read or preprocessed; the message starts with its path."""


class ImageFiles(Dataset):
    """Image files -> (i, float32 [3, size, size]) by load_image + clip_preprocess, the
    preprocessing the Swift engine equals (docs/IMAGE.md)."""

    def __init__(self, paths: Sequence[str], size: int, mean=CLIP_MEAN, std=CLIP_STD):
        self.paths = [os.fspath(p) for p in paths]
        self.size = int(size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        path = self.paths[i]
        try:
            img = load_image(path, draft_side=self.size)
            x = clip_preprocess(img, self.size, self.mean, self.std, as_torch=True)
        except Exception as e:  # Pillow raises OSError, ValueError, DecompressionBombError, ...
            raise ImageError(f"{path}: {type(e).__name__}: {e}") from e
        return i, x


class PixelArray(Dataset):
    """uint8 [n, S, S, 3] pixels already at the model size -> (i, float32 [3, S, S]) =
    (x / 255 - mean) / std in float32, the same operations as data.batches.normalize, so a
    stacked batch equals normalize(pixels[batch]) bit for bit."""

    def __init__(self, pixels: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD):
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise ValueError(f"PixelArray wants uint8 [n, S, S, 3], got {pixels.dtype} {pixels.shape}")
        self.pixels = pixels
        # float32 like normalize's torch.tensor(list of floats) (a float64 mean would upcast x)
        self.mean = torch.tensor([float(v) for v in mean], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor([float(v) for v in std], dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(self.pixels[i])).permute(2, 0, 1).float().div_(255)
        return i, ((x - self.mean) / self.std).contiguous()


# ----------------------------------------------------------------------------------------------
# Writing


def _atomic_write(path: str, write: Callable) -> None:
    """write(file) into a temporary name next to `path`, flushed to disk, then renamed over it:
    a file under its final name is never partial, even after a crash."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_manifest(out_dir: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_manifest(out_dir: str, manifest: dict) -> None:
    data = json.dumps(manifest, indent=1).encode()
    _atomic_write(os.path.join(out_dir, MANIFEST), lambda f: f.write(data))


def _shard_shape(path: str) -> tuple[int, ...] | None:
    """Shape of a whole float16 .npy file (None if missing, of another dtype, or short)."""
    try:
        a = np.load(path, mmap_mode="r")  # mmap fails when the file is shorter than its header says
    except (OSError, ValueError):
        return None
    shape = a.shape if a.dtype == np.float16 and a.ndim == 3 else None
    del a
    return shape


def write_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, out_dir: str, *,
                   batch: int = 200, shard_size: int = 2000, workers: int = 0, device="cpu",
                   log: Callable[[str], None] | None = print) -> "GridShards":
    """Grid features of every item of `dataset`, in order, as fp16 shards in `out_dir`.

    encode(x): x float32 [b, 3, S, S] on `device`, channels_last -> [b, N, C] (e.g.
    LightCap.encode_image of a model in eval mode). Runs under torch.inference_mode.
    Shards hold `shard_size` rows (the last one the rest); shard_size must be a multiple of
    `batch` so that batches never straddle shards. A complete manifest for the same count
    returns at once; otherwise the leading shards already on disk (whole, of the right shape)
    are kept and extraction resumes at the first missing one.
    """
    if batch <= 0 or shard_size <= 0 or shard_size % batch:
        raise ValueError(f"shard_size ({shard_size}) must be a positive multiple of batch ({batch})")
    n = len(dataset)
    if n == 0:
        raise ValueError("write_features: the dataset is empty")
    os.makedirs(out_dir, exist_ok=True)
    log = log or (lambda _msg: None)

    manifest = _read_manifest(out_dir)
    if manifest is not None and manifest.get("complete") and manifest.get("count") == n:
        return GridShards(out_dir)

    # Resume: keep the leading run of whole shards that this (count, shard_size) would write.
    # A manifest for another count or shard size means another extraction: start over.
    n_shards = math.ceil(n / shard_size)
    rows_of = [min(shard_size, n - k * shard_size) for k in range(n_shards)]
    stale = manifest is not None and (manifest.get("count"), manifest.get("shard_size")) != (n, shard_size)
    tokens = channels = None
    kept = 0
    while not stale and kept < n_shards:
        shape = _shard_shape(os.path.join(out_dir, shard_name(kept)))
        if shape is None or shape[0] != rows_of[kept] or (tokens is not None and shape[1:] != (tokens, channels)):
            break
        tokens, channels = shape[1], shape[2]
        kept += 1
    if stale:
        log(f"features: {out_dir} holds another extraction "
            f"(count {manifest.get('count')}, shard_size {manifest.get('shard_size')}); starting over")

    def save_manifest(done: int, complete: bool) -> None:
        _write_manifest(out_dir, {
            "count": n, "tokens": tokens, "channels": channels, "dtype": DTYPE, "shard_size": shard_size,
            "shards": [{"file": shard_name(k), "rows": rows_of[k]} for k in range(done)],
            "complete": complete})

    start = kept * shard_size
    if kept:
        log(f"features: resuming at image {start}/{n} ({kept} of {n_shards} shards on disk)")
    if kept < n_shards:
        save_manifest(kept, False)  # forget shards past `kept` that an older manifest may list
        device = torch.device(device)
        loader = DataLoader(Subset(dataset, range(start, n)), batch_size=batch, shuffle=False,
                            num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
        buf = None  # the current shard, filled batch by batch (reused: one shard of host memory)
        k, fill, pos = kept, 0, start
        t0 = time.time()
        with torch.inference_mode():
            for idx, x in loader:
                b = len(idx)
                if int(idx[0]) != pos:
                    raise RuntimeError(f"write_features: batch starts at item {int(idx[0])}, expected {pos}")
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y = encode(x)
                if y.ndim != 3 or y.shape[0] != b:
                    raise ValueError(f"encode gave {tuple(y.shape)} for a batch of {b}; wants [b, N, C]")
                if tokens is None:
                    tokens, channels = int(y.shape[1]), int(y.shape[2])
                elif tuple(y.shape[1:]) != (tokens, channels):
                    raise ValueError(f"encode gave [b, {y.shape[1]}, {y.shape[2]}], "
                                     f"the shards on disk hold [rows, {tokens}, {channels}]")
                y = y.to(torch.float16)
                if not bool(torch.isfinite(y).all()):
                    raise ValueError(f"encode gave non-finite values (or beyond float16) in items {pos}..{pos + b - 1}")
                if buf is None:
                    buf = np.empty((shard_size, tokens, channels), np.float16)
                buf[fill:fill + b] = y.cpu().numpy()
                fill, pos = fill + b, pos + b
                if fill == rows_of[k]:
                    _atomic_write(os.path.join(out_dir, shard_name(k)), lambda f: np.save(f, buf[:fill]))
                    k, fill = k + 1, 0
                    save_manifest(k, False)
                    if (k - kept) % LOG_EVERY_SHARDS == 0 or k == n_shards:
                        dt = time.time() - t0
                        log(f"features: {pos}/{n} images, {(pos - start) / max(dt, 1e-9):.1f} images/s")
        if k != n_shards:  # a dataset whose len() overstates what it yields
            raise RuntimeError(f"write_features: the loader stopped at item {pos} of {n}")
    save_manifest(n_shards, True)
    # Shard files this manifest does not list (an older, longer extraction) and temporary files
    # that a killed writer left behind are dead weight.
    listed = {shard_name(k) for k in range(n_shards)}
    for name in os.listdir(out_dir):
        ours = name.startswith("shard-") or name.startswith(MANIFEST)
        if ours and name not in listed and name != MANIFEST and (name.endswith(".npy") or name.endswith(".tmp")):
            os.remove(os.path.join(out_dir, name))
    return GridShards(out_dir)


# ----------------------------------------------------------------------------------------------
# Reading


class GridShards:
    """The features written by write_features, memory-mapped.

    g[i] -> float16 [N, C] (an int, like a tensor); g[a:b:s], g[index array / list / tensor]
    (any order, repeats allowed) -> float16 [b, N, C]. Each access copies the rows it names
    out of the page cache into a new tensor; `.float()` it for compute.
    """

    def __init__(self, out_dir: str):
        self.out_dir = os.fspath(out_dir)
        path = os.path.join(self.out_dir, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: no features were written to {self.out_dir} "
                                    f"(write them with write_features)")
        manifest = _read_manifest(self.out_dir)
        if manifest is None:
            raise ValueError(f"{path} is not valid JSON")
        if not manifest.get("complete"):
            raise ValueError(f"{path}: the extraction is incomplete ({len(manifest.get('shards', []))} shards of "
                             f"{manifest.get('count')} images written); rerun write_features to finish it")
        if manifest.get("dtype") != DTYPE:
            raise ValueError(f"{path}: dtype {manifest.get('dtype')!r}, expected {DTYPE!r}")
        self.count, self.tokens, self.channels = manifest["count"], manifest["tokens"], manifest["channels"]
        self._shards = []
        for s in manifest["shards"]:
            a = np.load(os.path.join(self.out_dir, s["file"]), mmap_mode="r")
            if a.dtype != np.float16 or a.shape != (s["rows"], self.tokens, self.channels):
                raise ValueError(f"{s['file']} in {self.out_dir}: {a.dtype} {a.shape}, manifest says "
                                 f"float16 {(s['rows'], self.tokens, self.channels)}")
            self._shards.append(a)
        rows = np.array([len(a) for a in self._shards], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(rows)])  # shard k holds [starts[k], starts[k+1])
        if self._starts[-1] != self.count:
            raise ValueError(f"{path}: shards hold {self._starts[-1]} rows, count is {self.count}")

    # Pickled (e.g. into DataLoader workers) as the folder name, reopened on arrival: the maps
    # themselves would otherwise be copied as arrays.
    def __getstate__(self) -> dict:
        return {"out_dir": self.out_dir}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["out_dir"])

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.count, self.tokens, self.channels

    def __repr__(self) -> str:
        return f"GridShards({self.out_dir!r}, shape={self.shape}, shards={len(self._shards)})"

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0
                                                    and not index.is_floating_point()):
            i = int(index)
            if not -self.count <= i < self.count:
                raise IndexError(f"index {i} out of range for {self.count} images")
            return self._rows(np.array([i % self.count], np.int64))[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(self.count)
            if step == 1:
                return self._range(start, max(start, stop))
            return self._rows(np.arange(start, stop, step, dtype=np.int64))
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        idx = np.asarray(index)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise TypeError(f"GridShards index must be an int, a slice or a 1-D integer array, "
                            f"got {type(index).__name__} {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -self.count or idx.max() >= self.count):
            bad = idx[(idx < -self.count) | (idx >= self.count)][0]
            raise IndexError(f"index {bad} out of range for {self.count} images")
        return self._rows(np.where(idx < 0, idx + self.count, idx))

    def _range(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1: one contiguous copy per shard they span."""
        out = np.empty((stop - start, self.tokens, self.channels), np.float16)
        k = int(np.searchsorted(self._starts, start, side="right")) - 1  # the shard holding `start`
        done = 0
        while start + done < stop:
            lo, hi = self._starts[k], self._starts[k + 1]
            take = min(stop, hi) - (start + done)
            out[done:done + take] = self._shards[k][start + done - lo:start + done - lo + take]
            done += take
            k += 1
        return torch.from_numpy(out)

    def _rows(self, idx: np.ndarray) -> torch.Tensor:
        """Rows idx (in range, any order, repeats): sorted once, then one gather per shard in
        ascending row order (sequential reads of each map)."""
        out = np.empty((len(idx), self.tokens, self.channels), np.float16)
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        bounds = np.searchsorted(rows, self._starts)  # rows[bounds[k]:bounds[k+1]] lie in shard k
        for k, shard in enumerate(self._shards):
            a, b = bounds[k], bounds[k + 1]
            if a < b:
                out[order[a:b]] = shard[rows[a:b] - self._starts[k]]
        return torch.from_numpy(out)
