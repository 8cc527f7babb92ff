"""Decoded images kept for the next trial in the same process (a sweep that reuses trial processes).

On a generated stand-in for Oxford-IIIT Pet (benchmarks/gpu.py's, 500 x 375 JPEGs), times the first epoch
(training and evaluation) of three trials of the default small CNN in one process, one after another: the
first decodes every image, the second starts with the images the first kept (``data.memory_cache_mb``), the
third decodes again as a trial in a fresh process would (the kept set dropped). Prints the times and the
ratio kept / decoded measured in this run.

    .venv/bin/python benchmarks/kept_images.py [--per-class 20] [--size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from gpu import fake_pets  # benchmarks/gpu.py, beside this script

from tune_attn.config import load_config
from tune_attn.data import folders
from tune_attn.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]


def first_epoch(root: Path, size: int) -> float:
    """Seconds from the trial's data set up to the end of its first epoch's evaluation."""
    cfg = load_config(
        ROOT / "configs" / "default.yaml",
        [f"data.root={root}", "data.name=pets", f"data.image_size={size}", "train.device=cpu"],
    )
    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.train_epoch()
    trainer.evaluate()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a trial with one CPU
    with tempfile.TemporaryDirectory() as tmp:
        root = fake_pets(Path(tmp) / "pets", args.per_class)
        decoded = first_epoch(root, args.size)
        kept = first_epoch(root, args.size)
        folders._kept = None  # what a fresh process has
        again = first_epoch(root, args.size)
    n = 37 * args.per_class
    print(f"{n} images at {args.size} px, first epoch (train + evaluate), one thread:")
    print(
        f"trial 1, decodes: {decoded:.1f} s; trial 2, images kept: {kept:.1f} s; trial 3, decodes: {again:.1f} s"
    )
    print(f"ratio kept / decoded (trial 2 / mean of 1 and 3): {kept / ((decoded + again) / 2):.2f}")


if __name__ == "__main__":
    main()
