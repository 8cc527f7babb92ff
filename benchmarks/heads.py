"""Validation accuracy of heads=1 against heads=4 at the same budget on the embedded data.

Trains the same config (data, epochs, optimizer, seed) with 1 and with 4 heads, for each seed given, and
prints the accuracy per epoch and the ratio of final accuracies, all measured in this run. Runs are
written under --out so that their panels can be inspected.

    .venv/bin/python benchmarks/heads.py --epochs 12 --seeds 0 1 --activation softmax
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tune_attn.config import load_config
from tune_attn.run import train_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--activation", default="softmax")
    ap.add_argument("--heads", type=int, nargs=2, default=[1, 4])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-heads"))
    args = ap.parse_args()
    finals: dict[int, list[float]] = {h: [] for h in args.heads}
    bests: dict[int, list[float]] = {h: [] for h in args.heads}
    for seed in args.seeds:
        for heads in args.heads:
            cfg = load_config(
                "configs/default.yaml",
                [
                    f"model.heads={heads}",
                    f"model.activation={args.activation}",
                    f"train.epochs={args.epochs}",
                    f"train.seed={seed}",
                    *args.overrides,
                ],
            )
            out = args.out / f"{args.activation}-h{heads}-s{seed}"
            trainer = train_run(cfg, out, resume=True)
            acc = [h["val_accuracy"] for h in trainer.history]
            finals[heads].append(acc[-1])
            bests[heads].append(max(acc))
            obj = trainer.history[-1].get("mask.object_mass", float("nan"))
            print(
                f"seed {seed} heads {heads}: val_accuracy per epoch {json.dumps([round(a, 3) for a in acc])}, "
                f"object_mass {obj:.2f} -> {out}",
                flush=True,
            )
    a, b = args.heads
    for name, table in (("final", finals), ("best", bests)):
        print(
            f"{name} val_accuracy: heads={a} median {statistics.median(table[a]):.3f}, "
            f"heads={b} median {statistics.median(table[b]):.3f}"
        )
    print(
        f"ratio heads={b} / heads={a} (median final accuracy): "
        f"{statistics.median(finals[b]) / statistics.median(finals[a]):.3f}"
    )


if __name__ == "__main__":
    main()
