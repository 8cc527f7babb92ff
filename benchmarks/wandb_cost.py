"""The cost of W&B logging (offline) per epoch: the panel, the per-sample head masks and the metrics.

Trains one run of the default model on the embedded data and times, every epoch, the training epoch itself
and ``WandbRun.log_epoch``; prints the ratio (W&B time / epoch time), plus the one-off cost of starting and
finishing the run, and the size of what was written.

    .venv/bin/python benchmarks/wandb_cost.py [--epochs 4] [--set model.heads=4 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tune_attn.config import WandbOptions, load_config
from tune_attn.engine import EpochResult
from tune_attn.run import panel_path, train_run
from tune_attn.tracking import WandbRun, offline_runs, run_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    base = ["data.num_train=2000", "data.num_val=500", "model.heads=4", "model.activation=softmax"]
    cfg = load_config(None, [*base, f"train.epochs={args.epochs}", *args.set])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        wb = WandbRun(WandbOptions(), out, name="bench", id=run_id("bench", tmp), job_type="train", config={})
        start = time.perf_counter() - t0
        epoch_s, log_s = [], []

        def on_epoch(result: EpochResult) -> None:
            epoch_s.append(float(result.metrics["epoch_seconds"]))
            t = time.perf_counter()
            wb.log_epoch(result, panel_path(out, result.epoch))
            log_s.append(time.perf_counter() - t)

        train_run(cfg, out, on_epoch=on_epoch)
        t0 = time.perf_counter()
        wb.end({"epoch": args.epochs, "epochs_budget": args.epochs, "val_accuracy": 0.0})
        finish = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in offline_runs(out)[0].rglob("*") if p.is_file())
        assert wb.error is None, wb.error
    print(
        f"epochs: {args.epochs} of {cfg.data.num_train} images at {cfg.data.image_size} px, {cfg.model.heads} heads, "
        f"{cfg.train.panel_samples} panel samples"
    )
    print(f"epoch (training + validation): median {statistics.median(epoch_s):.2f} s")
    print(f"W&B log_epoch: median {statistics.median(log_s) * 1000:.0f} ms")
    print(
        f"W&B init {start:.2f} s, finish {finish:.2f} s (once per run); offline run on disk: {size / 1e6:.2f} MB"
    )
    print(f"ratio W&B logging / epoch: {statistics.median(log_s) / statistics.median(epoch_s):.4f}")


if __name__ == "__main__":
    main()
