"""Reading a large photo for training or predict: JPEG draft decoding (at 1/2, 1/4 or 1/8 scale) against a
full decode, both then resized to the model's input size, as ``tune_attn.data.folders.load_rgb`` does.

Makes a photo-like JPEG of each size given (a smooth picture, upscaled, with noise), reads it ``--repeat``
times each way and prints the time per image and the ratio, measured in this run, and how far the pixels
differ (mean and largest absolute difference, of 255).

    .venv/bin/python benchmarks/decode.py --sizes 4000x3000 1600x1200 500x375 --image-size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tune_attn.data.folders import load_rgb


def full_decode(path: Path, size: int) -> np.ndarray:
    """The reference: every pixel decoded, then resized (load_rgb without the draft)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm: file in the page cache
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["4000x3000", "1600x1200", "500x375"])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes:
            w, h = (int(v) for v in spec.split("x"))
            small = Image.fromarray(
                rng.integers(0, 255, (max(1, h // 10), max(1, w // 10), 3), dtype=np.uint8)
            )
            photo = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
            photo += rng.integers(-8, 9, photo.shape, dtype=np.int16)  # sensor noise
            path = Path(tmp) / f"{spec}.jpg"
            Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(path, quality=90)
            full = timed(lambda p=path: full_decode(p, args.image_size), args.repeat)
            draft = timed(lambda p=path: load_rgb(p, args.image_size), args.repeat)
            diff = np.abs(
                load_rgb(path, args.image_size).permute(1, 2, 0).numpy().astype(int)
                - full_decode(path, args.image_size).astype(int)
            )
            print(
                f"{spec} -> {args.image_size} px: full decode {full * 1e3:.1f} ms, load_rgb (draft) "
                f"{draft * 1e3:.1f} ms, ratio {draft / full:.2f}; pixels differ by {diff.mean():.2f} on average, "
                f"{diff.max()} at most (of 255)"
            )


if __name__ == "__main__":
    main()
