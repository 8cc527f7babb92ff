"""Training throughput of the default model, and the per-epoch cost of the mask statistics, the detector
and the panels.

Prints images/s for one training epoch at 64 px on this machine (NCHW and channels-last), and the time
of the mask statistics and of the panel drawing as a fraction of that epoch, all measured in this run.

    .venv/bin/python benchmarks/throughput.py [--num-train 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tune_attn.config import load_config
from tune_attn.degeneracy import diagnose
from tune_attn.engine import Trainer
from tune_attn.masks import mask_statistics
from tune_attn.run import RunWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--num-train", type=int, default=4000)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    # Both layouts are timed in alternating rounds (this machine's speed drifts between runs), median of rounds.
    trainers = {}
    for channels_last in (False, True):
        cfg = load_config(
            "configs/default.yaml",
            [
                f"data.num_train={args.num_train}",
                f"model.heads={args.heads}",
                f"train.channels_last={channels_last}",
            ],
        )
        trainers[channels_last] = Trainer(cfg)
        trainers[channels_last].train_epoch()  # warm-up epoch (allocator, oneDNN kernels)
    rounds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for channels_last, trainer in trainers.items():
            t0 = time.perf_counter()
            _, seen = trainer.train_epoch()
            rounds[channels_last].append(seen / (time.perf_counter() - t0))
    rates = {k: statistics.median(v) for k, v in rounds.items()}
    for k, v in rounds.items():
        print(
            f"channels_last={k!s:5}: median {rates[k]:5.0f} train img/s over {len(v)} epochs of {seen} images "
            f"({', '.join(f'{r:.0f}' for r in v)})"
        )
    trainer = trainers[True]
    train_s = seen / rates[True]
    t0 = time.perf_counter()
    masks = trainer.evaluate().masks
    eval_s = time.perf_counter() - t0
    epoch_s = train_s + eval_s
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        mask_statistics(masks, trainer.probe_objects, trainer.probe_parts, trainer.data.val.part_names)
    stats_s = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        diagnose(masks)
    diagnose_s = (time.perf_counter() - t0) / reps
    result = trainer.step()
    with tempfile.TemporaryDirectory() as tmp:
        writer = RunWriter(Path(tmp), cfg)
        t0 = time.perf_counter()
        writer.write_epoch(trainer, result)
        write_s = time.perf_counter() - t0
    print(f"masks per epoch: {masks.shape} (samples, heads, h, w)")
    print(f"mask statistics: {stats_s * 1e3:.2f} ms = {stats_s / epoch_s:.3%} of an epoch ({epoch_s:.2f} s)")
    print(f"diagnose: {diagnose_s * 1e3:.2f} ms = {diagnose_s / epoch_s:.3%} of an epoch")
    print(f"panels + curves + checkpoint: {write_s:.2f} s = {write_s / epoch_s:.1%} of an epoch")
    print(f"ratio channels_last / NCHW throughput: {rates[True] / rates[False]:.2f}")
    print(f"ratio mask statistics / epoch: {stats_s / epoch_s:.5f}")
    print(f"ratio diagnose / epoch: {diagnose_s / epoch_s:.5f}")
    assert np.isfinite(stats_s)


if __name__ == "__main__":
    main()
