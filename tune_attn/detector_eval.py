"""Measuring the degeneracy detector on labeled masks: a confusion matrix, false alarms and recall.

Pure numpy, like the detector. A labeled set is a list of :class:`LabeledMasks`; the shipped one, built
from real training runs by ``benchmarks/build_eval_set.py``, loads with :func:`load_eval_set`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune_attn.config import DetectorConfig
from tune_attn.degeneracy import HEALTHY, KINDS, diagnose


@dataclass
class LabeledMasks:
    """One batch of masks (N, heads, h, w) with its label and where it came from."""

    masks: np.ndarray
    label: str
    source: str


@dataclass
class EvalReport:
    """Counts of (label, predicted kind), and the figures the targets are stated in."""

    counts: Counter[tuple[str, str]]
    labels: tuple[str, ...]
    mistakes: list[tuple[str, str, str]]  # (source, label, predicted kind)

    def total(self, label: str) -> int:
        return sum(n for (t, _), n in self.counts.items() if t == label)

    def false_alarm_rate(self) -> float:
        """Share of healthy batches called degenerate."""
        n = self.total(HEALTHY)
        return sum(c for (t, p), c in self.counts.items() if t == HEALTHY and p != HEALTHY) / n if n else 0.0

    def recall(self, label: str) -> float:
        """Share of the batches labeled ``label`` that the detector names ``label``."""
        n = self.total(label)
        return self.counts[(label, label)] / n if n else float("nan")

    def detected(self, label: str) -> float:
        """Share of the batches labeled ``label`` called degenerate at all (any kind)."""
        n = self.total(label)
        return (
            sum(c for (t, p), c in self.counts.items() if t == label and p != HEALTHY) / n
            if n
            else float("nan")
        )

    def markdown(self) -> str:
        """The confusion matrix as a Markdown table: rows are labels, columns the detector's kinds."""
        cols = [k for k in KINDS if any(p == k for (_, p) in self.counts)]
        lines = [
            "| label \\ detector | " + " | ".join(cols) + " | n | recall |",
            "| --- |" + " --- |" * (len(cols) + 2),
        ]
        for label in self.labels:
            cells = [str(self.counts[(label, c)]) for c in cols]
            lines.append(
                f"| {label} | " + " | ".join(cells) + f" | {self.total(label)} | {self.recall(label):.3f} |"
            )
        return "\n".join(lines)


def evaluate(items: Sequence[LabeledMasks], config: DetectorConfig | None = None) -> EvalReport:
    """Diagnose every labeled batch and count (label, kind) pairs."""
    counts: Counter[tuple[str, str]] = Counter()
    mistakes = []
    for item in items:
        kind = diagnose(item.masks, config).kind
        counts[(item.label, kind)] += 1
        if kind != item.label:
            mistakes.append((item.source, item.label, kind))
    labels = tuple(k for k in KINDS if any(t == k for (t, _) in counts))
    return EvalReport(counts, labels, mistakes)


def load_eval_set(path: str | Path) -> list[LabeledMasks]:
    """Read a set written by ``benchmarks/build_eval_set.py``: ``<path>.npz`` (masks) + ``<path>.json``."""
    path = Path(path)
    index = json.loads(path.with_suffix(".json").read_text())
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        return [LabeledMasks(z[e["key"]].astype(np.float64), e["label"], e["source"]) for e in index["items"]]
