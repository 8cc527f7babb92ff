"""Search pays: TPE with degeneracy pruning against random search without it, with the same number of trials.

For each seed, both sweeps run one trial at a time (so "trial-epochs spent so far" is well defined, in trial
order). A trial reaches a target when it completed with healthy masks and its best validation accuracy is
at or above the target; the cost to reach a target is the trial-epochs spent up to the end of that trial.
Prints, for every target, the cost per seed and the median over seeds for each arm, and the ratio of
medians (random / TPE: above 1 means TPE + pruning needed fewer trial-epochs). A target never reached counts
as the whole budget plus one trial (a lower bound of the true cost), marked with ">".

    .venv/bin/python benchmarks/search_pays.py [--seeds 0 1 2] [--num-samples 10] [--targets 0.3 0.35 0.4] \\
        [--arms tpe+pruning random tpe] \\
        [--set train.epochs=8] [--json LOG.json]

``--report LOG.json ...`` runs nothing: it prints the same figures from the logs that earlier runs kept with
``--json`` (arms and seeds joined across the files, e.g. one run per arm), for the seeds given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tune_attn.tune.options import SweepOptions
from tune_attn.tune.sweep import run_sweep

ARMS = {"tpe+pruning": ("tpe", True), "random": ("random", False), "tpe": ("tpe", False)}
"""Arm name -> (sampler, prune). The issue's comparison is the first two; ``tpe`` (TPE without pruning) can be
added with ``--arms`` to tell the search's effect from the pruning's."""


def trial_log(rows: list[dict[str, Any]]) -> list[tuple[int, bool, float]]:
    """(epochs, healthy at the end and completed, best val accuracy) per trial, in trial order."""
    out = []
    for row in rows:  # run_sweep returns them in the order the search proposed them
        healthy = row["status"] == "completed" and row.get("detector.kind") == "healthy"
        out.append((int(row["epochs"] or 0), healthy, float(row["best_val_accuracy"] or 0.0)))
    return out


def cost_to_reach(log: list[tuple[int, bool, float]], target: float) -> tuple[int, bool]:
    """Trial-epochs spent up to the end of the first healthy trial reaching ``target`` (and whether it did)."""
    spent = 0
    for epochs, healthy, best in log:
        spent += epochs
        if healthy and best >= target:
            return spent, True
    return spent + max((e for e, _, _ in log), default=0), False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="search_spaces/default.yaml")
    ap.add_argument("--num-samples", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.30, 0.35, 0.40])
    ap.add_argument(
        "--set", action="append", default=[], help="fix a key over the space, e.g. train.epochs=8"
    )
    ap.add_argument(
        "--arms", nargs="+", choices=list(ARMS), default=["tpe+pruning", "random"], help="sweeps per seed"
    )
    ap.add_argument("--json", help="also write the per-trial logs here (after every sweep)")
    ap.add_argument(
        "--report", nargs="+", metavar="LOG", help="run nothing: report the logs of earlier --json"
    )
    args = ap.parse_args()
    if args.report:
        report(read_logs(args.report), args.seeds, args.targets)
        return
    logs: dict[str, dict[int, list[tuple[int, bool, float]]]] = {arm: {} for arm in args.arms}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm in args.arms:
                sampler, prune = ARMS[arm]
                t0 = time.perf_counter()
                res = run_sweep(
                    args.space,
                    SweepOptions(
                        name=f"{arm}-{seed}",
                        storage=tmp,
                        num_samples=args.num_samples,
                        max_concurrent=1,
                        cpus_per_trial=2,
                        sampler=sampler,
                        seed=seed,
                        prune=prune,
                        fixed=tuple(args.set),
                    ),
                    echo=lambda line: None,
                )
                log = trial_log(res.rows)
                logs[arm][seed] = log
                best = max((b for _, h, b in log if h), default=float("nan"))
                print(
                    f"seed {seed} {arm:12s}: {sum(e for e, _, _ in log)} trial-epochs, "
                    f"{sum(h for _, h, _ in log)} healthy completed, best healthy {best:.3f}, "
                    f"{time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
                if args.json:
                    Path(args.json).write_text(json.dumps({"args": vars(args), "logs": logs}, indent=1))
    report(logs, args.seeds, args.targets)


Logs = dict[str, dict[int, list[tuple[int, bool, float]]]]
"""Arm -> seed -> :func:`trial_log`."""


def read_logs(files: list[str]) -> Logs:
    """The logs kept by ``--json`` runs, joined; an arm and seed in two files is an error (which to take?)."""
    logs: Logs = {}
    for name in files:
        for arm, seeds in json.loads(Path(name).read_text())["logs"].items():
            for seed, log in seeds.items():
                if int(seed) in logs.setdefault(arm, {}):
                    raise SystemExit(f"{name}: arm {arm} seed {seed} is in an earlier file too")
                logs[arm][int(seed)] = [(int(e), bool(h), float(b)) for e, h, b in log]
    return logs


def report(logs: Logs, seeds: list[int], targets: list[float]) -> None:
    """Per target and arm: the trial-epochs to reach it per seed and their median; the ratios to random."""
    for arm, by_seed in logs.items():
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise SystemExit(f"arm {arm} has no log for seed(s) {missing}; it has {sorted(by_seed)}")
        for seed in seeds:
            log = by_seed[seed]
            best = max((b for _, h, b in log if h), default=float("nan"))
            print(
                f"seed {seed} {arm:12s}: {len(log)} trials, {sum(e for e, _, _ in log)} trial-epochs, "
                f"{sum(h for _, h, _ in log)} healthy completed, best healthy {best:.3f}"
            )
    for target in targets:
        medians = {}
        for arm, by_seed in logs.items():
            costs = [cost_to_reach(by_seed[s], target) for s in seeds]
            medians[arm] = statistics.median(c for c, _ in costs)
            shown = ", ".join(f"{'' if ok else '>'}{c}" for c, ok in costs)
            print(f"target {target:.2f} {arm:12s}: trial-epochs per seed [{shown}], median {medians[arm]:g}")
        for arm in logs:
            if arm != "random" and "random" in medians:
                ratio = medians["random"] / medians[arm]
                print(f"target {target:.2f}: ratio of medians random / {arm}: {ratio:.2f}")


if __name__ == "__main__":
    main()
