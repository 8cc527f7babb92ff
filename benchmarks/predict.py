"""What ``tune-attn predict`` costs per image, and its peak memory in batches against all images in one batch.

Writes N random images into a temporary folder, then, each in a fresh process, runs
:func:`tune_attn.export.predict` on them with the given bundle: once in batches of
:data:`~tune_attn.export.PREDICT_BATCH` (what the command does) and once with every image in one batch (what it
did before), and in batches without overlays (``--no-overlays``). Prints the milliseconds per image, the share
of that spent drawing the overlays, each run's peak resident memory, and their ratios.

    .venv/bin/python benchmarks/predict.py --bundle BUNDLE [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

RUN = """
import json, resource, sys, time
from pathlib import Path
from tune_attn import panels
from tune_attn.export import image_files, load_bundle, predict

bundle, folder, overlays, batch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
draw = sys.argv[5] == "draw"
drawing = [0.0]
original = panels.mask_panel


def timed(*args, **kwargs):
    t = time.perf_counter()
    out = original(*args, **kwargs)
    drawing[0] += time.perf_counter() - t
    return out


panels.mask_panel = timed
loaded = load_bundle(bundle)
images = image_files([folder])
start = time.perf_counter()
n = sum(1 for p in predict(loaded, images, overlays, batch_size=batch, draw=draw) if not p.error)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GiB (about)
print(json.dumps({"images": n, "seconds": seconds, "drawing": drawing[0], "peak_gb": peak}))
"""


def run(bundle: str, folder: Path, overlays: Path, batch: int, draw: bool = True) -> dict[str, float]:
    r = subprocess.run(
        [sys.executable, "-c", RUN, bundle, str(folder), str(overlays), str(batch), "draw" if draw else "no"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="a bundle folder (tune-attn export)")
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    from tune_attn.export import PREDICT_BATCH, load_bundle

    size = load_bundle(args.bundle).cfg.data.image_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.png")
        runs = []
        for label, batch in ((f"batches of {PREDICT_BATCH}", PREDICT_BATCH), ("one batch", args.images)):
            r = run(args.bundle, folder, Path(tmp) / label.replace(" ", "_"), batch)
            runs.append(r)
            print(
                f"{label:>14}: {r['images']} images of {size} px, {1000 * r['seconds'] / r['images']:.1f} ms per image "
                f"({100 * r['drawing'] / r['seconds']:.0f} % drawing the overlays), peak memory {r['peak_gb']:.2f} GB"
            )
        batched, whole = runs
        print(
            f"ratio batches / one batch: time {batched['seconds'] / whole['seconds']:.2f}, "
            f"peak memory {batched['peak_gb'] / whole['peak_gb']:.2f}"
        )
        bare = run(args.bundle, folder, Path(tmp) / "none", PREDICT_BATCH, draw=False)
        print(
            f"--no-overlays : {1000 * bare['seconds'] / bare['images']:.1f} ms per image, peak memory "
            f"{bare['peak_gb']:.2f} GB; ratio to batches with overlays: time {bare['seconds'] / batched['seconds']:.2f}"
        )


if __name__ == "__main__":
    main()
