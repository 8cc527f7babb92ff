"""How a run (a sweep trial) ended, from its last epoch's metrics: ``completed``, ``pruned:<kind>``,
``stopped:asha``, ``error`` or ``interrupted``, with its reason.

Pure functions on metric dicts, no torch: the sweep, its trials, W&B and the leaderboard (``tune-attn best``)
all name a run's status the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

METRIC = "val_accuracy"
"""The metric a run is judged by (sweeps maximize it)."""
ERROR = "error"
"""Metrics key of a run's last result when its training failed in a way that would only fail again (a NaN or
infinite loss): the error, ``TrainingDiverged: epoch 3, batch 1: loss is nan``. The run ends there (a sweep
trial is not started again from its checkpoint) with status ``error`` and this reason."""
INTERRUPTED = "interrupted"
"""The status of a sweep trial that was still training (or waiting to start) when the sweep was stopped
(Ctrl+C); ``--resume`` continues it from its last checkpoint."""


LOST = "lost"
"""The status of a sweep trial that Tune does not know: it started after the sweep last saved its state, and the
driver died (killed, its machine gone) before it saved again, so the resumed sweep did not go on with it. Its
run folder keeps the epochs it trained; the search usually proposed its config again, as a new trial."""
LOST_MARK = "lost.json"
"""In a lost trial's run folder: ``{"status": "lost", "reason": ...}``, written when a sweep resumes without it
(so that ``tune-attn best`` tells it apart while the resumed sweep runs)."""


def started_trials(rows: Iterable[dict[str, Any]]) -> int:
    """How many of a sweep's trials (summary rows) Tune started: every one but a :data:`LOST` one, whose config
    the search proposed again, as another trial."""
    return sum(r["status"] != LOST for r in rows)


def pickable(row: dict[str, Any]) -> bool:
    """Whether a trial (``status`` and ``detector.kind``, as the summary rows hold them) may be picked as a sweep's
    best: it completed, with healthy masks at the end. ``tune-attn best``, the sweep's progress and its last
    word all ask this."""
    return row["status"] == "completed" and row.get("detector.kind") == "healthy"


def the_pick(
    rows: Iterable[dict[str, Any]],
    metric: str = "last_val_accuracy",
    eligible: Callable[[dict[str, Any]], bool] = pickable,
) -> dict[str, Any] | None:
    """The trial a sweep picks as its best: of the rows that are ``eligible`` (:func:`pickable`: completed, with
    healthy masks at the end), the first by :func:`rank_key`: the highest ``metric``, and of those that tie the
    earliest trial; None when no row is eligible. ``tune-attn best``, the sweep's last word and its W&B run all
    pick so, whatever order each reads the rows in."""
    return min((r for r in rows if eligible(r)), key=lambda r: rank_key(r, metric), default=None)


def rank_key(row: dict[str, Any], metric: str) -> tuple[float, float, str]:
    """Sort key that puts the best row first: the highest ``metric`` (:func:`ranked_value`); on a tie (accuracy on
    a validation set takes few values) the earlier trial by its Optuna ``number``, as Optuna's ``best_trial``
    takes it, a row without one (a sweep still running) after those with one; then the trial id. So the same
    rows rank alike in every reader: the sweep's summary lists them by number, its folder by trial id."""
    number = row.get("number")
    return (
        -ranked_value(row, metric),
        float(number) if isinstance(number, int) else math.inf,
        str(row.get("trial_id") or ""),
    )


def ranked_value(row: dict[str, Any], metric: str) -> float:
    """A row's ``metric`` to rank it by: the number, or -inf where it is none or not finite (NaN), last."""
    v = row.get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def interrupted_when(last: dict[str, Any] | None) -> str:
    """When a run whose last epoch's metrics were ``last`` was interrupted: ``after epoch 3 of 12``."""
    epoch = (last or {}).get("epoch")
    return (
        f"after epoch {epoch} of {(last or {}).get('epochs_budget', '?')}"
        if epoch
        else "before its first epoch"
    )


def interrupted_reason(last: dict[str, Any] | None) -> str:
    """The reason of an :data:`INTERRUPTED` trial whose last epoch's metrics were ``last``."""
    return f"interrupted {interrupted_when(last)}; --resume continues it"


def run_status(result: dict[str, Any] | None, error: bool, metric: str) -> tuple[str, str]:
    """(status, reason) of a finished run (a sweep trial) from its last result: ``completed``,
    ``pruned:<kind>`` (the degeneracy monitor stopped it), ``stopped:asha`` (ended before its epoch budget
    without an error: a scheduler stopped it) or ``error`` (``error``: the trial raised; or the result says
    why its training failed, :data:`ERROR`; or its metric is not a finite number)."""
    if error or not result:
        return "error", "the trial raised an error (see its error.txt)"
    if result.get(ERROR):
        return "error", str(result[ERROR])
    value = result.get(metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "error", f"{metric} is {value!r}"
    if result.get("detector.prune") and result.get("prune_enabled", 1.0):
        return f"pruned:{result.get('detector.kind', 'degenerate')}", str(result.get("detector.reason", ""))
    if result.get("epoch", 0) < result.get("epochs_budget", 0):
        return "stopped:asha", f"stopped by the scheduler after epoch {result.get('epoch')}"
    return "completed", ""


def is_last_epoch(metrics: dict[str, Any]) -> bool:
    """Whether a run ends after the epoch with these metrics: its epoch budget is reached, it is pruned, or its
    training failed for good (:data:`ERROR`)."""
    if metrics.get(ERROR):
        return True
    pruned = bool(metrics.get("detector.prune")) and bool(metrics.get("prune_enabled", 1.0))
    return pruned or metrics.get("epoch", 0) >= metrics.get("epochs_budget", math.inf)


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Diverged)\w*: ")
_FAILURE = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)$", re.M)  # a section of Tune's error.txt


def error_reason(error: BaseException | str) -> str:
    """The trial's own exception and message, without the traceback that Ray wraps around it; of the last
    failure, in a trial's error file that holds several. Without an exception line (a node that died, say),
    the lines of Ray's message that are not indented."""
    lines = _FAILURE.split(str(error))[-1].strip().splitlines()
    starts = [i for i, line in enumerate(lines) if _EXC_LINE.match(line)]
    if starts:
        return " ".join(lines[starts[-1] :])[:500]
    return " ".join(line for line in lines if line[:1] not in (" ", "\t"))[:500]


_RAY_IP = re.compile(r"\bip[=:] ?(\d{1,3}(?:\.\d{1,3}){3})\b")


def failed_on(error: str) -> str | None:
    """The node address where a trial's last failure happened, as Ray's error text names it (``ip=10.0.1.7``
    in a task's error, ``ip: 10.0.1.7`` in an actor's), or None. A trial whose actor never started there has
    no result from that node."""
    found = _RAY_IP.findall(_FAILURE.split(error)[-1])
    return found[-1] if found else None
