"""The Ray Tune trainable: a thin adapter over :func:`tune_attn.run.run_epochs`, one epoch per ``step``.

Each step trains one epoch and returns its scalar metrics (with the degeneracy verdict); Tune saves a
checkpoint after every step and ends the trial when the epoch budget is spent or the monitor says prune
(``done``). A restored trial continues exactly where its checkpoint left off.

A class trainable (not a function one) so that the trial's W&B run is closed in :meth:`cleanup`, which Tune
runs in the trial's process before it ends: a function trainable stopped by a scheduler is torn down while
its training thread still runs, and the W&B run it was writing was lost (seen with ray 2.60, wandb 0.31).

Tune reuses a finished trial's actor for the next trial with the same resources (``reuse_actors``): the
process has torch, Ray Tune and CUDA up already, which saved ~3 s per trial on the development machine.
:meth:`reset_config` closes the trial before (as :meth:`cleanup` would) and sets up the next one.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tune_attn.config import WandbOptions
from tune_attn.engine import EpochResult, Trainer, TrainingDiverged, resolve_device
from tune_attn.run import CHECKPOINT, load_checkpoint, panel_path, run_epochs
from tune_attn.status import ERROR, INTERRUPTED, interrupted_reason, is_last_epoch
from tune_attn.tracking import WandbRun, stop_service, trial_run_id
from tune_attn.tune.search import config_from_flat

WANDB_ERROR = "wandb.error"
"""Result key carrying a trial's first W&B failure to the driver (which tells the user once)."""


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numbers and short strings only: arrays never go into Tune's result files."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def trial_device(name: str, gpus: float) -> str:
    """The device a trial trains on, from ``train.device`` and the GPUs Ray gave it (its ``GPU`` resource).

    ``auto`` is CUDA only when Ray gave the trial a GPU: Ray leaves ``CUDA_VISIBLE_DEVICES`` alone for a
    trial without one, so torch would see every GPU of the node and share the first one, unaccounted for."""
    if name == "cuda" and not gpus:
        raise ValueError(
            "train.device: 'cuda', but Ray gave this trial no GPU; pass --gpus-per-trial (1, or a fraction: "
            "0.25 for four trials per GPU)"
        )
    if name == "auto":
        return "cuda" if gpus and torch.cuda.is_available() else "cpu"
    return str(resolve_device(name))


