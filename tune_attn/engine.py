"""The training loop: train an epoch, evaluate, collect the masks of fixed samples; knows no Ray, no W&B.

:class:`Trainer` holds one run; :meth:`Trainer.epochs` yields an :class:`EpochResult` per epoch, so the
CLI, a notebook and a Ray Tune trial drive the same code. Its state (model, optimizer, epoch, history)
round-trips through :meth:`Trainer.state_dict` for exact resumes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from tune_attn.config import RunConfig, absolute_root
from tune_attn.data import DataSplits, build_data, iterate_batches
from tune_attn.masks import MaskStats, mask_statistics, pool_to_grid
from tune_attn.models import AttentionClassifier, build_model

BatchCallback = Callable[[int, int, float], None]  # (batches done, batches total, running loss)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W) mirrored left-right with probability 1/2, drawn from ``generator``."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class EpochResult:
    """What one epoch produced. ``masks`` are those of the fixed statistics samples, (K, heads, h, w)."""

    epoch: int
    metrics: dict[str, Any]
    masks: np.ndarray
    stats: MaskStats
    panel_images: np.ndarray = field(repr=False)  # (n, S, S, 3) uint8, the first panel_samples of the K
    # (C, C): rows true class, columns predicted
    confusion: np.ndarray | None = field(default=None, repr=False)
    class_names: tuple[str, ...] = ()


class Evaluation(NamedTuple):
    """One pass over the validation set."""

    loss: float
    accuracy: float
    masks: np.ndarray  # (K, heads, h, w): the first ``stats_samples`` samples' masks
    confusion: np.ndarray  # (C, C) int64: row = true class, column = predicted class


def per_class(confusion: np.ndarray, class_names: tuple[str, ...]) -> list[tuple[str, int, int, str | None]]:
    """Per class of ``confusion`` (rows true, columns predicted): ``(name, correct, images, the class it is
    most often taken for or None)``, the least accurate first; classes without validation images are left out."""
    out = []
    for c, name in enumerate(class_names):
        row = confusion[c]
        total = int(row.sum())
        if total == 0:
            continue
        wrong = row.copy()
        wrong[c] = 0
        taken_for = class_names[int(wrong.argmax())] if wrong.any() else None
        out.append((name, int(row[c]), total, taken_for))
    return sorted(out, key=lambda r: (r[1] / r[2], r[0]))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "train.device: 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def use_deterministic_kernels(on: bool) -> None:
    """CUDA kernels that give the same result every run (``train.deterministic``), or the fastest ones.

    Process-wide settings of torch; cuBLAS reads its workspace setting when this process first uses it."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on  # off: cuDNN times its kernels per new shape, keeps the fastest
    torch.use_deterministic_algorithms(on, warn_only=True)  # an op without such a kernel warns, never fails


