"""Mask panels and curves: arrays in, PNG out (matplotlib's Agg canvas; no torch, Ray or W&B)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

CMAP = "jet"
ALPHA = 0.5
DPI = 90
PANEL_CELL = 1.3  # inches per tile: mask panel
TIMELINE_CELL = 1.0  # inches per tile: timeline
PNG_LEVEL = 1
"""zlib level of the PNGs: 1 drew an epoch's pictures in 0.75-0.81 of the time of matplotlib's 6, for files
~11 % larger (the main sweep's panels; benchmarks/panels.py, docs/benchmarks.md)."""


def _as_images(images: Any) -> np.ndarray:
    """(n, S, S, 3) float in [0, 1] from uint8 or float, channels-last or channels-first."""
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"images: shape {arr.shape}; expected (n, S, S, 3) or (n, 3, S, S)")
    if arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] != 3:
        raise ValueError(f"images: shape {arr.shape}; expected 3 colour channels")
    arr = arr.astype(np.float64)
    if arr.max(initial=0.0) > 1.0:
        arr = arr / 255.0
    return np.clip(arr, 0.0, 1.0)


def _fit(images: np.ndarray, cell: float) -> np.ndarray:
    """(n, H, W, 3) images shrunk (box filter) to the pixels a tile of ``cell`` inches has; smaller ones
    unchanged. A 224 px image drawn in a 117 px tile loses nothing, and its overlays cost a quarter."""
    side = round(cell * DPI)
    h, w = images.shape[1:3]
    if max(h, w) <= side:
        return images
    size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))  # PIL: (width, height)
    out = [
        np.asarray(
            Image.fromarray((img * 255).round().astype(np.uint8)).resize(size, Image.Resampling.BOX),
            dtype=np.float64,
        )
        / 255.0
        for img in images
    ]
    return np.stack(out)


def _upsample(mask: np.ndarray, size_h: int, size_w: int) -> np.ndarray:
    """Bilinear upsampling of one (h, w) mask to (size_h, size_w)."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32), mode="F")
    return np.asarray(im.resize((size_w, size_h), Image.Resampling.BILINEAR), dtype=np.float64)


def value_range(mask: np.ndarray) -> str:
    """A mask's lowest and highest value, ``0.74–0.85`` (``0–0.15`` when the lowest is under a thousandth of the
    highest, as a softmax's is): the caption of its tile in a panel. Colours run from 0 to the highest value, so
    a shallow mask (a sigmoid at 0.74 to 0.85 everywhere: ``flat``) still shows where it is highest; the
    caption says how little that is."""
    lo, hi = float(mask.min()), float(mask.max())
    return f"{'0' if lo <= 1e-3 * abs(hi) else f'{lo:.2g}'}\u2013{hi:.2g}"


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image (S, S, 3) in [0, 1] with the mask's heat map blended over it; colours scaled to the
    mask's own maximum (so the picture shows where the mask looks, the caption how strong it is)."""
    top = float(mask.max())
    scaled = _upsample(mask / top if top > 0 else mask, *image.shape[:2])
    heat = colormaps[CMAP](np.clip(scaled, 0.0, 1.0))[..., :3]
    return (1 - ALPHA) * image + ALPHA * heat


MASK_LEVELS = {0: "< 25% of the head's max", 1: "25-50%", 2: "50-75%", 3: ">= 75% of the head's max"}


def mask_levels(mask: np.ndarray, size_h: int, size_w: int) -> np.ndarray:
    """One (h, w) mask upsampled to (size_h, size_w) and cut into the 4 classes of :data:`MASK_LEVELS`
    (quarters of its own maximum), as uint8: a segmentation that W&B overlays and toggles per head."""
    top = float(mask.max())
    scaled = _upsample(mask / top if top > 0 else np.zeros_like(mask), size_h, size_w)
    return np.clip(np.floor(scaled * 4), 0, 3).astype(np.uint8)