class AttentionTrial(tune.Trainable):
    """One sweep trial: ``config`` holds flat ``section.key`` values; see the module doc."""

    def setup(
        self,
        config: dict[str, Any],
        prune: bool = True,
        wandb: WandbOptions | None = None,
        experiment: str | None = None,
        sweep: str = "sweep",
        scheduler: str = "none",
    ) -> None:
        """``experiment``: the sweep's local (or shared) folder, where the trial's run folder (panels, metrics,
        W&B run) is written; None for a remote storage: then the trial's working directory, which Tune
        uploads (``SyncConfig(sync_artifacts=True)``). ``scheduler``: the sweep's (``asha`` or ``none``):
        without one, a trial stopped before its last epoch was interrupted (Ctrl+C), not stopped early."""
        self.cfg = config_from_flat(config)
        self.prune = prune
        self.scheduler = scheduler
        resources = self.trial_resources.required_resources if self.trial_resources else {}
        gpus = float(resources.get("GPU", 0))
        # from the resources, not ray.get_gpu_ids(): that call made the Ray Client test sweep ~50 s slower
        self.device = trial_device(self.cfg.train.device, gpus)
        self.resources: dict[str, Any] = {
            "resources.cpu": float(resources.get("CPU", 0)),
            "resources.gpu": gpus,
            "device": self.device,
        }
        torch.set_num_threads(max(1, int(resources.get("CPU", 1) or 1)))
        base = Path(experiment) / f"trial_{self.trial_id}" if experiment else Path.cwd()
        self.out = base / "run"
        self.out.mkdir(parents=True, exist_ok=True)
        self.epochs: Iterator[EpochResult] | None = None  # started at the first step (after any restore)
        self.restored = False  # Tune gave a checkpoint to continue from (load_checkpoint)
        self.last: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.wb = WandbRun(
            wandb or WandbOptions(mode="off"),
            self.out,
            name=f"{sweep}/trial_{self.trial_id}",
            id=trial_run_id(sweep, self.trial_id),
            job_type="trial",
            config={
                **self.cfg.to_dict(),
                "trial_id": self.trial_id,
                "sweep": sweep,
                "searched": sorted(config),
                "device": self.device,  # what train.device (auto, say) gave with the trial's resources
            },
        )
        self.told_wandb = False
        self.storage = getattr(self, "_storage", None)  # this trial's (Tune's StorageContext, ray 2.60)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Close the trial that ran in this actor, then set up the next one in its place (Tune reuses the
        actor; ``self.trial_id`` is already the new trial's)."""
        self.close_trial()
        self.epochs = None  # the old trial's trainer (model, data, cached images) goes with it
        gc.collect()
        self.setup(new_config)
        return True

    def step(self) -> dict[str, Any]:
        try:
            if self.epochs is None:
                if not self.restored:  # a start from scratch: an earlier try's run folder is not Tune's state
                    (self.out / CHECKPOINT).unlink(missing_ok=True)
                trainer = Trainer(self.cfg, device=self.device, pretrained=not self.restored)
                self.epochs = run_epochs(
                    self.cfg, self.out, resume=self.restored, prune=self.prune, trainer=trainer
                )
            result = next(self.epochs)
        except StopIteration:  # restored from the checkpoint of its last epoch: nothing left to train
            if not self.last:  # that epoch's metrics, from the checkpoint's history
                history = load_checkpoint(self.out / CHECKPOINT)["history"]
                self.last = {**scalar_metrics(history[-1]), **self.resources}
            return {**self.last, "done": True}
        except TrainingDiverged as exc:  # from its checkpoint it would diverge again: ends here, not retried
            self.error = exc
            self.last = {**self.last, **self.resources, ERROR: f"{type(exc).__name__}: {exc}"}
            self.wb.end(self.last, exc)
            return {**self.last, "done": True}
        except BaseException as exc:  # Tune starts the trial again (--max-failures): on a lost node, say
            self.error = exc
            raise
        metrics = {**scalar_metrics(result.metrics), **self.resources}  # what Ray gave this trial
        self.wb.log_epoch(result, panel_path(self.out, result.epoch))
        if self.wb.error and not self.told_wandb:
            metrics[WANDB_ERROR] = self.wb.error
            self.told_wandb = True
        self.last = metrics
        metrics["done"] = is_last_epoch(metrics)
        if metrics["done"]:  # closed before Tune saves (and, for a remote storage, uploads) the last epoch
            self.wb.end(self.last)
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        shutil.copy(self.out / CHECKPOINT, Path(checkpoint_dir) / CHECKPOINT)

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Continue from Tune's checkpoint (a trial restarted after a failure, here or on another node)."""
        shutil.copy(Path(checkpoint) / CHECKPOINT, self.out / CHECKPOINT)
        self.epochs = None
        self.restored = True

    def cleanup(self) -> None:
        """Tune calls this however the trial ends, unless it keeps the actor for the next trial."""
        self.close_trial()

    def close_trial(self) -> None:
        """Close the W&B run with the trial's status and stop the process's W&B service; with a remote
        storage, upload the run folder once more so that the W&B run's end reaches it."""
        stopped = self.error is None or isinstance(self.error, SystemExit)  # by Tune, between or in a step
        ended = bool(self.last) and is_last_epoch(self.last)
        if stopped and not ended and (self.scheduler != "asha" or not self.last):  # ASHA stops after a result
            self.wb.finish(INTERRUPTED, interrupted_reason(self.last))
        else:
            self.wb.end(self.last, self.error)
        stop_service()
        if self.storage is not None and self.storage.sync_config.sync_artifacts:
            self.storage.persist_artifacts(force=True)
