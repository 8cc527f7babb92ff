"""The mask-degeneracy detector: arrays in, verdict out. No torch.nn, no Ray, no W&B.

:func:`diagnose` looks at one batch of masks (N, heads, h, w) and says whether they have collapsed, and
how. :class:`DegeneracyMonitor` follows one trial across epochs and says when to prune it. Each failure is
one small rule class; the order of :data:`RULES` is the order of specificity (the first that fires names
the kind, the others go into the reasons).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tune_attn.config import ConfigError, DetectorConfig
from tune_attn.masks import as_masks, mask_statistics

HEALTHY = "healthy"
NONFINITE = "nonfinite"


@dataclass
class HeadFigures:
    """The figures of one head (or of all heads together) that the rules read."""

    mean_max: float
    dead_fraction: float
    corner_mass: float
    corner_uniform: float
    corners_used: float
    border_mass: float
    border_uniform: float
    peak_mass: float
    cells: int
    contrast: float
    entropy: float
    input_variation: float
    sums_to_one: bool


class Rule:
    """A rule reads a head's figures and returns a reason with the figure that fired, or None."""

    kind = ""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg

    def check(self, f: HeadFigures) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


class DeadRule(Rule):
    """A head is dead when most of its masks are all zero, or when its values are all near zero.
    The value test is skipped for masks that sum to 1 (spatial softmax), which cannot be small everywhere."""

    kind = "dead"

    def check(self, f: HeadFigures) -> str | None:
        if f.dead_fraction >= self.cfg.dead_fraction:
            return f"dead: {f.dead_fraction:.2f} of masks are all zero"
        if not f.sums_to_one and f.mean_max < self.cfg.dead_max:
            return f"dead: mask maximum {f.mean_max:.3f} (< {self.cfg.dead_max:g}), nearly zero everywhere"
        return None


class CornerRule(Rule):
    """Mass piled in the corners: the four corner blocks hold at least ``corner_ratio`` times a flat
    mask's share, spread over at least ``corner_min_blocks`` of them (the seed's "four corners"; a pile
    in one corner alone is a ``border`` or ``point`` failure)."""

    kind = "corner"

    def check(self, f: HeadFigures) -> str | None:
        if (
            f.corner_mass >= self.cfg.corner_ratio * f.corner_uniform
            and f.corners_used >= self.cfg.corner_min_blocks
        ):
            return f"corner: {f.corner_mass:.2f} of mass in corner cells (uniform {f.corner_uniform:.2f})"
        return None


class BorderRule(Rule):
    """Mass piled along the edges: the border ring holds at least ``border_ratio`` times a flat mask's
    share. Zero padding pulls masks there; the object rarely is."""

    kind = "border"

    def check(self, f: HeadFigures) -> str | None:
        if f.border_mass >= self.cfg.border_ratio * f.border_uniform:
            return f"border: {f.border_mass:.2f} of mass in border cells (uniform {f.border_uniform:.2f})"
        return None


class PointRule(Rule):
    """Collapsed onto a tiny spot: the single highest cell holds at least ``point_peak`` of the mass.
    Such a mask sees one part and misses the rest of the evidence."""

    kind = "point"

    def check(self, f: HeadFigures) -> str | None:
        if f.peak_mass >= self.cfg.point_peak:
            return f"point: {f.peak_mass:.2f} of mass in one cell (uniform {1 / f.cells:.3f})"
        return None


class FlatRule(Rule):
    """No contrast: the mask covers everything about equally (contrast below ``flat_contrast``).
    A flat mask selects nothing and explains nothing."""

    kind = "flat"

    def check(self, f: HeadFigures) -> str | None:
        if f.contrast < self.cfg.flat_contrast:
            return f"flat: contrast {f.contrast:.3f} (< {self.cfg.flat_contrast:g}), entropy {f.entropy:.2f}"
        return None


class StaticRule(Rule):
    """The same mask for every input: the masks' mean total-variation distance from their average is
    below ``static_variation``. Whatever the image shows, the mask does not move."""

    kind = "static"

    def check(self, f: HeadFigures) -> str | None:
        if f.input_variation < self.cfg.static_variation:
            return f"static: masks differ {f.input_variation:.3f} between inputs (< {self.cfg.static_variation:g})"
        return None