class Trainer:
    """One training run of a RunConfig."""

    def __init__(
        self,
        cfg: RunConfig,
        data: DataSplits | None = None,
        device: str | torch.device | None = None,
        pretrained: bool = True,
    ) -> None:
        """``device``: where to train, over ``train.device`` (a sweep trial trains where Ray placed it).
        ``pretrained`` False: the model's weights come from a checkpoint next, so ``model.pretrained_path`` is
        not read (:func:`~tune_attn.models.classifier.build_model`)."""
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device) if device is None else torch.device(device)
        if self.device.type == "cuda":
            use_deterministic_kernels(cfg.train.deterministic)
        self.data = data if data is not None else build_data(cfg.data)
        torch.manual_seed(cfg.train.seed)
        self.model: AttentionClassifier = build_model(
            cfg.model, self.data.num_classes, self.data.mean, self.data.std, pretrained
        ).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.confusion: np.ndarray | None = None  # (C, C) of the last epoch's evaluation
        self._probe_setup()

    # ---- fixed validation samples whose masks are watched every epoch -------------------------------
    def _probe_setup(self) -> None:
        val = self.data.val
        k = min(self.cfg.train.stats_samples, len(val))
        self.probe_count = k
        first = [val[i][0] for i in range(min(self.cfg.train.panel_samples, k))]
        self.panel_images = torch.stack(first).permute(0, 2, 3, 1).numpy()  # (n, S, S, 3) uint8
        with torch.no_grad():
            self.model.eval()
            _, m = self.model(self._prepare(torch.stack(first[:1])))
        self.map_size = (int(m.shape[-2]), int(m.shape[-1]))
        self.probe_objects: np.ndarray | None = None
        self.probe_parts: np.ndarray | None = None
        if val.has_object_masks:
            gts = [val.masks(i) for i in range(k)]
            self.probe_objects = pool_to_grid(np.stack([g[0] for g in gts]), *self.map_size)  # (K, h, w)
            if val.part_names:
                self.probe_parts = pool_to_grid(np.stack([g[1] for g in gts]), *self.map_size)  # (K, P, h, w)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)  # uint8 -> [0, 1]
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # ---- one epoch ----------------------------------------------------------------------------------
    def train_epoch(self, on_batch: BatchCallback | None = None) -> tuple[float, int]:
        """Train one epoch; returns (mean loss, images seen). The batch order is seeded by (seed, epoch)."""
        cfg = self.cfg.train
        self.model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch + 1)
        total, seen = 0.0, 0
        n_batches = math.ceil(len(self.data.train) / cfg.batch_size)
        for b, (x, y) in enumerate(
            iterate_batches(self.data.train, cfg.batch_size, shuffle=True, generator=gen)
        ):
            x, y = self._prepare(x), y.to(self.device)
            if cfg.hflip:
                x = random_hflip(x, gen)
            logits, _ = self.model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"epoch {self.epoch + 1}, batch {b + 1}: loss is {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(y)
            seen += len(y)
            if on_batch is not None:
                on_batch(b + 1, n_batches, total / seen)
        return total / max(seen, 1), seen

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Validation loss, accuracy and confusion matrix, and the masks of the first ``stats_samples``
        validation samples."""
        self.model.eval()
        n = self.data.num_classes
        loss_sum, seen = 0.0, 0
        pairs = torch.zeros(n * n, dtype=torch.int64, device=self.device)  # (C * C): true * C + predicted
        kept: list[torch.Tensor] = []
        for x, y in iterate_batches(self.data.val, max(self.cfg.train.batch_size, 256), shuffle=False):
            x, y = self._prepare(x), y.to(self.device)
            logits, masks = self.model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            pairs += torch.bincount(y * n + logits.argmax(1), minlength=n * n)
            if seen < self.probe_count:
                kept.append(masks[: self.probe_count - seen].float().cpu())
            seen += len(y)
        probe = torch.cat(kept).contiguous().numpy()  # (K, heads, h, w)
        confusion = pairs.view(n, n).cpu().numpy()  # (C, C)
        return Evaluation(loss_sum / seen, float(np.trace(confusion)) / seen, probe, confusion)

    def epochs(self, on_batch: BatchCallback | None = None) -> Iterator[EpochResult]:
        """Train from the current epoch to ``train.epochs``, yielding after each epoch."""
        while self.epoch < self.cfg.train.epochs:
            yield self.step(on_batch)

    def step(self, on_batch: BatchCallback | None = None) -> EpochResult:
        """Train and evaluate one epoch."""
        start = time.perf_counter()
        train_loss, seen = self.train_epoch(on_batch)
        train_seconds = time.perf_counter() - start
        val_loss, val_acc, probe, confusion = self.evaluate()
        t_stats = time.perf_counter()
        stats = mask_statistics(probe, self.probe_objects, self.probe_parts, self.data.val.part_names)
        stats_seconds = time.perf_counter() - t_stats
        self.epoch += 1
        metrics: dict[str, Any] = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            # the best so far, a resumed run's earlier epochs included: W&B's run summary shows it
            "best_val_accuracy": max([val_acc, *(h["val_accuracy"] for h in self.history)]),
            "epoch_seconds": time.perf_counter() - start,
            "train_images_per_second": seen / max(train_seconds, 1e-9),
            "stats_seconds": stats_seconds,
            **stats.flat(),
        }
        self.history.append(metrics)
        self.confusion = confusion
        return EpochResult(
            self.epoch, metrics, probe, stats, self.panel_images, confusion, self.data.class_names
        )

    # ---- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: tensors and plain Python values only (weights_only-safe)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": [dict(h) for h in self.history],
            "config": self.cfg.to_dict(),
            "class_names": list(self.data.class_names),
            # the last epoch's validation counts (rows true, columns predicted): a bundle's accuracy per class
            "confusion": None if self.confusion is None else self.confusion.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        changed = config_changes(state.get("config"), self.cfg.to_dict())
        if changed:
            raise ValueError(
                f"checkpoint: its config differs from this run's in {'; '.join(changed)}; only "
                f"{', '.join(RESUME_MAY_CHANGE)} and detector.* may change on resume"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
        confusion = state.get("confusion")  # None in a checkpoint of an earlier version
        self.confusion = None if confusion is None else np.asarray(confusion, dtype=np.int64)


RESUME_MAY_CHANGE = ("train.epochs", "train.device", "data.memory_cache_mb", "data.cache_dir")
"""Keys a resumed run may set anew besides ``detector.*``: how long and where it trains, what it keeps in memory;
every other key makes another run (another model, data or training)."""


def config_changes(saved: Any, now: dict[str, Any]) -> list[str]:
    """The keys of config dict ``now`` that a resume may not change and that differ from ``saved``'s, as
    ``key: saved -> now``; data.root and model.pretrained_path compared as absolute paths (a run of an earlier
    version recorded them as given: ``photos``, now made absolute); a key the saved config lacks (added by a
    later version) as its default. A ``saved`` that is no config dict differs in everything."""
    if not isinstance(saved, dict) or not all(isinstance(saved.get(s), dict) for s in now):
        return ["everything (the checkpoint holds no config of this version)"]
    defaults = RunConfig().to_dict()
    out = []
    for section, keys in now.items():
        if section == "detector":
            continue
        for key, value in keys.items():
            name = f"{section}.{key}"
            before = saved[section].get(key, defaults.get(section, {}).get(key))
            if name in ("data.root", "model.pretrained_path"):
                before, value = absolute_root(before), absolute_root(value)
            if name not in RESUME_MAY_CHANGE and before != value:
                out.append(f"{name}: {before!r} -> {value!r}")
    return out


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """The optimizer of ``train.optimizer``; weight decay applies to every parameter."""
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum)
    raise ValueError(f"train.optimizer: {t.optimizer!r} is not valid; choose adamw, adam or sgd")
