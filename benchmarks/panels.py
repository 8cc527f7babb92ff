"""Panel drawing per epoch: the mask panel, the timeline and the curves a run folder gets every epoch.

Times the three pictures at epochs 3, 16 and 30 (the timeline shows at most 16 epochs) for the default
model (64 px images, 8 x 8 masks) and the pets one (224 px, 7 x 7), 4 samples x 4 heads, with PNGs written
at zlib level 1 (``panels.PNG_LEVEL``) and at 6 (matplotlib's default), alternating, best of ``--rounds``.
Prints the milliseconds and, measured in this run, the ratio level 1 / level 6 and epoch 30 / epoch 3.

    .venv/bin/python benchmarks/panels.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tune_attn import panels


def draw_epoch(d: Path, images: np.ndarray, masks: np.ndarray, epoch: int) -> None:
    """What RunWriter.write_epoch draws at ``epoch`` (masks: (epochs, samples, heads, h, w))."""
    rows = [
        {
            "epoch": e,
            "train_loss": 2 / e,
            "val_loss": 2.1 / e,
            "val_accuracy": 0.9 - 0.8 / e,
            "mask.entropy": 0.6,
        }
        for e in range(1, epoch + 1)
    ]
    panels.mask_panel(images, masks[epoch - 1], d / "panel.png", "epoch | val acc\nentropy | contrast")
    panels.timeline(images[0], masks[:epoch, 0], list(range(1, epoch + 1)), d / "timeline.png", "sample 0")
    panels.curves(rows, d / "curves.png", "trial_00000/run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label, size, grid in (("default, 64 px", 64, 8), ("pets, 224 px", 224, 7)):
            # smooth photo-like images and masks (noise would not compress at any level)
            yy, xx = np.mgrid[0:size, 0:size] / size
            images = np.stack(
                [np.stack([np.sin(6 * xx + k), np.cos(5 * yy - k), xx * yy], -1) for k in range(4)]
            )
            images = ((images - images.min()) / np.ptp(images) * 255).astype(np.uint8)  # (4, S, S, 3)
            masks = rng.random((30, 4, 4, grid, grid)) ** 4  # (epochs, samples, heads, h, w)
            ms: dict[tuple[int, int], float] = {}
            for level in (1, 6) * args.rounds:
                panels.PNG_LEVEL = level
                for epoch in (3, 16, 30):
                    start = time.perf_counter()
                    draw_epoch(Path(tmp), images, masks, epoch)
                    took = (time.perf_counter() - start) * 1e3
                    ms[level, epoch] = min(ms.get((level, epoch), took), took)
            for level in (1, 6):
                cells = ", ".join(f"epoch {e} {ms[level, e]:.0f} ms" for e in (3, 16, 30))
                print(f"{label}, PNG level {level}: mask panel + timeline + curves: {cells}")
            ratio = sum(ms[1, e] for e in (3, 16, 30)) / sum(ms[6, e] for e in (3, 16, 30))
            print(
                f"{label}: ratio level 1 / level 6 {ratio:.2f}; epoch 30 / epoch 3 {ms[1, 30] / ms[1, 3]:.2f}"
            )


if __name__ == "__main__":
    main()
