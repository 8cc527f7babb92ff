"""Ray overhead: epoch time of a trial inside Ray Tune against the same training in a plain loop.

Runs one config in a plain loop, then as a one-trial sweep, then in the plain loop again (the machine's drift
shows as a difference between the two plain runs), one CPU thread each, and prints the median time per epoch
and their ratio (target: at most 1.10). Plain: wall time between epoch ends (training, evaluation,
statistics, panels, checkpoint). Ray: Tune's ``time_this_iter_s``, the trial's ``step`` (the same work and its
W&B logging); Tune's report handling and checkpoint copy between steps are not in it, so the whole runs' wall
times are printed too (the sweep's includes starting Ray and the trial).

    .venv/bin/python benchmarks/ray_overhead.py [--epochs 4] [--num-train 2000] [--gpus-per-trial 1]

With ``--gpus-per-trial`` above 0 both train on the GPU (the plain loop with ``train.device=cuda``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from tune_attn.run import train_run
from tune_attn.tune.options import SweepOptions
from tune_attn.tune.search import config_from_flat
from tune_attn.tune.sweep import run_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--num-train", type=int, default=2000)
    ap.add_argument("--gpus-per-trial", type=float, default=0.0)
    ap.add_argument("--wandb", default="offline", choices=["offline", "off"], help="the trial's W&B logging")
    args = ap.parse_args()
    flat = {
        "data.num_train": args.num_train,
        "data.num_val": 500,
        "train.epochs": args.epochs,
        "model.heads": 4,
        "model.activation": "softmax",
        "detector.grace_epochs": 100,
        "train.device": "cuda" if args.gpus_per_trial else "cpu",
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(1)

        def plain(name: str) -> tuple[list[float], float]:
            stamps = [time.perf_counter()]
            train_run(
                config_from_flat(flat),
                Path(tmp) / name,
                on_epoch=lambda _: stamps.append(time.perf_counter()),
            )
            # Wall time between epoch ends, panels and checkpoint included; the first epoch warms up.
            return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][1:], stamps[-1] - stamps[0]

        before, before_wall = plain("plain")
        space = Path(tmp) / "space.yaml"
        # A one-trial "search": a categorical with one choice, the rest fixed.
        space.write_text(
            yaml.safe_dump({**flat, "model.mask_kernel": {"type": "categorical", "choices": [1]}})
        )
        start = time.perf_counter()
        result = run_sweep(
            space,
            SweepOptions(
                name="overhead",
                storage=str(Path(tmp) / "sweeps"),
                num_samples=1,
                max_concurrent=1,
                cpus_per_trial=1,
                gpus_per_trial=args.gpus_per_trial,
                wandb=args.wandb,
            ),
        )
        sweep_wall = time.perf_counter() - start
        lines = (Path(result.rows[0]["path"]) / "result.json").read_text().splitlines()
        ray_s = [json.loads(x)["time_this_iter_s"] for x in lines][1:]  # between reports, the same span
        after, after_wall = plain("plain-again")
    p, r = statistics.median(before + after), statistics.median(ray_s)
    show = ", ".join
    print(f"plain loop: median epoch {statistics.median(before):.2f} s ({show(f'{x:.2f}' for x in before)})")
    print(f"Ray Tune trial: median epoch {r:.2f} s ({show(f'{x:.2f}' for x in ray_s)})")
    print(
        f"plain loop again: median epoch {statistics.median(after):.2f} s ({show(f'{x:.2f}' for x in after)})"
    )
    print(f"whole runs: plain {before_wall:.1f} s and {after_wall:.1f} s, sweep {sweep_wall:.1f} s")
    print(f"ratio Ray / plain epoch time (both plain runs): {r / p:.3f}")


if __name__ == "__main__":
    main()
