"""The Ray Tune function trainable: a thin adapter over :func:`tune_attn.run.train_run`.

Each epoch it reports scalar metrics (with the degeneracy verdict) and a checkpoint; it stops the trial when
the monitor says prune. It resumes from Tune's checkpoint after a failure, exactly where it left off.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tune_attn.engine import EpochResult
from tune_attn.run import CHECKPOINT, train_run
from tune_attn.tune.search import config_from_flat


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numbers and short strings only: arrays never go into Tune's result files."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def train_trial(config: dict[str, Any], prune: bool = True) -> None:
    """Train one trial's config (flat ``section.key`` values) and report every epoch to Tune; with
    ``prune`` stop when the degeneracy monitor says so."""
    cfg = config_from_flat(config)
    cpus = int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1) or 1)
    torch.set_num_threads(max(1, cpus))
    out = Path(tune.get_context().get_trial_dir()) / "run"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restarted trial: continue from the last reported epoch
        with checkpoint.as_directory() as folder:
            shutil.copy(Path(folder) / CHECKPOINT, out / CHECKPOINT)

    def report(result: EpochResult) -> None:
        metrics = scalar_metrics(result.metrics)
        metrics["epochs_budget"] = cfg.train.epochs
        metrics["prune_enabled"] = float(prune)
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(out / CHECKPOINT, Path(tmp) / CHECKPOINT)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    train_run(cfg, out, resume=(out / CHECKPOINT).exists(), on_epoch=report, prune=prune)
