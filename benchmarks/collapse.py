"""When do attention masks collapse? Train over a grid of configs and record, per epoch, the detector's
verdict on real masks, the mask panels, and the masks themselves (for the detector's evaluation set).

    .venv/bin/python benchmarks/collapse.py --out runs/collapse \\
        --grid model.activation=sigmoid,relu,softmax --grid train.weight_decay=0,1e-3,1e-2,5e-2 \\
        --set train.optimizer=sgd --set train.lr=0.01 --epochs 8

Per run it writes the usual run folder (panels/, metrics.jsonl with ``detector.*`` keys) plus
``masks.npz`` (the masks of the first 64 fixed validation samples at every epoch, float16). At the end it
prints a table: the config, the accuracy, the detector's kind per epoch, the epoch at which the monitor
(default grace and patience) would have pruned, and the share of the run's epochs that saves.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from tune_attn.config import load_config
from tune_attn.engine import EpochResult
from tune_attn.run import train_run

KEEP = 64  # masks kept per epoch for the evaluation set
ABBREV = {
    "healthy": ".",
    "nonfinite": "N",
    "dead": "D",
    "corner": "C",
    "border": "B",
    "point": "P",
    "flat": "F",
    "static": "S",
    "redundant": "R",
}


def run_name(combo: dict[str, str]) -> str:
    return "-".join(f"{k.split('.')[-1]}={v}" for k, v in combo.items()) or "base"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,...: one axis of the grid")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every run")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--num-train", type=int, default=2000)
    ap.add_argument("--num-val", type=int, default=500)
    ap.add_argument("--out", type=Path, default=Path("runs/collapse"))
    args = ap.parse_args()
    axes = []
    for item in args.grid:
        key, _, values = item.partition("=")
        axes.append([(key, v) for v in values.split(",")])
    rows = []
    for combo_items in itertools.product(*axes) if axes else [()]:
        combo = dict(combo_items)
        cfg = load_config(
            "configs/default.yaml",
            [
                f"data.num_train={args.num_train}",
                f"data.num_val={args.num_val}",
                f"train.epochs={args.epochs}",
                "model.heads=1",
                *args.overrides,
                *(f"{k}={v}" for k, v in combo.items()),
            ],
        )
        out = args.out / run_name(combo)
        kept: list[np.ndarray] = []

        def keep(result: EpochResult, kept: list[np.ndarray] = kept) -> None:
            kept.append(result.masks[:KEEP].astype(np.float16))

        if (out / "masks.npz").is_file():
            print(f"{out}: done already, skipped", flush=True)
        else:
            if out.exists():
                import shutil

                shutil.rmtree(out)  # an unfinished run is redone from scratch
            train_run(cfg, out, on_epoch=keep)
            np.savez_compressed(out / "masks.npz", masks=np.stack(kept))  # (epochs, KEEP, heads, h, w)
        history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        kinds = [h["detector.kind"] for h in history]
        prune_at = next((h["epoch"] for h in history if h["detector.prune"]), None)
        row = {
            "run": out.name,
            **combo,
            "final_accuracy": history[-1]["val_accuracy"],
            "best_accuracy": max(h["val_accuracy"] for h in history),
            "kinds": kinds,
            "prune_epoch": prune_at,
            "epochs_saved": (args.epochs - prune_at) if prune_at else 0,
            "final_reason": history[-1]["detector.reason"],
            "final_object_mass": history[-1].get("mask.object_mass"),
            "final_corner_mass": history[-1]["mask.corner_mass"],
        }
        rows.append(row)
        print(
            f"{row['run']:60s} acc {row['final_accuracy']:.3f} kinds {''.join(ABBREV[k] for k in kinds)} "
            f"prune@{prune_at} | {row['final_reason']}",
            flush=True,
        )
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    print()
    print("| run | final acc | detector per epoch | pruned at | epochs saved | last reason |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        share = f"{r['epochs_saved']} ({r['epochs_saved'] / args.epochs:.0%})" if r["prune_epoch"] else "-"
        print(
            f"| {r['run']} | {r['final_accuracy']:.3f} | `{''.join(ABBREV[k] for k in r['kinds'])}` | "
            f"{r['prune_epoch'] or '-'} | {share} | {r['final_reason']} |"
        )
    print("\nkinds: " + ", ".join(f"{v} {k}" for k, v in ABBREV.items()))


if __name__ == "__main__":
    main()
