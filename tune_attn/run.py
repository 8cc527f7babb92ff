"""One training run written to a folder: per-epoch metrics (JSON lines), mask panels, curves, checkpoint.

Layout of a run folder::

    config.yaml            the resolved config (``tune-attn train --config`` reruns it as is)
    metrics.jsonl          one JSON object per epoch
    panels/epoch_003.png   the fixed validation samples with each head's mask, one file per epoch
    panels/timeline.png    one sample's masks across the epochs so far (16 of them at most, evenly spread)
    curves.png             loss, accuracy and mask statistics per epoch
    checkpoint.pt          weights, optimizer, epoch, history (load with torch.load(weights_only=True))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_attn import panels
from tune_attn.config import RunConfig, save_config
from tune_attn.degeneracy import DegeneracyMonitor, Verdict
from tune_attn.engine import BatchCallback, EpochResult, Trainer
from tune_attn.files import in_place
from tune_attn.masks import MaskStats

CHECKPOINT = "checkpoint.pt"


def panel_path(out_dir: str | Path, epoch: int) -> Path:
    """Where a run folder keeps the mask panel of ``epoch``."""
    return Path(out_dir) / "panels" / f"epoch_{epoch:03d}.png"


def panel_title(cfg: RunConfig, result: EpochResult) -> str:
    """Epoch, accuracy and the main mask figures, for the top of a panel."""
    m, s = result.metrics, result.stats.summary
    parts = [
        f"epoch {result.epoch}/{cfg.train.epochs}",
        f"val_accuracy {m['val_accuracy']:.3f}",
        f"{cfg.model.activation} x{cfg.model.heads}, weight_decay {cfg.train.weight_decay:g}",
    ]
    figures = [
        f"entropy {s['entropy']:.2f}",
        f"contrast {s['contrast']:.2f}",
        f"corner {s['corner_mass']:.2f} (flat {s['corner_uniform']:.2f})",
        f"border {s['border_mass']:.2f} (flat {s['border_uniform']:.2f})",
    ]
    if "object_mass" in s:
        figures.append(f"object {s['object_mass']:.2f} (area {s['object_area']:.2f})")
    verdict = m.get("detector.reason") or m.get("detector.kind", "")
    lines = [" | ".join(parts), " | ".join(figures)] + ([f"detector: {verdict}"] if verdict else [])
    return "\n".join(lines)


def head_notes(stats: MaskStats) -> list[str] | None:
    """Per head, the share of its mass on the object, and the ground-truth part holding most of its
    on-part mass, e.g. ``on object 62%`` / ``ears 45% of it`` (the parts are disjoint)."""
    if stats.coverage is None or not stats.part_names or "object_mass" not in stats.per_head:
        return None
    notes = []
    for k, row in enumerate(stats.coverage):
        share = row / max(float(row.sum()), 1e-12)
        on = float(stats.per_head["object_mass"][k])
        notes.append(f"on object {on:.0%}\n{stats.part_names[int(share.argmax())]} {share.max():.0%} of it")
    return notes


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    with in_place(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); a missing or broken file names the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable tune-attn checkpoint ({exc})") from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise ValueError(f"{path}: not a tune-attn checkpoint (needs keys model, config, epoch)")
    return state


class RunWriter:
    """Writes a run's per-epoch outputs into ``out_dir``."""

    def __init__(self, out_dir: str | Path, cfg: RunConfig) -> None:
        self.dir = Path(out_dir)
        self.cfg = cfg
        self.timeline: list[np.ndarray] = []  # masks of panel sample 0, one (heads, h, w) per epoch
        (self.dir / "panels").mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.dir / "config.yaml")

    def restore(self, state: dict[str, Any]) -> None:
        """Continue after a checkpoint: keep the timeline, rewrite metrics.jsonl from the history."""
        self.timeline = [np.asarray(t) for t in state.get("timeline", [])]
        with (self.dir / "metrics.jsonl").open("w") as fh:
            for row in state.get("history", []):
                fh.write(json.dumps(row) + "\n")

    def write_epoch(
        self, trainer: Trainer, result: EpochResult, extra_state: dict[str, Any] | None = None
    ) -> None:
        """Checkpoint (with ``extra_state`` merged in), metrics line, panel, timeline and curves."""
        n = len(result.panel_images)
        self.timeline.append(result.masks[0].copy())
        state = trainer.state_dict()
        state["timeline"] = [torch.from_numpy(t) for t in self.timeline]
        state.update(extra_state or {})
        save_checkpoint(state, self.dir / CHECKPOINT)
        with (self.dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(result.metrics) + "\n")
        panels.mask_panel(
            result.panel_images,
            result.masks[:n],
            panel_path(self.dir, result.epoch),
            panel_title(self.cfg, result),
            head_notes=head_notes(result.stats),
        )
        epochs = list(range(result.epoch - len(self.timeline) + 1, result.epoch + 1))
        panels.timeline(
            result.panel_images[0],
            np.stack(self.timeline),
            epochs,
            self.dir / "panels" / "timeline.png",
            f"validation sample 0 across epochs ({self.cfg.model.activation} x{self.cfg.model.heads})",
        )
        panels.curves(trainer.history, self.dir / "curves.png", f"{self.dir.name}")


