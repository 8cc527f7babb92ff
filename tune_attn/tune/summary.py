"""A finished sweep's summary: the table (CSV + JSON, one row per trial), the sweep plots (PNG) and the Optuna
study as a SQLite file."""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tune_attn.files import in_place
from tune_attn.status import LOST

SUMMARY_FIGURES = (
    "detector.kind",
    "mask.entropy",
    "mask.corner_mass",
    "mask.border_mass",
    "mask.object_mass",
    "mask.head_overlap",
)

STATUS_STYLE = {
    "completed": ("o", "tab:blue"),
    "pruned": ("x", "tab:red"),
    "stopped": ("s", "tab:orange"),
    "error": ("^", "black"),
}
ACTIVATION_COLOUR = {"sigmoid": "tab:green", "relu": "tab:purple", "softmax": "tab:blue"}


def _acc(row: dict[str, Any]) -> float:
    v = row.get("best_val_accuracy")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else float("nan")


def count_statuses(statuses: Iterable[str]) -> str:
    """How many trials ended each way, e.g. ``3 completed, 2 pruned``; ``pruned:flat`` counts as ``pruned``.
    Empty when no trial has ended."""
    counts = Counter(status.split(":")[0] for status in statuses)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def pruned_ahead(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """The pruned trials whose best accuracy before they were stopped is above every completed trial's best,
    highest first, and that best completed accuracy. Empty when no trial completed or none is ahead.

    TPE ranks a pruned trial below every completed one, so such trials mean the search was steered away
    from a region that was doing well (its masks collapsed, not necessarily its neighbours')."""
    completed = [_acc(r) for r in rows if r["status"] == "completed" and math.isfinite(_acc(r))]
    if not completed:
        return [], float("nan")
    best = max(completed)
    ahead = [r for r in rows if str(r["status"]).startswith("pruned:") and _acc(r) > best]
    return sorted(ahead, key=_acc, reverse=True), best


def pruned_ahead_note(rows: list[dict[str, Any]], path: str) -> str | None:
    """A line for the end of a sweep when :func:`pruned_ahead` finds trials (None otherwise)."""
    ahead, best_completed = pruned_ahead(rows)
    if not ahead:
        return None
    top, many = ahead[0], len(ahead) > 1
    return (
        f"note: {len(ahead)} pruned trial{'s' if many else ''} had reached a higher accuracy before "
        f"{'they were' if many else 'it was'} stopped than any completed trial did ({top['trial_id']}: "
        f"{_acc(top):.3f} by epoch {top['epochs']}, {top['status']}; completed trials at most "
        f"{best_completed:.3f}). TPE steers away from pruned trials, so this sweep may have left a region where "
        f"healthy configs do better: list them with `tune-attn best {shlex.quote(str(path))} --show-pruned`, or compare with a "
        "--no-prune sweep."
    )


def write_table(folder: Path, rows: list[dict[str, Any]]) -> None:
    """summary.json and summary.csv in ``folder``, each written beside and moved into place: a reader (`tune-attn
    best`) never finds half a file, even when a second Ctrl+C ends the sweep while it writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    with in_place(folder / "summary.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=1, default=str))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with in_place(folder / "summary.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


STUDY_FILE = "study.db"
"""The sweep's Optuna study in its folder, a SQLite file (:func:`write_study`)."""


def write_study(folder: Path, study: Any, name: str) -> Path:
    """The sweep's Optuna study as :data:`STUDY_FILE` in ``folder``, a study named ``name``: every trial with its
    state (COMPLETE, PRUNED, FAIL; RUNNING for one a stop interrupted), params, value, per-epoch values and user
    attributes (``status``, ``masks``, ``prune_reason``, ``error``, ``ray_trial_id``), for Optuna's own tools:
    ``optuna.load_study(study_name=name, storage="sqlite:///.../study.db")``, ``optuna-dashboard``. Written anew
    each time the sweep ends (a resumed or grown sweep's holds every trial), replacing the old file at once.
    An OSError names the file when it cannot be written (a full disk, a folder in its place)."""
    import optuna
    import sqlalchemy.exc

    target = folder / STUDY_FILE
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in RDB ..."
    try:
        with in_place(target) as tmp:
            storage = optuna.storages.RDBStorage(f"sqlite:///{tmp.resolve()}")
            try:
                copy = optuna.create_study(storage=storage, study_name=name, directions=study.directions)
                copy.add_trials(study.trials)
            finally:
                storage.engine.dispose()
    except (OSError, sqlalchemy.exc.SQLAlchemyError) as exc:  # a full disk, a folder in the way, ...
        raise OSError(f"{target}: {str(exc).splitlines()[0]}") from exc
    finally:
        optuna.logging.set_verbosity(verbosity)
    return target


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path)
    return path


