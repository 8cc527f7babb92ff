"""What a trial costs besides its epochs, with and without reusing finished trials' processes.

Runs the same sweep (search_spaces/smoke.yaml: seconds per trial, so the start dominates; seed 0, one trial
at a time, W&B as given) with ``reuse_actors`` off and on, alternating, and prints each sweep's wall time,
the trials' own time (Tune's ``time_total_s``, the sum of their steps), the rest per trial, and the ratio of
wall times on / off measured in this run.

    .venv/bin/python benchmarks/trial_start.py [--trials 6] [--rounds 1] [--wandb off]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tune_attn.tune.options import SweepOptions
from tune_attn.tune.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--wandb", default="off", choices=["offline", "off"])
    ap.add_argument("--gpus-per-trial", type=float, default=0.0)
    args = ap.parse_args()
    walls: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for reuse in (False, True):
                options = SweepOptions(
                    name=f"reuse-{reuse}-{i}",
                    storage=tmp,
                    num_samples=args.trials,
                    max_concurrent=1,
                    gpus_per_trial=args.gpus_per_trial,
                    wandb=args.wandb,
                    reuse_actors=reuse,
                    prune=False,
                )
                start = time.perf_counter()
                result = run_sweep(ROOT / "search_spaces" / "smoke.yaml", options, echo=lambda _: None)
                wall = time.perf_counter() - start
                walls[reuse].append(wall)
                results = [
                    json.loads((Path(r["path"]) / "result.json").read_text().splitlines()[-1])
                    for r in result.rows
                ]
                steps = sum(x["time_total_s"] for x in results)
                pids = len({x["pid"] for x in results})
                print(
                    f"reuse_actors={reuse!s:5}: {len(results)} trials in {pids} process(es), sweep {wall:.1f} s, "
                    f"trials' steps {steps:.1f} s, the rest {(wall - steps) / len(results):.2f} s per trial",
                    flush=True,
                )
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print(
        f"ratio sweep wall time reuse on / off: {on / off:.2f} ({off - on:.1f} s less for {args.trials} trials)"
    )


if __name__ == "__main__":
    main()