def run_epochs(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_batch: BatchCallback | None = None,
    trainer: Trainer | None = None,
    prune: bool = False,
) -> Iterator[EpochResult]:
    """Train ``cfg`` writing everything to ``out_dir``, yielding each epoch once it is written (metrics,
    panel, checkpoint); with ``resume`` continue from the folder's checkpoint.

    The degeneracy monitor (``cfg.detector``) checks the masks every epoch; its verdict goes into the
    metrics (``detector.*`` keys) and the panel title. With ``prune`` the run stops when it says prune.
    Every epoch's metrics also carry ``epochs_budget`` and ``prune_enabled`` (see :func:`run_status`).
    """
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise FileExistsError(
            f"{out}: holds a run already; pass resume=True (--resume) or choose another folder"
        )
    trainer = trainer or Trainer(cfg, pretrained=not resumes(out, resume))
    writer = RunWriter(out, cfg)
    monitor = DegeneracyMonitor(cfg.detector)
    if resumes(out, resume):
        state = load_checkpoint(ckpt)
        trainer.load_state_dict(state)
        writer.restore(state)
        if "monitor" in state:
            monitor.load_state_dict(state["monitor"])
    else:
        writer.restore({})  # a new run: no line of an earlier one left in metrics.jsonl
    for result in trainer.epochs(on_batch):
        verdict = monitor.update(result.epoch, result.masks)
        result.metrics.update(verdict_metrics(verdict))
        result.metrics.update(epochs_budget=cfg.train.epochs, prune_enabled=float(prune))
        writer.write_epoch(trainer, result, {"monitor": monitor.state_dict()})
        yield result
        if prune and verdict.prune:
            return


def resumes(out_dir: str | Path, resume: bool) -> bool:
    """Whether a run into ``out_dir`` goes on from its checkpoint (``resume`` asked, and one is there): its model's
    weights then come from that checkpoint, so ``model.pretrained_path`` is not read."""
    return resume and (Path(out_dir) / CHECKPOINT).exists()


def train_run(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_batch: BatchCallback | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    trainer: Trainer | None = None,
    prune: bool = False,
) -> Trainer:
    """:func:`run_epochs` to the end, calling ``on_epoch`` after each epoch; returns the trainer."""
    trainer = trainer or Trainer(cfg, pretrained=not resumes(out_dir, resume))
    for result in run_epochs(cfg, out_dir, resume=resume, on_batch=on_batch, trainer=trainer, prune=prune):
        if on_epoch is not None:
            on_epoch(result)
    return trainer


def verdict_metrics(verdict: Verdict) -> dict[str, Any]:
    """The monitor's verdict as metric entries (``detector.kind`` and ``detector.reason`` are strings)."""
    return {
        "detector.kind": verdict.kind,
        "detector.degenerate": float(verdict.diagnosis.degenerate),
        "detector.streak": float(verdict.streak),
        "detector.prune": float(verdict.prune),
        "detector.reason": verdict.reason or verdict.diagnosis.reason,
    }
