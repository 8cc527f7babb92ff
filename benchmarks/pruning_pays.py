"""Pruning pays: the same sweep (space, seed, number of trials) with and without degeneracy pruning.

Prints, for each, the trial-epochs spent, the wall time, and the best validation accuracy among trials whose
masks were healthy at the end, then the ratios (targets: at least 30 % fewer trial-epochs, best accuracy no
more than 1 point lower).

    .venv/bin/python benchmarks/pruning_pays.py [--space search_spaces/default.yaml] [--num-samples 12] \
        [--set train.epochs=12] [--seeds 0 1 2] [--arms on off] [--tell complete] [--tpe multivariate]

``--tell complete`` is an experiment, not a mode of tune-attn: the pruned trials are still stopped, but
Optuna is told COMPLETE with their last accuracy (what Ray's own OptunaSearch does), to see whether what
Optuna is told or the stopping itself costs accuracy. ``--tpe multivariate`` is another: TPE models the
searched keys jointly (Optuna's ``multivariate=True, group=True``) instead of one key at a time, to see whether
a pruned trial then marks less than all of its settings as bad.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import tune_attn.tune.searcher
from tune_attn.tune.options import SweepOptions
from tune_attn.tune.searcher import DegeneracyAwareOptunaSearch
from tune_attn.tune.sweep import run_sweep


class TellCompleteSearch(DegeneracyAwareOptunaSearch):
    """Stops degenerate trials like tune-attn, but tells Optuna COMPLETE with the last accuracy."""

    def tell_stopped(self, ot_trial: Any, result: dict | None) -> None:
        assert result is not None
        study: Any = self._ot_study
        study.tell(ot_trial, float(result[str(self.metric)]), state=TrialState.COMPLETE)


class MultivariateTPE(optuna.samplers.TPESampler):
    """TPE over the searched keys jointly (by groups of keys drawn together, for the conditional ones)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(multivariate=True, group=True, **kwargs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="search_spaces/default.yaml")
    ap.add_argument("--num-samples", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--set", action="append", default=[], help="fix a key over the space, e.g. train.epochs=12"
    )
    ap.add_argument("--json", help="also write every sweep's summary rows (configs, statuses) here")
    ap.add_argument(
        "--arms", nargs="+", choices=["on", "off"], default=["on", "off"], help="pruning on / off"
    )
    ap.add_argument(
        "--tell",
        choices=["pruned", "complete"],
        default="pruned",
        help="what Optuna is told of a pruned trial",
    )
    ap.add_argument(
        "--tpe",
        choices=["independent", "multivariate"],
        default="independent",
        help="how TPE models the searched keys: one at a time (tune-attn's) or jointly",
    )
    args = ap.parse_args()
    if args.tpe == "multivariate":  # the sweep builds its sampler from this module attribute
        optuna.samplers.TPESampler = MultivariateTPE  # type: ignore[misc]
    if args.tell == "complete":  # the sweep builds its searcher from this module attribute
        tune_attn.tune.searcher.DegeneracyAwareOptunaSearch = TellCompleteSearch  # type: ignore[misc]
    kept: dict[str, list[dict]] = {}
    out: dict[tuple[int, bool], tuple[int, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for prune in [arm == "on" for arm in args.arms]:
                t0 = time.perf_counter()
                res = run_sweep(
                    args.space,
                    SweepOptions(
                        name=f"seed{seed}-prune-{prune}",
                        storage=tmp,
                        num_samples=args.num_samples,
                        max_concurrent=2,
                        seed=seed,
                        prune=prune,
                        fixed=tuple(args.set),
                    ),
                )
                seconds = time.perf_counter() - t0
                kept[f"seed {seed} pruning {'on' if prune else 'off'}"] = res.rows
                if args.json:  # after every sweep: an interrupted run keeps what it measured
                    Path(args.json).write_text(json.dumps(kept, indent=1, default=str))
                epochs = sum(int(r["epochs"] or 0) for r in res.rows)
                healthy = [
                    r for r in res.rows if r["status"] == "completed" and r.get("detector.kind") == "healthy"
                ]
                best = max((r["best_val_accuracy"] for r in healthy), default=float("nan"))
                kinds = sorted(r["status"] for r in res.rows)
                told = sorted(t.state.name for t in res.study.trials) if res.study is not None else []
                out[seed, prune] = (epochs, best, seconds)
                print(
                    f"seed {seed} pruning {'on ' if prune else 'off'}: {len(res.rows)} trials, {epochs} "
                    f"trial-epochs, {seconds:.0f} s, best healthy val_accuracy {best:.3f}; statuses {kinds}; Optuna told {told}",
                    flush=True,
                )
    if len(args.arms) < 2:
        return
    for seed in args.seeds:
        (e1, b1, s1), (e0, b0, s0) = out[seed, True], out[seed, False]
        print(
            f"seed {seed}: trial-epochs with / without pruning {e1}/{e0} = {e1 / e0:.2f} ({1 - e1 / e0:.0%} "
            f"fewer); wall time ratio {s1 / s0:.2f}; best healthy accuracy with minus without {b1 - b0:+.3f}"
        )
    e1 = sum(out[s, True][0] for s in args.seeds)
    e0 = sum(out[s, False][0] for s in args.seeds)
    worst = min(out[s, True][1] - out[s, False][1] for s in args.seeds)
    print(f"all seeds: ratio trial-epochs with / without pruning: {e1 / e0:.2f} ({1 - e1 / e0:.0%} fewer)")
    print(f"all seeds: worst best-healthy-accuracy difference (with minus without): {worst:+.3f}")


if __name__ == "__main__":
    main()
