"""Training data: rendered scenes held in memory, cached on disk, and turned into batches.

A split is rendered once (at 256 pixels, as the PNG files of `scenes`, then resized to the
model's input size with PIL bicubic, as docs/FORMAT.md step 1 does) and cached as
`<cache>/<split>-<seed>-<count>-<size>.npz`.

Also here: the two-stream caption batches of the masked-token objective (see `caption_batch`)
and the region/concept labels of the concept extractor (`region_labels`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import scenes as S
from .model import MASK_VALUE

#: Family weights when sampling one of the five reference captions for training. The
#: "primary" family of a scene (the one that names every attribute, and the relation for
#: two objects) is drawn with probability PRIMARY_WEIGHT, each other family shares the rest:
#: greedy decoding then says the most informative caption (see docs/RESULTS.md).
PRIMARY_WEIGHT = 0.6

#: Bump when the renderer changes: cached splits of another version are not reused.
RENDER_VERSION = 2


def primary_family(num_objects: int) -> int:
    """0-based family: 1 object -> `a {size} {colour} {shape}`, 2 -> `a {A} {relation} a {B}`,
    3-4 -> `{n} shapes: a {A}, ...`."""
    return 1 if num_objects == 2 else 0


@dataclass
class Split:
    images: np.ndarray  # uint8 [n, S, S, 3]
    captions: list[list[str]]  # five per image, family order
    objects: list[dict]  # scenes.scene_metadata of each image (pixel units of the 256 render)

    def __len__(self) -> int:
        return len(self.images)


def _render_one(args):
    split, seed, index, size = args
    scene, image, caps = S.make_scene(split, seed, index, 256)
    if size != 256:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return image, caps, S.scene_metadata(scene, index, f"{index:06d}.png")


def render_split(split: str, seed: int, count: int, size: int, workers: int = 1) -> Split:
    jobs = [(split, seed, i, size) for i in range(count)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            out = pool.map(_render_one, jobs, chunksize=64)
    else:
        out = [_render_one(j) for j in jobs]
    images = np.stack([o[0] for o in out])
    return Split(images, [o[1] for o in out], [o[2] for o in out])


def load_split(split: str, seed: int, count: int, size: int, cache_dir: str,
               workers: int = 1, log=print) -> Split:
    """The split from the cache, rendering (and caching) it first if needed."""
    path = os.path.join(cache_dir, f"{split}-{seed}-{count}-{size}-r{RENDER_VERSION}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return Split(z["images"], meta["captions"], meta["objects"])
    log(f"data: rendering {count} {split} scenes (seed {seed}, {size} px) ...")
    data = render_split(split, seed, count, size, workers)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, images=data.images,
             meta=json.dumps({"captions": data.captions, "objects": data.objects}))
    os.replace(tmp, path)
    return data


def normalize(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> float [B, 3, S, S], (x/255 - mean) / std, channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x.contiguous(memory_format=torch.channels_last)


def sample_captions(data: Split, indices, rng: np.random.Generator,
                    primary_weight: float = PRIMARY_WEIGHT) -> list[str]:
    """One reference caption per image; the primary family with `primary_weight`."""
    out = []
    for i in indices:
        p = np.full(5, (1 - primary_weight) / 4)
        p[primary_family(len(data.objects[i]["objects"]))] = primary_weight
        out.append(data.captions[i][rng.choice(5, p=p)])
    return out


# ----------------------------------------------------------------------------------------------
# The two-stream masked-token objective


@dataclass
class CaptionBatch:
    token_ids: torch.Tensor  # [B, T] caption segment (A) + concept segment + mask stream (M)
    type_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T+N, T+N] additive
    query_rows: torch.Tensor  # [B, M] rows of the mask stream in the sequence
    targets: torch.Tensor  # [B, M] token to predict at each mask query, -100 = none


def caption_batch(model, caption_ids: list[list[int]], concept_ids: torch.Tensor | None) -> CaptionBatch:
    """Inputs on which one forward pass trains every next-token prediction of greedy decoding.

    docs/FORMAT.md decodes with `[CLS] t1 .. t(p-1) [MASK]`, the [MASK] at position p. Here the
    caption segment `[CLS] t1 .. tn [SEP]` (positions 0..A-1) is followed, after the concept
    segment, by a mask stream: one [MASK] per position p = 1..n+1 (position id p, type 0),
    whose query sees the caption keys 0..p-1, the concept and visual keys and itself only.
    Caption, concept and visual rows see exactly what they see while decoding (the caption
    is causal and nothing else looks at the caption or the mask stream), so the hidden state
    of the mask at p equals the decoder's state at the [MASK] after the prefix t1..t(p-1):
    an exact, all-tokens version of OSCAR's masked-token training.
    """
    cfg = model.config
    a = cfg.decoding.caption_segment_length
    segment = model.caption_segment(caption_ids, "sep")  # [B, A]
    token_ids, type_ids, position_ids, base_mask = model.build_inputs(segment, concept_ids)
    b, t = token_ids.shape
    n = cfg.num_visual_tokens
    m = max(len(c) for c in caption_ids) + 1  # mask queries: positions 1..len+1
    lengths = torch.tensor([len(c) for c in caption_ids])  # [B]
    p = torch.arange(1, m + 1)  # [M] position of each mask query
    valid = p[None, :] <= lengths[:, None] + 1  # [B, M]
    stream = torch.where(valid, model.mask_id, model.pad_id)  # [B, M]
    targets = torch.where(valid, segment[:, 1:m + 1], -100)  # [B, M]: t_p, or [SEP] at n+1

    token_ids = torch.cat([token_ids, stream], 1)  # [B, T+M]
    type_ids = torch.cat([type_ids, torch.zeros(b, m, dtype=torch.long)], 1)
    position_ids = torch.cat([position_ids, p.expand(b, m)], 1)
    total = t + m + n
    # Rebuild the mask with the stream inserted between the text (T) and the visual (N) keys.
    blocked = MASK_VALUE
    mask = torch.full((b, total, total), blocked)
    text, vis = slice(0, t), slice(t + m, total)
    mask[:, text, text] = base_mask[:, :t, :t]
    mask[:, text, vis] = base_mask[:, :t, t:]
    mask[:, vis, text] = base_mask[:, t:, :t]
    mask[:, vis, vis] = base_mask[:, t:, t:]
    # Mask queries: caption keys j < p that are real tokens, concept + visual keys, themselves.
    caption_key_ok = segment != model.pad_id  # [B, A]
    sees_caption = (torch.arange(a)[None, :] < p[:, None])[None] & caption_key_ok[:, None, :]  # [B, M, A]
    stream_rows = slice(t, t + m)
    zero = torch.zeros(())
    mask[:, stream_rows, :a] = torch.where(sees_caption, zero, blocked)
    other_ok = base_mask[:, a, :]  # row of the first concept query: what concept/visual rows see
    mask[:, stream_rows, a:t] = other_ok[:, None, a:t]
    mask[:, stream_rows, vis] = other_ok[:, None, t:]
    eye = torch.eye(m, dtype=torch.bool)
    mask[:, stream_rows, stream_rows] = torch.where(eye, zero, blocked)
    query_rows = torch.arange(t, t + m).expand(b, m)
    return CaptionBatch(token_ids, type_ids, position_ids, mask, query_rows, targets)


# ----------------------------------------------------------------------------------------------
# Region / concept labels for the concept extractor


def window_boxes(windows, grid_side: int, image_side: float) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) in pixels of every region, in the extractor's order (docs/FORMAT.md 3)."""
    cell = image_side / grid_side
    boxes = []
    for n in windows:
        spans = [(i * grid_side // n, -(-(i + 1) * grid_side // n)) for i in range(n)]
        for y0, y1 in spans:
            for x0, x1 in spans:
                boxes.append((x0 * cell, y0 * cell, x1 * cell, y1 * cell))
    return boxes


def region_labels(meta: dict, boxes, concepts: list[str]) -> np.ndarray:
    """Multi-hot [R, K]: a region is labelled with the background, with the shape, colour and
    size of every object whose centre lies in it, and, if it holds the centres of both of the
    two leftmost objects, with the words of their relation (left/right or above/below)."""
    index = {c: i for i, c in enumerate(concepts)}
    labels = np.zeros((len(boxes), len(concepts)), dtype=np.float32)
    objs = meta["objects"]
    inside = lambda o, b: b[0] <= o["centre"][0] < b[2] and b[1] <= o["centre"][1] < b[3]
    for r, box in enumerate(boxes):
        labels[r, index[meta["background"]]] = 1
        for o in objs:
            if inside(o, box):
                for word in (o["shape"], o["colour"], o["size"]):
                    labels[r, index[word]] = 1
        if len(objs) >= 2 and inside(objs[0], box) and inside(objs[1], box):
            dx = objs[0]["centre"][0] - objs[1]["centre"][0]
            dy = objs[0]["centre"][1] - objs[1]["centre"][1]
            words = ("left", "right") if abs(dx) > abs(dy) else ("above", "below")
            for w in words:
                labels[r, index[w]] = 1
    return labels
