"""The cost of writing a sweep's Optuna study to ``study.db`` at its end, against the number of trials.

Builds an in-memory study like a sweep's (searched params, a value per epoch, the user attributes the sweep
sets), then times :func:`tune_attn.tune.summary.write_study` for it; prints the seconds, the milliseconds per
trial and the file's size, for each number of trials given.

    .venv/bin/python benchmarks/study_file.py [--trials 64 1000] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from tune_attn.tune.summary import STUDY_FILE, write_study


def study(n: int, epochs: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n):
        t = s.ask()
        x = t.suggest_float("train.weight_decay", 1e-5, 1.0, log=True)
        t.suggest_int("model.heads", 1, 4)
        t.suggest_categorical("model.activation", ["sigmoid", "relu", "softmax"])
        for e in range(1, epochs + 1):
            t.report(x * e / epochs, e)
        t.set_user_attr("status", "completed")
        t.set_user_attr("masks", "healthy")
        t.set_user_attr("ray_trial_id", f"{i:08x}")
        s.tell(t, x)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, nargs="+", default=[64, 1000])
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    for n in args.trials:
        s = study(n, args.epochs)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_study(Path(tmp), s, "bench")
            took = time.perf_counter() - start
            size = (Path(tmp) / STUDY_FILE).stat().st_size
        print(
            f"{n} trials x {args.epochs} epochs: study.db written in {took:.2f} s "
            f"({1000 * took / n:.1f} ms per trial), {size / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    main()