RULES: tuple[type[Rule], ...] = (DeadRule, CornerRule, BorderRule, PointRule, FlatRule, StaticRule)
REDUNDANT = "redundant"
KINDS = (HEALTHY, NONFINITE, *(r.kind for r in RULES), REDUNDANT)


@dataclass
class Diagnosis:
    """The verdict on one batch of masks."""

    degenerate: bool
    kind: str
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The reason that named the kind ('' when healthy)."""
        return self.reasons[0] if self.degenerate and self.reasons else ""


def make_config(config: DetectorConfig | None = None, **overrides: Any) -> DetectorConfig:
    """A DetectorConfig from an optional base and keyword overrides; an unknown name raises ValueError."""
    base = config or DetectorConfig()
    valid = [f.name for f in dataclasses.fields(DetectorConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown detector argument(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        return dataclasses.replace(base, **overrides)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _figures(
    stats_per: dict[str, np.ndarray],
    summary: dict[str, float],
    k: int,
    sums_to_one: bool,
    mean_max: float,
    cells: int,
) -> HeadFigures:
    return HeadFigures(
        mean_max=mean_max,
        dead_fraction=float(stats_per["dead_fraction"][k]),
        corner_mass=float(stats_per["corner_mass"][k]),
        corner_uniform=summary["corner_uniform"],
        corners_used=float(stats_per["corners_used"][k]),
        border_mass=float(stats_per["border_mass"][k]),
        border_uniform=summary["border_uniform"],
        peak_mass=float(stats_per["peak_mass"][k]),
        cells=cells,
        contrast=float(stats_per["contrast"][k]),
        entropy=float(stats_per["entropy"][k]),
        input_variation=float(stats_per["input_variation"][k]),
        sums_to_one=sums_to_one,
    )


def diagnose(masks: Any, config: DetectorConfig | None = None, **overrides: Any) -> Diagnosis:
    """Diagnose masks of shape (N, heads, h, w), numpy or torch, non-negative, in any activation's scale.

    Every head is checked by each rule of :data:`RULES`; the model is degenerate when at least
    ``head_quorum`` of its heads are (each head's own first rule counts), or when its heads overlap
    (``redundant``). NaN or Inf values make the masks degenerate with kind ``nonfinite``. Thresholds come
    from ``config`` (a :class:`DetectorConfig`) and keyword overrides, e.g. ``diagnose(m, corner_ratio=3)``.
    """
    cfg = make_config(config, **overrides)
    m = as_masks(masks)
    n, heads, h, w = m.shape
    if h < 4 or w < 4:
        raise ValueError(f"masks: a {h} x {w} map is too small to diagnose; need h, w >= 4")
    bad = ~np.isfinite(m)
    if bad.any():
        return Diagnosis(
            True,
            NONFINITE,
            [f"{NONFINITE}: {int(bad.sum())} of {m.size} mask values are NaN or Inf"],
            {"nonfinite_fraction": float(bad.mean())},
        )
    if (m < 0).any():
        raise ValueError(f"masks: minimum {m.min():.3g}; masks must be non-negative (an activation's output)")
    st = mask_statistics(m)
    stats = dict(st.summary)
    sums = m.reshape(n, heads, -1).sum(-1)  # (N, heads)
    rules = [r(cfg) for r in RULES]
    head_kinds: list[str] = []
    reasons: list[str] = []
    for k in range(heads):
        sums_to_one = bool(np.allclose(sums[:, k], 1.0, atol=1e-3))
        figs = _figures(st.per_head, stats, k, sums_to_one, float(st.per_head["max"][k]), h * w)
        fired = [(r.kind, msg) for r in rules if (msg := r.check(figs)) is not None]
        head_kinds.append(fired[0][0] if fired else HEALTHY)
        prefix = f"head {k} " if heads > 1 else ""
        reasons.extend(f"{prefix}{msg}" for _, msg in fired)
        for key in ("corner_mass", "border_mass", "peak_mass", "contrast", "entropy", "input_variation"):
            stats[f"h{k}.{key}"] = float(st.per_head[key][k])
    sick = [kd for kd in head_kinds if kd != HEALTHY]
    redundant = heads > 1 and stats["head_overlap"] >= cfg.redundant_overlap
    if redundant:
        reasons.append(
            f"{REDUNDANT}: heads overlap {stats['head_overlap']:.2f} (>= {cfg.redundant_overlap:g})"
        )
    if sick and len(sick) >= cfg.head_quorum * heads - 1e-9:
        order = [r.kind for r in RULES]
        kind = min(sick, key=order.index)
    elif redundant:
        kind = REDUNDANT
    else:
        return Diagnosis(False, HEALTHY, reasons, stats)
    first = next(i for i, r in enumerate(reasons) if f"{kind}:" in r)
    lead = reasons.pop(first)  # the reason that names the kind goes first
    # Several heads: say that it is not that one head alone ("all 3 heads flat; head 0 flat: ...").
    if heads > 1 and kind != REDUNDANT:
        lead = f"{_heads_told(head_kinds)}; {lead}"
    return Diagnosis(True, kind, [lead, *reasons], stats)


def _heads_told(head_kinds: Sequence[str]) -> str:
    """How many heads failed, and how: ``all 3 heads flat``, ``2 of 3 heads degenerate (1 corner, 1 flat)``."""
    sick = [k for k in head_kinds if k != HEALTHY]
    counts = {k: sick.count(k) for k in sorted(set(sick))}
    some = "all" if len(sick) == len(head_kinds) else f"{len(sick)} of"
    how = (
        next(iter(counts))
        if len(counts) == 1
        else f"degenerate ({', '.join(f'{n} {k}' for k, n in counts.items())})"
    )
    return f"{some} {len(head_kinds)} heads {how}"


@dataclass
class Verdict:
    """The monitor's answer after one check."""

    prune: bool
    kind: str
    reason: str
    streak: int
    diagnosis: Diagnosis


class DegeneracyMonitor:
    """Follows one trial's masks across epochs and says when to prune it.

    Checks in the first ``grace_epochs`` epochs are ignored; after that, ``patience`` degenerate
    diagnoses in a row give a prune verdict whose reason names the kind, the figure and the streak,
    e.g. ``corner: 0.81 of mass in corner cells (uniform 0.25) for 3 epochs``.
    """

    def __init__(self, config: DetectorConfig | None = None, **overrides: Any) -> None:
        self.cfg = make_config(config, **overrides)
        self.streak = 0
        self.kind = HEALTHY
        self.last_epoch = 0
        self.history: list[tuple[int, str]] = []  # (epoch, kind) of every check

    def update(self, epoch: int, masks: Any) -> Verdict:
        """Diagnose this epoch's masks and return the verdict."""
        if epoch <= self.last_epoch:
            raise ValueError(f"epoch: {epoch} after epoch {self.last_epoch}; epochs must increase")
        d = diagnose(masks, self.cfg)
        prune = self.observe(epoch, d.degenerate)
        self.history.append((epoch, d.kind))
        self.kind = d.kind
        if not self.streak:
            return Verdict(False, d.kind, "", 0, d)
        epochs = "epoch" if self.streak == 1 else "epochs"
        return Verdict(prune, d.kind, f"{d.reason} for {self.streak} {epochs}", self.streak, d)

    def observe(self, epoch: int, degenerate: bool) -> bool:
        """Count one epoch's diagnosis into the streak and say whether to prune (the rule of this class;
        :meth:`update` calls it, and a replay of recorded diagnoses can too)."""
        if epoch <= self.last_epoch:
            raise ValueError(f"epoch: {epoch} after epoch {self.last_epoch}; epochs must increase")
        self.last_epoch = epoch
        if epoch <= self.cfg.grace_epochs or not degenerate:
            self.streak = 0
            return False
        self.streak += 1
        return self.streak >= self.cfg.patience

    def state_dict(self) -> dict[str, Any]:
        """Plain data (JSON- and weights_only-safe)."""
        return {
            "streak": self.streak,
            "kind": self.kind,
            "last_epoch": self.last_epoch,
            "history": [[e, k] for e, k in self.history],
            "config": dataclasses.asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streak = int(state["streak"])
        self.kind = str(state["kind"])
        self.last_epoch = int(state["last_epoch"])
        self.history = [(int(e), str(k)) for e, k in state["history"]]
