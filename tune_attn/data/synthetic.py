"""The embedded default data set: procedurally generated "synthetic pets", no download.

Each image shows one animal-like object (body ellipse, head circle, two ears, a tail) at a random place and
scale, facing left or right, on a cluttered, textured background with distractor shapes (triangles, dots,
striped patches) that look like the object's parts. The class is the combination of three part attributes
that sit in different places of the object:

- ears on top of the head: ``pointed``, ``round`` or ``floppy``;
- the body's coat pattern: ``plain``, ``striped`` or ``spotted``;
- the tail at the rear: ``long`` or ``bob``.

That gives 3 x 3 x 2 = 18 classes, so a mask on one part alone cannot reach full accuracy. Every sample
carries ground-truth masks of the object and of each part (``ears``, ``head``, ``body``, ``tail``).
Generation is vectorized over the batch (numpy broadcasting, in chunks) and the same for the same seed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune_attn.files import in_place

EARS = ("pointed", "round", "floppy")
PATTERNS = ("plain", "striped", "spotted")
TAILS = ("long", "bob")
PART_NAMES = ("ears", "head", "body", "tail")
CLASS_NAMES = tuple(f"{e}-{p}-{t}" for e in EARS for p in PATTERNS for t in TAILS)
GENERATOR_VERSION = 2  # bump when the drawing changes, so caches are not reused


@dataclass
class SyntheticArrays:
    """A generated set. Shapes: images (N, S, S, 3) uint8, labels (N,), objects (N, S, S) uint8 0/1,
    parts (N, P, S, S) uint8 0/1 in the order of ``PART_NAMES``."""

    images: np.ndarray
    labels: np.ndarray
    objects: np.ndarray
    parts: np.ndarray


def class_index(ear: np.ndarray, pattern: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Class id of the attribute combination (same order as ``CLASS_NAMES``)."""
    return (ear * len(PATTERNS) + pattern) * len(TAILS) + tail


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise: a (cells x cells) random grid upsampled bilinearly to (n, size, size, channels)."""
    grid = rng.random((n, cells + 1, cells + 1, channels), dtype=np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    f = (pos - i0)[None, :, None, None]
    rows = grid[:, i0] * (1 - f) + grid[:, i0 + 1] * f  # (n, size, cells+1, C)
    f = f.reshape(1, 1, size, 1)
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f  # (n, size, size, C)


def _ellipse(x, y, cx, cy, ax, ay):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _triangle_up(x, y, cx, base_y, half_w, height):
    """Isosceles triangle with its base at base_y, apex height above it."""
    t = (base_y - y) / height  # 0 at base, 1 at apex
    return (t >= 0) & (t <= 1) & (np.abs(x - cx) <= half_w * (1 - t))


def _segment(x, y, x0, y0, x1, y1, width):
    """Thick line segment from (x0, y0) to (x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2 <= width**2


def _render_chunk(rng: np.random.Generator, n: int, size: int) -> SyntheticArrays:
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    x, y = xx[None], yy[None]  # (1, S, S)

    def col(v: np.ndarray) -> np.ndarray:  # per-sample scalar -> broadcastable (n, 1, 1)
        return v.astype(np.float32)[:, None, None]

    ear, pattern, tail = (
        rng.integers(0, len(EARS), n),
        rng.integers(0, len(PATTERNS), n),
        rng.integers(0, 2, n),
    )
    labels = class_index(ear, pattern, tail)

    # Background: a smooth colour field, fine grain and distractors.
    img = 0.25 + 0.5 * _smooth_noise(rng, n, size, 4, 3)  # (n, S, S, 3)
    img += 0.08 * (_smooth_noise(rng, n, size, max(4, size // 4), 1) - 0.5)
    for _ in range(3):
        kind = rng.integers(0, 3, n)
        dx, dy = col(rng.uniform(0.08, 0.92, n) * s), col(rng.uniform(0.08, 0.92, n) * s)
        r = col(rng.uniform(0.04, 0.09, n) * s)
        tri = _triangle_up(x, y, dx, dy + r, r, 2 * r)
        dots = _ellipse(x, y, dx, dy, r * 0.6, r * 0.6)
        patch = _ellipse(x, y, dx, dy, 1.6 * r, 1.2 * r) & (np.sin((x + y) * (6.0 / r)) > 0)
        shape = np.where(col(kind) == 0, tri, np.where(col(kind) == 1, dots, patch))
        colour = rng.uniform(0.05, 0.95, (n, 1, 1, 3)).astype(np.float32)
        img = np.where(shape[..., None], colour, img)

    # The animal. Body semi-axes (a, b); facing d = +1 (right) or -1 (left).
    r1 = rng.uniform(0.12, 0.18, n) * s
    cx = col(rng.uniform(2.0 * r1, s - 2.0 * r1))
    cy = col(rng.uniform(2.0 * r1, s - 1.0 * r1))
    r = col(r1)
    a, b = 1.15 * r, 0.72 * r
    d = col(rng.choice([-1.0, 1.0], n))
    rh = 0.5 * r
    hx, hy = cx + d * a * 1.0, cy - b * 0.95
    body = _ellipse(x, y, cx, cy, a, b)
    head = _ellipse(x, y, hx, hy, rh, rh)
    # Ears: two on top of the head.
    ears = np.zeros((n, size, size), dtype=bool)
    for side in (-1.0, 1.0):
        ex = hx + side * 0.55 * rh
        pointed = _triangle_up(x, y, ex, hy - 0.5 * rh, 0.55 * rh, 1.5 * rh)
        rounded = _ellipse(x, y, ex, hy - 0.95 * rh, 0.55 * rh, 0.55 * rh)
        floppy = _ellipse(x, y, hx + side * 1.05 * rh, hy + 0.3 * rh, 0.38 * rh, 0.95 * rh)
        ears |= np.where(col(ear) == 0, pointed, np.where(col(ear) == 1, rounded, floppy))
    ears &= ~head
    # Tail at the rear of the body.
    tx0, ty0 = cx - d * a * 0.9, cy - b * 0.2
    long_tail = _segment(x, y, tx0, ty0, tx0 - d * 1.0 * r, ty0 - 1.0 * r, 0.12 * r + 0.7)
    bob_tail = _ellipse(x, y, tx0 - d * 0.25 * r, ty0, 0.4 * r, 0.4 * r)
    tail_m = np.where(col(tail) == 0, long_tail, bob_tail) & ~body
    # Coat pattern on the body.
    u = (x - cx) / a
    v = (y - cy) / b
    stripes = np.sin(u * 9.0) > 0.2
    spots = (np.sin(u * 7.0) * np.sin(v * 5.0)) > 0.45
    marked = body & np.where(col(pattern) == 1, stripes, np.where(col(pattern) == 2, spots, False))

    fur = rng.uniform(0.45, 1.0, (n, 1, 1, 3)).astype(np.float32)
    fur /= fur.max(axis=-1, keepdims=True)
    fur *= rng.uniform(0.7, 1.0, (n, 1, 1, 1)).astype(np.float32)
    dark = fur * 0.25
    obj = body | head | ears | tail_m
    img = np.where(obj[..., None], fur, img)
    img = np.where(marked[..., None], dark, img)
    img = np.where(ears[..., None], fur * 0.55, img)  # ears and tail a shade darker than the fur
    img = np.where(tail_m[..., None], fur * 0.55, img)
    # Eye on the head, the same for all classes.
    eye = _ellipse(x, y, hx + d * 0.35 * rh, hy - 0.1 * rh, 0.16 * rh + 0.4, 0.16 * rh + 0.4)
    img = np.where(eye[..., None], np.float32(0.05), img)
    img += rng.normal(0.0, 0.03, img.shape).astype(np.float32)

    images = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    parts = np.stack([ears, head & ~ears, body, tail_m], axis=1).astype(np.uint8)
    return SyntheticArrays(images, labels.astype(np.int64), obj.astype(np.uint8), parts)


def generate(n: int, size: int = 64, seed: int | Sequence[int] = 0, chunk: int = 256) -> SyntheticArrays:
    """Generate ``n`` images of ``size`` x ``size`` pixels; the same seed gives the same arrays.

    ``seed`` is an int or a sequence of ints (e.g. ``(seed, split)``), as numpy's ``default_rng`` takes.
    """
    if not 32 <= size <= 128:
        raise ValueError(f"size: {size} is not supported; the synthetic set is drawn at 32 to 128 px")
    if n < 1:
        raise ValueError(f"n: {n}; need at least one image")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**63 - 1, (n + chunk - 1) // chunk)
    parts = [
        _render_chunk(np.random.default_rng(int(sd)), min(chunk, n - i * chunk), size)
        for i, sd in enumerate(seeds)
    ]
    return SyntheticArrays(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in SyntheticArrays.__annotations__)
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNE_ATTN_CACHE") or Path.home() / ".cache" / "tune_attn")


def load_or_generate(
    n: int, size: int, seed: int | Sequence[int], cache_dir: str | Path | None = None
) -> SyntheticArrays:
    """Like :func:`generate`, cached as a ``.npz`` file keyed by (n, size, seed, generator version)."""
    key = hashlib.sha1(f"v{GENERATOR_VERSION}-{n}-{size}-{seed!r}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / f"synthetic-{size}px-{n}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return SyntheticArrays(*(z[f] for f in SyntheticArrays.__annotations__))
        except (OSError, ValueError, KeyError):
            pass  # a broken cache file is regenerated below
    arrays = generate(n, size, seed)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with in_place(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **{f: getattr(arrays, f) for f in SyntheticArrays.__annotations__})
    except OSError:
        pass  # a read-only cache folder costs time, not correctness
    return arrays
