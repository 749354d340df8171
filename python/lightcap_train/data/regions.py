"""Dense region supervision of stage 0 from object boxes (COCO instances format).

A small CLIP trained from scratch on image-caption pairs learns colours and layouts long before
it learns what the things are: every caption names every object, but nothing says where. With
boxes, every cell of the visual grid gets a label (the object covering most of it, or
background) and the grid is trained to say what is where, as the scenes' cell loss does.

    boxes = load_instances("instances_train.json")   # image id -> [(category, x0, y0, x1, y1)], 0..1
    regions = BoxRegions(categories)
    targets = regions.targets(metas, grid_side)        # metas: [{"boxes": [...]}] of a batch

The instances file is COCO's object detection format: `images` (id, width, height),
`categories` (id, name) and `annotations` (image_id, category_id, bbox [x, y, w, h] in pixels).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

#: A cell is labelled with the object covering the largest share of it when that share is at
#: least this; the cell holding a box's centre is labelled with it in any case, so that an
#: object smaller than a cell still has one.
MIN_COVER = 0.3


class InstancesError(ValueError):
    """An instances file without the expected structure (the message names the file)."""


def load_instances(path: str) -> tuple[list[str], dict[int, list[tuple[int, float, float, float, float]]]]:
    """(category names in id order, image id -> boxes as (category index, x0, y0, x1, y1) in
    fractions of the image side)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise InstancesError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise InstancesError(f"{path}: not JSON ({e})") from None
    for key in ("images", "categories", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise InstancesError(f"{path}: no list {key!r} (COCO instances format)")
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as e:
        raise InstancesError(f"{path}: a category needs id and name, an image id, width and height ({e})") from None
    index = {cid: k for k, (cid, _) in enumerate(categories)}
    boxes: dict[int, list] = {}
    for n, a in enumerate(data["annotations"]):
        try:
            image, cat = int(a["image_id"]), int(a["category_id"])
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise InstancesError(f"{path}: annotation {n} needs image_id, category_id and bbox [x, y, w, h]") from None
        if image not in sizes or cat not in index:
            raise InstancesError(f"{path}: annotation {n} names an unknown image or category")
        width, height = sizes[image]
        if w <= 0 or h <= 0 or width <= 0 or height <= 0:
            raise InstancesError(f"{path}: annotation {n} has an empty box or its image an empty size")
        boxes.setdefault(image, []).append((index[cat], x / width, y / height, (x + w) / width, (y + h) / height))
    return [name for _, name in categories], boxes


class BoxRegions:
    """Per-cell classification over background + the categories (cross-entropy), the region
    supervision of stage 0 for captioned data that comes with boxes."""

    accuracy_name = "cell_object_acc"

    def __init__(self, categories: list[str]):
        self.categories = list(categories)
        self.outputs = 1 + len(self.categories)

    def targets(self, metas: list[dict], side: int) -> dict[str, torch.Tensor]:
        """{"label": [B, side * side]}: 0 background, 1 + category index of the object that
        covers the largest share of the cell (at least MIN_COVER) or whose box centre it holds."""
        label = torch.zeros(len(metas), side * side, dtype=torch.long)
        edges = torch.arange(side + 1, dtype=torch.float32) / side
        for i, meta in enumerate(metas):
            best = torch.zeros(side, side)
            cells = label[i].view(side, side)
            for cat, x0, y0, x1, y1 in meta["boxes"]:
                wx = (torch.minimum(edges[1:], torch.tensor(x1)) - torch.maximum(edges[:-1], torch.tensor(x0))).clamp(min=0)
                wy = (torch.minimum(edges[1:], torch.tensor(y1)) - torch.maximum(edges[:-1], torch.tensor(y0))).clamp(min=0)
                cover = torch.outer(wy, wx) * side * side  # share of each cell, rows = y
                cy = min(side - 1, int((y0 + y1) / 2 * side))
                cx = min(side - 1, int((x0 + x1) / 2 * side))
                cover[cy, cx] = torch.clamp(cover[cy, cx], min=MIN_COVER)
                take = (cover >= MIN_COVER) & (cover > best)
                cells[take] = 1 + cat
                best = torch.where(take, cover, best)
        return {"label": label}

    def loss(self, out: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """out: [B, N, 1 + K] logits."""
        return F.cross_entropy(out.reshape(-1, self.outputs), t["label"].reshape(-1))

    @torch.no_grad()
    def accuracy(self, out: torch.Tensor, t: dict[str, torch.Tensor]) -> float:
        """Share of object cells whose object is predicted right (progress of stage 0)."""
        labelled = t["label"] > 0
        right = out.argmax(-1)[labelled] == t["label"][labelled]
        return right.float().sum().item() / max(1, int(labelled.sum()))
