"""Mask statistics: pure functions on arrays (numpy; torch tensors are accepted and converted).

Masks have shape (N, heads, h, w) and are non-negative, in any activation's scale. Every statistic that
speaks of *where* a mask looks uses the mask normalised to a distribution over the h x w cells, so
sigmoid, ReLU and softmax masks are compared on the same footing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPS = 1e-12


def as_masks(masks: Any) -> np.ndarray:
    """(N, heads, h, w) float64 array from numpy or torch input; raises ValueError on a wrong shape."""
    if hasattr(masks, "detach"):
        masks = masks.detach().float().cpu().numpy()
    arr = np.asarray(masks, dtype=np.float64)
    if arr.ndim != 4:
        raise ValueError(f"masks: shape {arr.shape}; expected (N, heads, h, w)")
    if min(arr.shape) < 1:
        raise ValueError(f"masks: shape {arr.shape} has an empty axis")
    return arr


def region_masks(h: int, w: int) -> dict[str, np.ndarray]:
    """Boolean (h, w) masks of the corner cells (a k x k block in each corner, k = max(1, min(h, w) // 4))
    and of the border ring (the outer row / column of cells)."""
    corner = np.logical_or.reduce(corner_blocks(h, w))
    border = np.zeros((h, w), dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    return {"corner": corner, "border": border}


def corner_blocks(h: int, w: int) -> list[np.ndarray]:
    """The four corner blocks (k x k cells, k = max(1, min(h, w) // 4)) one by one, as boolean (h, w) masks."""
    k = max(1, min(h, w) // 4)
    blocks = []
    for rows in (slice(0, k), slice(h - k, h)):
        for cols in (slice(0, k), slice(w - k, w)):
            block = np.zeros((h, w), dtype=bool)
            block[rows, cols] = True
            blocks.append(block)
    return blocks


def pool_to_grid(masks: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-average (..., H, W) pixel masks onto an h x w grid of cells (cell i covers pixels
    [i H / h, (i + 1) H / h)), giving the covered fraction of each cell."""
    arr = np.asarray(masks, dtype=np.float64)
    big_h, big_w = arr.shape[-2:]
    rows = np.floor(np.arange(h) * big_h / h).astype(np.int64)
    cols = np.floor(np.arange(w) * big_w / w).astype(np.int64)
    sums = np.add.reduceat(np.add.reduceat(arr, rows, axis=-2), cols, axis=-1)
    counts = np.outer(np.diff(np.append(rows, big_h)), np.diff(np.append(cols, big_w)))
    return sums / counts


def distributions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each mask as a distribution over its cells, (N, heads, h * w), and a (N, heads) flag of masks whose
    total is zero (those get the uniform distribution)."""
    flat = np.clip(masks.reshape(masks.shape[0], masks.shape[1], -1), 0.0, None)
    total = flat.sum(-1, keepdims=True)
    dead = total[..., 0] <= EPS
    p = np.where(total > EPS, flat / np.maximum(total, EPS), 1.0 / flat.shape[-1])
    return p, dead


@dataclass
class MaskStats:
    """Statistics of a batch of masks.

    ``summary`` holds floats averaged over samples and heads; ``per_head`` the same figures per head,
    shape (heads,); ``coverage`` the (heads, parts) share of each head's mass on each ground-truth part.
    """

    summary: dict[str, float]
    per_head: dict[str, np.ndarray] = field(default_factory=dict)
    coverage: np.ndarray | None = None
    part_names: tuple[str, ...] = ()

    def flat(self, prefix: str = "mask.") -> dict[str, float]:
        """Scalar metrics with stable keys, e.g. ``mask.entropy``, ``mask.coverage.h0.ears``."""
        out = {f"{prefix}{k}": float(v) for k, v in self.summary.items()}
        if self.coverage is not None:
            for k in range(self.coverage.shape[0]):
                for j, part in enumerate(self.part_names):
                    out[f"{prefix}coverage.h{k}.{part}"] = float(self.coverage[k, j])
        return out


def mask_statistics(
    masks: Any,
    objects: np.ndarray | None = None,
    parts: np.ndarray | None = None,
    part_names: Sequence[str] = (),
) -> MaskStats:
    """Statistics of masks (N, heads, h, w), with optional ground truth on the same h x w grid:
    ``objects`` (N, h, w) and ``parts`` (N, P, h, w), each the covered fraction of a cell in [0, 1].

    Summary keys:
      mean, max         the raw mask values (activation scale), averaged
      contrast          coefficient of variation of each mask over its cells / sqrt(h w - 1): 0 flat, 1 one cell
      entropy           entropy of the normalised mask / log(h w): 1 flat, 0 one cell
      peak_mass         share of the mass in the single highest cell
      corner_mass       share of the mass in the corner cells; corner_uniform is that share for a flat mask
      corners_used      how many of the four corner blocks hold at least 10 % of the mass (mean over masks)
      border_mass       share of the mass in the border ring; border_uniform likewise
      dead_fraction     share of masks whose values are all ~0
      input_variation   mean total-variation distance between a sample's mask and the mean mask (0 static)
      head_overlap      mean histogram intersection between the heads' masks (1 identical; 0 with one head)
      object_mass       share of the mass on the object, object_area its share of the image,
      object_lift       object_mass / object_area (1 = no better than flat)
    """
    m = as_masks(masks)
    n, heads, h, w = m.shape
    cells = h * w
    p, dead = distributions(m)  # (N, heads, hw)
    flat_raw = m.reshape(n, heads, cells)
    per: dict[str, np.ndarray] = {}
    per["mean"] = flat_raw.mean(axis=(0, 2))
    per["max"] = flat_raw.max(axis=2).mean(axis=0)
    cv = p.std(-1) / np.maximum(p.mean(-1), EPS)
    per["contrast"] = (cv / np.sqrt(max(cells - 1, 1))).mean(0)
    ent = -(p * np.log(np.maximum(p, EPS))).sum(-1) / np.log(max(cells, 2))
    per["entropy"] = ent.mean(0)
    per["peak_mass"] = p.max(-1).mean(0)
    regions = region_masks(h, w)
    for name, region in regions.items():
        per[f"{name}_mass"] = p[..., region.reshape(-1)].sum(-1).mean(0)
    block_mass = np.stack([p[..., b.reshape(-1)].sum(-1) for b in corner_blocks(h, w)], -1)  # (N, heads, 4)
    per["corners_used"] = (block_mass >= 0.1).sum(-1).mean(0).astype(np.float64)
    per["dead_fraction"] = dead.mean(0).astype(np.float64)
    mean_p = p.mean(0, keepdims=True)
    per["input_variation"] = 0.5 * np.abs(p - mean_p).sum(-1).mean(0)

    summary = {k: float(v.mean()) for k, v in per.items()}
    for name, region in regions.items():
        summary[f"{name}_uniform"] = float(region.mean())
    if heads > 1:
        inter = [
            np.minimum(p[:, a], p[:, b]).sum(-1).mean() for a in range(heads) for b in range(a + 1, heads)
        ]
        summary["head_overlap"] = float(np.mean(inter))
    else:
        summary["head_overlap"] = 0.0

    coverage = None
    if objects is not None:
        obj = np.asarray(objects, dtype=np.float64).reshape(n, 1, cells)
        per["object_mass"] = (p * obj).sum(-1).mean(0)
        area = float(obj.mean())
        summary["object_mass"] = float(per["object_mass"].mean())
        summary["object_area"] = area
        summary["object_lift"] = summary["object_mass"] / max(area, EPS)
    if parts is not None and len(part_names):
        prt = np.asarray(parts, dtype=np.float64).reshape(n, 1, len(part_names), cells)
        coverage = (p[:, :, None, :] * prt).sum(-1).mean(0)  # (heads, P)
    return MaskStats(summary, per, coverage, tuple(part_names))