def accuracy_vs_weight_decay(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Best validation accuracy against weight decay (log), colour = activation, marker = how it ended; None
    when no trial has both (every trial failed before its first epoch)."""
    points = [
        row
        for row in rows
        if isinstance(wd := row.get("train.weight_decay"), (int, float))
        and wd > 0
        and math.isfinite(_acc(row))
    ]
    if not points:  # a log axis with nothing on it cannot be drawn
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for row in points:
        wd = row["train.weight_decay"]
        marker, _ = STATUS_STYLE.get(str(row["status"]).split(":")[0], ("o", "grey"))
        colour = ACTIVATION_COLOUR.get(str(row.get("model.activation")), "grey")
        ax.scatter([wd], [_acc(row)], marker=marker, color=colour, s=40)
        if str(row["status"]).startswith("pruned:"):
            ax.annotate(
                row["status"].split(":")[1],
                (wd, _acc(row)),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.set_xlabel("train.weight_decay")
    ax.set_ylabel("best val_accuracy")
    handles = [ax.scatter([], [], color=c, label=a) for a, c in ACTIVATION_COLOUR.items()]
    handles += [ax.scatter([], [], marker=m, color="grey", label=s) for s, (m, _) in STATUS_STYLE.items()]
    ax.legend(handles=handles, fontsize=7)
    ax.set_title("accuracy against weight decay (x = pruned for degeneracy)", fontsize=9)
    return _save(fig, path)


def heads_vs_accuracy(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Best validation accuracy against the number of heads, marker = how it ended; None when no trial has both."""
    points = [row for row in rows if isinstance(row.get("model.heads"), int) and math.isfinite(_acc(row))]
    if not points:
        return None
    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.subplots()
    for row in points:
        marker, colour = STATUS_STYLE.get(str(row["status"]).split(":")[0], ("o", "grey"))
        ax.scatter([row["model.heads"]], [_acc(row)], marker=marker, color=colour, s=40)
    ax.set_xlabel("model.heads")
    ax.set_ylabel("best val_accuracy")
    ax.set_title("heads against accuracy (x = pruned)", fontsize=9)
    return _save(fig, path)


def importances(study: Any, path: Path) -> Path | None:
    """Optuna's parameter importances over the completed trials; None when there are too few to tell
    parameters apart (Optuna then warns that it gives them all the same importance)."""
    import warnings

    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            imp = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError, ZeroDivisionError):
            return None
    if not imp or any("importances will be equal" in str(w.message) for w in caught):
        return None
    fig = Figure(figsize=(5, 0.4 * len(imp) + 1), dpi=100)
    ax = fig.subplots()
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    ax.set_xlabel("importance for val_accuracy (Optuna's default evaluator)")
    return _save(fig, path)


def write_plots(
    folder: Path, rows: list[dict[str, Any]], study: Any, echo: Callable[[str], None] = print
) -> list[Path]:
    """The sweep plots that the rows allow (lost trials left out: see :data:`~tune_attn.status.LOST`); returns
    the files written. A plot that cannot be drawn or written is said with ``echo`` and left out: the plots come
    after the summary, and never take the end of a sweep down."""
    rows = [r for r in rows if r["status"] != LOST]
    plots: list[tuple[str, Callable[[Path], Path | None]]] = [
        ("accuracy_vs_weight_decay.png", lambda p: accuracy_vs_weight_decay(rows, p)),
        ("heads_vs_accuracy.png", lambda p: heads_vs_accuracy(rows, p)),
    ]
    if study is not None:
        plots.append(("param_importances.png", lambda p: importances(study, p)))
    out = []
    for name, draw in plots:
        try:
            drawn = draw(folder / name)
        except Exception as exc:  # matplotlib's errors have no common base; a full disk is an OSError
            echo(f"note: {folder / name} not drawn ({type(exc).__name__}: {exc})")
            continue
        if drawn is not None:
            out.append(drawn)
    return out
