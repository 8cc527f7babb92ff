"""Mask panels and curves: arrays in, PNG out (matplotlib's Agg canvas; no torch, Ray or W&B)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CMAP = "jet"
ALPHA = 0.5


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


def _overlay(ax: Any, image: np.ndarray, mask: np.ndarray) -> None:
    """The image with the mask upsampled over it; colours scaled to the mask's own maximum."""
    size_h, size_w = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    top = float(mask.max())
    ax.imshow(
        mask,
        cmap=CMAP,
        alpha=ALPHA,
        vmin=0.0,
        vmax=top if top > 0 else 1.0,
        extent=(0, size_w, size_h, 0),
        interpolation="bilinear",
    )
    ax.text(
        1,
        size_h - 2,
        f"max {top:.2g}",
        color="white",
        fontsize=6,
        bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
    )


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=fig.dpi)
    tmp.replace(path)  # readers never see half a file
    return path


def _clean(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def mask_panel(
    images: Any,
    masks: Any,
    path: str | Path,
    title: str = "",
    labels: Sequence[str] | None = None,
    head_notes: Sequence[str] | None = None,
) -> Path:
    """One row per sample: the image, then each head's mask over it. masks: (n, heads, h, w).

    ``head_notes`` (one short string per head, e.g. its main part) go under the column titles.
    """
    imgs = _as_images(images)
    m = np.asarray(masks, dtype=np.float64)
    if m.ndim != 4 or m.shape[0] != imgs.shape[0]:
        raise ValueError(
            f"masks: shape {m.shape}; expected ({imgs.shape[0]}, heads, h, w) to match the images"
        )
    n, heads = m.shape[:2]
    cell = 1.3
    top_in = 0.95 if head_notes is not None else 0.75  # room for the title (and the notes)
    fig = Figure(figsize=(cell * (heads + 1), cell * n + top_in + 0.15), dpi=90)
    axes = fig.subplots(n, heads + 1, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(imgs[i], interpolation="nearest")
        if labels is not None:
            axes[i, 0].set_ylabel(labels[i], fontsize=6)
        for k in range(heads):
            _overlay(axes[i, k + 1], imgs[i], m[i, k])
        for ax in axes[i]:
            _clean(ax)
    axes[0, 0].set_title("image", fontsize=7)
    for k in range(heads):
        note = f"\n{head_notes[k]}" if head_notes is not None else ""
        axes[0, k + 1].set_title(f"head {k}{note}", fontsize=6)
    fig.suptitle(title, fontsize=7)
    fig.subplots_adjust(
        left=0.08,
        right=0.99,
        bottom=0.01,
        top=1 - top_in / (cell * n + top_in + 0.15),
        wspace=0.04,
        hspace=0.08,
    )
    return _save(fig, path)


def timeline(image: Any, masks: Any, epochs: Sequence[int], path: str | Path, title: str = "") -> Path:
    """One sample's masks across epochs: a row per head, a column per epoch. masks: (E, heads, h, w)."""
    img = _as_images(np.asarray(image)[None])[0]
    m = np.asarray(masks, dtype=np.float64)
    if m.ndim != 4 or m.shape[0] != len(epochs):
        raise ValueError(f"masks: shape {m.shape}; expected ({len(epochs)}, heads, h, w), one per epoch")
    e, heads = m.shape[:2]
    cell = 1.1
    fig = Figure(figsize=(cell * (e + 1), cell * heads + 0.6), dpi=90)
    axes = fig.subplots(heads, e + 1, squeeze=False)
    for k in range(heads):
        axes[k, 0].imshow(img, interpolation="nearest")
        axes[k, 0].set_ylabel(f"head {k}", fontsize=7)
        for j in range(e):
            _overlay(axes[k, j + 1], img, m[j, k])
        for ax in axes[k]:
            _clean(ax)
    axes[0, 0].set_title("image", fontsize=7)
    for j, ep in enumerate(epochs):
        axes[0, j + 1].set_title(f"epoch {ep}", fontsize=7)
    fig.suptitle(title, fontsize=7)
    fig.subplots_adjust(
        left=0.06, right=0.99, bottom=0.01, top=1 - 0.45 / (cell * heads + 0.6), wspace=0.04, hspace=0.06
    )
    return _save(fig, path)


def curves(history: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Training curves from per-epoch metric dicts: losses, validation accuracy, and mask figures."""
    epochs = [int(h["epoch"]) for h in history]
    fig = Figure(figsize=(9, 2.8), dpi=90)
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
    fig.tight_layout()
    return _save(fig, path)