def _grid(tiles: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tiles (rows of equal-size RGB arrays) laid out on a white canvas."""
    th, tw = tiles[0][0].shape[:2]
    rows, cols = len(tiles), max(len(r) for r in tiles)
    canvas = np.ones((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3))
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            canvas[i * (th + gap) : i * (th + gap) + th, j * (tw + gap) : j * (tw + gap) + tw] = tile
    return canvas


def _figure(
    tiles: list[list[np.ndarray]],
    captions: dict[tuple[int, int], str],
    col_titles: Sequence[str],
    row_titles: Sequence[str],
    title: str,
    path: str | Path,
    cell: float = PANEL_CELL,
) -> Path:
    """One image of all tiles, with column / row titles and a small caption in the corner of some tiles."""
    canvas = _grid(tiles)
    th, tw = tiles[0][0].shape[:2]
    rows, cols = len(tiles), max(len(r) for r in tiles)
    title_lines = title.count("\n") + 1 if title else 0
    col_lines = max((t.count("\n") + 1 for t in col_titles), default=0)
    top_in = 0.14 * (title_lines + col_lines) + 0.1
    left_in = 0.25 if any(row_titles) else 0.05
    fig_w = max(cell * cols + left_in + 0.05, 0.06 * max(len(line) for line in title.split("\n")) + 0.2)
    fig_h = cell * rows + top_in + 0.05
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    left = left_in + (fig_w - cell * cols - left_in - 0.05) / 2  # centred when the title is wider
    ax = fig.add_axes((left / fig_w, 0.05 / fig_h, cell * cols / fig_w, cell * rows / fig_h))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for j, text in enumerate(col_titles):
        ax.text(j * (tw + 2) + tw / 2, -2, text, ha="center", va="bottom", fontsize=6)
    for i, text in enumerate(row_titles):
        ax.text(-2, i * (th + 2) + th / 2, text, ha="right", va="center", rotation=90, fontsize=6)
    for (i, j), text in captions.items():
        ax.text(
            j * (tw + 2) + 1,
            i * (th + 2) + th - 1,
            text,
            color="white",
            fontsize=5,
            va="bottom",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "linewidth": 0},
        )
    if title:
        fig.text(0.5, 1 - 0.04 / fig_h, title, ha="center", va="top", fontsize=7)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=fig.dpi, pil_kwargs={"compress_level": PNG_LEVEL})
    tmp.replace(path)  # readers never see half a file
    return path


def mask_panel(
    images: Any,
    masks: Any,
    path: str | Path,
    title: str = "",
    labels: Sequence[str] | None = None,
    head_notes: Sequence[str] | None = None,
) -> Path:
    """One row per sample: the image, then each head's mask over it. masks: (n, heads, h, w).

    ``labels`` (one per sample) go beside the rows; ``head_notes`` (one short string per head, e.g. its
    main part) under the column titles.
    """
    imgs = _fit(_as_images(images), PANEL_CELL)  # (n, s, s, 3)
    m = np.asarray(masks, dtype=np.float64)
    if m.ndim != 4 or m.shape[0] != imgs.shape[0]:
        raise ValueError(
            f"masks: shape {m.shape}; expected ({imgs.shape[0]}, heads, h, w) to match the images"
        )
    n, heads = m.shape[:2]
    tiles = [[imgs[i]] + [overlay(imgs[i], m[i, k]) for k in range(heads)] for i in range(n)]
    captions = {(i, k + 1): value_range(m[i, k]) for i in range(n) for k in range(heads)}
    notes = [f"\n{t}" for t in head_notes] if head_notes is not None else [""] * heads
    col_titles = ["image"] + [f"head {k}{notes[k]}" for k in range(heads)]
    return _figure(tiles, captions, col_titles, list(labels or []), title, path)


def timeline(
    image: Any,
    masks: Any,
    epochs: Sequence[int],
    path: str | Path,
    title: str = "",
    max_columns: int = 16,
) -> Path:
    """One sample's masks across epochs: a row per head, a column per epoch. masks: (E, heads, h, w).

    Past ``max_columns`` epochs it shows that many, evenly spread, the first and the latest always: the
    picture stays readable and costs the same at epoch 30 as at epoch 16."""
    img = _fit(_as_images(np.asarray(image)[None]), TIMELINE_CELL)[0]  # (s, s, 3)
    m = np.asarray(masks, dtype=np.float64)
    if m.ndim != 4 or m.shape[0] != len(epochs):
        raise ValueError(f"masks: shape {m.shape}; expected ({len(epochs)}, heads, h, w), one per epoch")
    if max_columns < 2:
        raise ValueError(f"max_columns: {max_columns}; expected at least 2 (the first and the latest epoch)")
    keep = timeline_columns(len(epochs), max_columns)
    m, shown = m[keep], [epochs[i] for i in keep]  # (E', heads, h, w)
    e, heads = m.shape[:2]
    tiles = [[img] + [overlay(img, m[j, k]) for j in range(e)] for k in range(heads)]
    captions = {(k, j + 1): f"{m[j, k].max():.2g}" for k in range(heads) for j in range(e)}
    col_titles = ["image"] + [f"ep {ep}" for ep in shown]
    return _figure(
        tiles, captions, col_titles, [f"head {k}" for k in range(heads)], title, path, cell=TIMELINE_CELL
    )


def timeline_columns(n: int, max_columns: int) -> list[int]:
    """Which of ``n`` epochs (indices) a timeline of at most ``max_columns`` columns shows: all of them, or
    ``max_columns`` evenly spread from the first to the latest."""
    if n <= max_columns:
        return list(range(n))
    return sorted({round(i * (n - 1) / (max_columns - 1)) for i in range(max_columns)})


def curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training curves from per-epoch metric dicts: losses, validation accuracy, and mask figures."""
    epochs = [int(h["epoch"]) for h in history]
    fig = Figure(figsize=(9, 2.8), dpi=DPI)
    ax_loss, ax_acc, ax_mask = fig.subplots(1, 3)

    def plot(ax: Any, key: str, label: str) -> None:
        ys = [h.get(key, np.nan) for h in history]
        ax.plot(epochs, ys, marker="o", markersize=3, label=label)

    plot(ax_loss, "train_loss", "train")
    plot(ax_loss, "val_loss", "val")
    ax_loss.set_title("loss", fontsize=8)
    plot(ax_acc, "val_accuracy", "val accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_title("validation accuracy", fontsize=8)
    for key in ("mask.entropy", "mask.corner_mass", "mask.border_mass", "mask.object_mass"):
        if any(key in h for h in history):
            plot(ax_mask, key, key.removeprefix("mask."))
    ax_mask.set_ylim(0, 1)
    ax_mask.set_title("mask statistics", fontsize=8)
    for ax in (ax_loss, ax_acc, ax_mask):
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=8)
    # fixed margins, room for tick labels like 0.0025: tight_layout took a quarter of the drawing time
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.16, top=0.84, wspace=0.25)
    return _save(fig, path)
