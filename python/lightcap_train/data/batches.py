"""Batches for the fusion models, whatever the data set: pixels to the CLIP input, the
two-stream caption batch of the masked-token objective (`caption_batch`) and the regions of the
concept extractor (`window_boxes`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from lightcap_train.reference.model import MASK_VALUE


def normalize(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> float [B, 3, S, S], (x/255 - mean) / std, channels_last."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x.contiguous(memory_format=torch.channels_last)


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

    def to(self, device) -> "CaptionBatch":
        return CaptionBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


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
# Regions of the concept extractor


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
