"""Patience: how many degenerate verdicts in a row the monitor should wait for, measured on whole runs.

For each seed, one sweep runs with pruning off (``--no-prune``): every trial trains all its epochs and its
per-epoch diagnosis is recorded. Those diagnoses do not depend on the patience, so the monitor can be replayed
on them for every ``(grace, patience)`` pair: it says at which epoch each trial would have been stopped.
Printed per pair, summed over seeds: trial-epochs spent (and the share saved), trials stopped, *false stops*
(trials stopped whose masks were healthy again at their last epoch: the monitor gave up on a run that
recovered), *missed* trials (degenerate at the end, never stopped) and the best healthy accuracy among the
trials that would have run to the end, against the best healthy accuracy of the whole sweep.

The replay leaves out one thing a real pruned sweep has: TPE learning from the pruned trials and proposing
other configs afterwards (``benchmarks/pruning_pays.py`` measures that whole effect, one seed a run).

    .venv/bin/python benchmarks/patience.py [--seeds 0 1 2] [--num-samples 12] [--set train.epochs=12] \\
        [--patience 1 2 3] [--grace 1 2] [--json histories.json]
    .venv/bin/python benchmarks/patience.py --replay histories.json     # replay saved histories again
    .venv/bin/python benchmarks/patience.py --runs runs/collapse-*/*    # replay benchmarks/collapse.py's runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from tune_attn.degeneracy import DegeneracyMonitor
from tune_attn.status import METRIC
from tune_attn.tune.options import SweepOptions
from tune_attn.tune.sweep import run_sweep


def history(lines_file: Path) -> list[dict[str, Any]]:
    """A run's per-epoch records, one JSON object a line: Ray's ``result.json`` of a trial, or the
    ``metrics.jsonl`` of a ``tune-attn train`` run."""
    keep = ("epoch", METRIC, "detector.degenerate", "detector.kind")
    lines = lines_file.read_text().splitlines()
    return [{k: r.get(k) for k in keep} for r in map(json.loads, filter(None, lines))]


def stop_epoch(epochs: list[dict[str, Any]], grace: int, patience: int) -> int | None:
    """The epoch at which the degeneracy monitor's rule would stop this run, or None."""
    monitor = DegeneracyMonitor(grace_epochs=grace, patience=patience)
    for e in epochs:
        if monitor.observe(int(e["epoch"]), bool(e["detector.degenerate"])):
            return int(e["epoch"])
    return None


def replay(trials: list[list[dict[str, Any]]], grace: int, patience: int) -> dict[str, Any]:
    spent = full = stopped = false_stops = missed = 0
    best_kept = best_all = float("nan")
    for epochs in trials:
        last = epochs[-1]
        healthy_end = last["detector.kind"] == "healthy"
        best = max(float(e[METRIC]) for e in epochs)
        full += len(epochs)
        stop = stop_epoch(epochs, grace, patience)
        if healthy_end:
            best_all = best if best_all != best_all else max(best_all, best)
        if stop is None:
            spent += len(epochs)
            missed += not healthy_end
            if healthy_end:
                best_kept = best if best_kept != best_kept else max(best_kept, best)
        else:
            spent += stop
            stopped += 1
            false_stops += healthy_end
    return {
        "spent": spent,
        "full": full,
        "stopped": stopped,
        "false_stops": false_stops,
        "missed": missed,
        "best_kept": best_kept,
        "best_all": best_all,
    }


def run(args: argparse.Namespace) -> dict[str, list[list[dict[str, Any]]]]:
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            res = run_sweep(
                args.space,
                SweepOptions(
                    name=f"seed-{seed}",
                    storage=tmp,
                    num_samples=args.num_samples,
                    max_concurrent=2,
                    seed=seed,
                    prune=False,
                    fixed=tuple(args.set),
                    wandb="off",
                ),
            )
            runs[str(seed)] = [
                history(Path(r["path"]) / "result.json") for r in res.rows if r["status"] == "completed"
            ]
            print(f"seed {seed}: {len(runs[str(seed)])} trials ran to the end", flush=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="search_spaces/default.yaml")
    ap.add_argument("--num-samples", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], help="fix a key, e.g. train.epochs=12")
    ap.add_argument("--patience", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--grace", type=int, nargs="+", default=[2])
    ap.add_argument("--json", help="write the per-epoch histories here (for --replay)")
    ap.add_argument("--replay", help="replay histories written by --json instead of running sweeps")
    ap.add_argument(
        "--runs", nargs="+", help="replay `tune-attn train` run folders (their metrics.jsonl) instead"
    )
    args = ap.parse_args()
    if args.replay:
        runs = json.loads(Path(args.replay).read_text())
    elif args.runs:
        runs = {"runs": [history(Path(folder) / "metrics.jsonl") for folder in args.runs]}
    else:
        runs = run(args)
        if args.json:
            Path(args.json).write_text(json.dumps(runs))
    trials = [t for seed in runs.values() for t in seed]
    ends = sum(t[-1]["detector.kind"] != "healthy" for t in trials)
    print(
        f"{len(trials)} trials ({', '.join(f'{k}: {len(v)}' for k, v in runs.items())}); {ends} degenerate at their last epoch"
    )
    print("grace patience | trial-epochs (saved) | stopped | false stops | missed | best healthy kept / all")
    for grace in args.grace:
        for patience in args.patience:
            seeds = [replay(t, grace, patience) for t in runs.values()]
            spent, full = sum(s["spent"] for s in seeds), sum(s["full"] for s in seeds)
            per_seed = " ".join(f"{s['best_kept']:.3f}/{s['best_all']:.3f}" for s in seeds)
            print(
                f"{grace:5d} {patience:8d} | {spent:4d} of {full} ({1 - spent / full:5.1%}) | "
                f"{sum(s['stopped'] for s in seeds):7d} | {sum(s['false_stops'] for s in seeds):11d} | "
                f"{sum(s['missed'] for s in seeds):6d} | {per_seed}",
                flush=True,
            )


if __name__ == "__main__":
    main()
