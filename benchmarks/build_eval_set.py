"""Build the detector's labeled evaluation set from real runs (see benchmarks/collapse.py).

Reads ``benchmarks/mask_eval_labels.yaml``: entries ``{run, epochs: [first, last], label, why}``, labels given
by looking at each run's mask panels and timeline (the ``why``), not by the detector. Writes
``tests/data/mask_eval.npz`` (float16 masks, the first --samples validation samples of each labeled
epoch) and ``tests/data/mask_eval.json`` (label, source, why per item).

    .venv/bin/python benchmarks/build_eval_set.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=Path("benchmarks/mask_eval_labels.yaml"))
    ap.add_argument("--out", type=Path, default=Path("tests/data/mask_eval"))
    ap.add_argument("--samples", type=int, default=32)
    args = ap.parse_args()
    entries = yaml.safe_load(args.labels.read_text())
    arrays: dict[str, np.ndarray] = {}
    items = []
    for entry in entries:
        run = Path(entry["run"])
        masks = np.load(run / "masks.npz")["masks"]  # (epochs, K, heads, h, w)
        first, last = entry["epochs"]
        for epoch in range(first, last + 1):
            key = f"m{len(items):04d}"
            arrays[key] = masks[epoch - 1, : args.samples].astype(np.float16)
            items.append(
                {
                    "key": key,
                    "label": entry["label"],
                    "source": f"{run.parent.name}/{run.name}@{epoch}",
                    "why": entry["why"],
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out.with_suffix(".npz"), **arrays)
    args.out.with_suffix(".json").write_text(json.dumps({"samples": args.samples, "items": items}, indent=1))
    counts: dict[str, int] = {}
    for it in items:
        counts[it["label"]] = counts.get(it["label"], 0) + 1
    size = args.out.with_suffix(".npz").stat().st_size
    print(f"{len(items)} labeled batches ({counts}) -> {args.out}.npz ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
