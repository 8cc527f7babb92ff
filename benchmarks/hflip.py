"""Validation accuracy with and without ``train.hflip`` at the same budget on the embedded data.

Trains the same config (data, model, epochs, optimizer, seed) twice, without and with left-right mirroring of
the training images, for each seed given, and prints the accuracy per epoch and the difference of the final
and best accuracies, all measured in this run. Runs are written under --out.

    .venv/bin/python benchmarks/hflip.py --epochs 12 --seeds 0 --set model.heads=4 --set model.activation=softmax
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tune_attn.config import load_config
from tune_attn.run import train_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-hflip"))
    args = ap.parse_args()
    gains: dict[str, list[float]] = {"final": [], "best": []}
    for seed in args.seeds:
        acc: dict[bool, list[float]] = {}
        for flip in (False, True):
            cfg = load_config(
                "configs/default.yaml",
                [f"train.hflip={flip}", f"train.epochs={args.epochs}", f"train.seed={seed}", *args.overrides],
            )
            out = args.out / f"{'hflip' if flip else 'plain'}-s{seed}"
            trainer = train_run(cfg, out, resume=(out / "checkpoint.pt").is_file())
            acc[flip] = [h["val_accuracy"] for h in trainer.history]
            print(f"seed {seed} hflip={flip}: " + " ".join(f"{a:.3f}" for a in acc[flip]), flush=True)
        gains["final"].append(acc[True][-1] - acc[False][-1])
        gains["best"].append(max(acc[True]) - max(acc[False]))
        print(f"seed {seed}: final {acc[True][-1]:.3f} with hflip, {acc[False][-1]:.3f} without", flush=True)
    for kind, values in gains.items():
        print(
            f"{kind} accuracy with minus without hflip: mean {statistics.mean(values):+.3f} over {len(values)} seed(s)"
        )


if __name__ == "__main__":
    main()
