"""Read a sweep folder (or URI) into one row per trial, rank the trials and pick the best: ``tune-attn best``.

A sweep folder is read from the files the trials write themselves (``trial_*/run/metrics.jsonl``,
``config.yaml``) and, once the sweep has finished, its ``summary.json`` (statuses such as ``stopped:asha`` or
``error`` that only the driver knows), so a running sweep can be ranked too. No torch here: the leaderboard
is shown in well under a second; :mod:`tune_attn.export` writes the picked trial's bundle.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shlex
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tune_attn.config import flat_keys
from tune_attn.files import RUN_LOCK, lock_holder
from tune_attn.status import (
    INTERRUPTED,
    LOST_MARK,
    METRIC,
    interrupted_reason,
    interrupted_when,
    is_last_epoch,
    pickable,
    rank_key,
    run_status,
    started_trials,
    the_pick,
)
from tune_attn.tune.options import SWEEP_RECORD, resume_command, running_driver
from tune_attn.tune.search import SearchSpace

METRICS = ("last_val_accuracy", "best_val_accuracy")
"""What the leaderboard ranks by: the accuracy at the last epoch (that of the exported weights) or the best."""
QUALITY = "mask.object_mass"
"""The attention quality figure ``--min-object-mass`` asks of a pick."""


class SweepError(ValueError):
    """A sweep folder (or URI) is missing, unreadable or not a sweep's; the message names it."""


def is_uri(experiment: str | Path) -> bool:
    """A sweep at a URI (``s3://bucket/sweeps/name``, ``gs://...``, ``file://...``), not a local folder."""
    return "://" in str(experiment)


@contextlib.contextmanager
def sweep_folder(experiment: str | Path, trial: str | None = None) -> Iterator[Path]:
    """The local folder to read a sweep from: ``experiment`` itself, or for a URI a temporary copy (see
    :func:`fetch_sweep`, which ``trial`` is passed to), removed afterwards."""
    if not is_uri(experiment):
        yield Path(experiment)
        return
    with tempfile.TemporaryDirectory(prefix="tune-attn-sweep-") as tmp:
        fetch_sweep(str(experiment), Path(tmp), trial)
        yield Path(tmp)


def run_uri(experiment: str, trial_id: str) -> str:
    """The URI of a trial's run folder in a sweep at a URI."""
    return f"{experiment.rstrip('/')}/trial_{trial_id}/run"


def read_sweep_at(experiment: str | Path) -> list[dict[str, Any]]:
    """:func:`read_sweep` of a sweep folder or URI; for a URI each row's ``run`` is the run folder's URI."""
    with sweep_folder(experiment) as folder:
        rows = read_sweep(folder)
    if is_uri(experiment):
        for r in rows:
            r["run"] = run_uri(str(experiment), r["trial_id"]) if r["run"] else ""
    return rows


FETCHED = ".fetched-from"
"""The file in a folder that :func:`fetch_sweep` copied a whole sweep into: the sweep's URI. Fetching that URI
into the folder again brings the copy up to date."""


def check_fetch_folder(uri: str, dest: Path) -> None:
    """Refuse (:class:`SweepError`) a ``dest`` that a fetch of ``uri`` could not fill without mixing it with
    something else: a file, or a folder holding anything but an earlier fetch of the same URI."""
    if dest.exists() and not dest.is_dir():
        raise SweepError(f"{dest}: a file, not a folder; choose a new folder")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    try:
        earlier = (dest / FETCHED).read_text().strip()
    except OSError:
        earlier = ""
    if earlier != uri.rstrip("/"):
        raise SweepError(
            f"{dest}: not an empty folder{f' (a copy of {earlier})' if earlier else ''}; choose a new one, or the "
            f"folder an earlier fetch of {uri} filled, to bring that copy up to date"
        )


def fetch_sweep(uri: str, dest: Path, trial: str | None = None, everything: bool = False) -> int:
    """Copy from a sweep at ``uri`` into ``dest`` its ``summary.json`` and ``sweep.json``, and: each trial's
    ``run/metrics.jsonl`` and ``run/config.yaml``, what :func:`read_sweep` reads (a few small files per trial,
    not Ray's checkpoints); or with ``trial``, that trial's whole run folder only (checkpoint, panels; not its
    W&B run), for :func:`tune_attn.export.export_bundle`; or with ``everything``, every file but Ray's
    checkpoints (each trial's run folder with its panels and offline W&B run, the plots, Ray's results and
    searcher state; ``dest`` is marked as its copy, :data:`FETCHED`). A file already in ``dest`` with the size
    and time it has at the URI is not copied again. Returns the number of files copied."""
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        found = fs.get_file_info(root).type == pyarrow.fs.FileType.Directory
    except (OSError, ValueError) as exc:  # pyarrow's errors are OSError / ArrowInvalid (a ValueError)
        raise SweepError(f"{uri}: cannot read it ({exc})") from None
    if not found:
        raise SweepError(f"{uri}: no such sweep folder")
    root = root.rstrip("/")

    def files(folder: str, skip: str) -> set[str]:
        every = fs.get_file_info(pyarrow.fs.FileSelector(folder, recursive=True, allow_not_found=True))
        return {e.path for e in every if e.type == pyarrow.fs.FileType.File and skip not in e.path}

    wanted = {f"{root}/summary.json", f"{root}/{SWEEP_RECORD}"}
    if everything:
        wanted |= files(root, "/checkpoint_")
    elif trial is not None:
        wanted |= files(f"{root}/trial_{trial}/run", "/wandb/")
    else:
        for entry in fs.get_file_info(pyarrow.fs.FileSelector(root)):
            if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith("trial_"):
                wanted |= {f"{entry.path}/run/metrics.jsonl", f"{entry.path}/run/config.yaml"}
    if everything:  # first: a fetch stopped half way is continued by the next one
        dest.mkdir(parents=True, exist_ok=True)
        (dest / FETCHED).write_text(uri.rstrip("/") + "\n")
    copied = 0
    for info in fs.get_file_info(sorted(wanted)):
        if info.type != pyarrow.fs.FileType.File:
            continue
        target = dest / info.path[len(root) + 1 :]
        with contextlib.suppress(OSError):
            st = target.stat()
            if info.mtime_ns is not None and (st.st_size, st.st_mtime_ns) == (info.size, info.mtime_ns):
                continue  # as it is there
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src:
            target.write_bytes(src.read())
        if info.mtime_ns is not None:
            os.utime(target, ns=(info.mtime_ns, info.mtime_ns))
        copied += 1
    return copied


def read_sweep(experiment: str | Path) -> list[dict[str, Any]]:
    """One row per trial: trial id, status and reason, accuracies, epochs, detector verdict, mask figures, the
    flat config and the run folder. Works while the sweep runs (a trial still training is ``running``; one that
    a Ctrl+C stopped is ``interrupted`` until a resumed sweep goes on with it, and so is one left mid-way by a
    driver that died, told by the sweep's lock: :func:`~tune_attn.tune.options.running_driver`); a trial that
    failed before its first epoch is known only once the sweep has finished (``summary.json``)."""
    folder = Path(experiment)
    if not folder.is_dir():
        raise SweepError(f"{folder}: no such sweep folder")
    if not is_sweep_folder(folder) and not any(folder.glob("trial_*")):
        raise SweepError(
            f"{folder}: not a sweep folder (no sweep.json, summary.json or trial_* in it); give the folder that "
            "`tune-attn sweep` printed as its results"
        )
    space = _recorded_space(folder)
    driver = running_driver(folder)  # None: not known (a copy, a URI); "": no driver runs the sweep
    final = {}
    if (folder / "summary.json").is_file():
        try:
            final = {r["trial_id"]: r for r in json.loads((folder / "summary.json").read_text())}
        except (ValueError, TypeError, KeyError) as exc:
            raise SweepError(
                f"{folder / 'summary.json'}: not a sweep summary ({exc}); the sweep writes it at its end: run it "
                "again with --resume to write it anew, or move it away to list the trials from their folders"
            ) from None
    rows = []
    for run in sorted(folder.glob("trial_*/run")):
        history = _history(run)
        if not history:
            continue
        last = history[-1]
        trial_id = run.parent.name.removeprefix("trial_")
        done = final.get(trial_id)
        if done is not None and done["status"] == INTERRUPTED and (is_last_epoch(last) or driver):
            done = None  # a resumed sweep has finished it since, or goes on with it now
        if done is None and (run / LOST_MARK).is_file():  # known lost before the resumed sweep's summary
            with contextlib.suppress(OSError, ValueError):
                done = json.loads((run / LOST_MARK).read_text())
        if done is not None:
            status, reason = done["status"], done.get("reason", "")
        elif is_last_epoch(last):
            status, reason = run_status(last, False, METRIC)
        elif driver == "":  # its driver died (killed, the machine went down) before the trial ended
            status, reason = INTERRUPTED, interrupted_reason(last)
        else:
            status, reason = "running", f"epoch {last['epoch']} of {last.get('epochs_budget', '?')}"
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "number": (done or {}).get("number"),
            "status": status,
            "reason": reason,
            "tried": (done or {}).get("tried"),
            **_figures(run, history),
        }
        row["drawn"] = None if space is None else space.drawn_keys(row["config"])
        row["run"] = str(run)
        rows.append(row)
    seen = {r["trial_id"] for r in rows}
    for trial_id, done in final.items():  # trials that failed before their first epoch
        if trial_id not in seen:
            rows.append(
                {
                    "trial_id": trial_id,
                    "number": done.get("number"),
                    "status": done["status"],
                    "reason": done.get("reason", ""),
                    "tried": done.get("tried"),
                    "last_val_accuracy": None,
                    "best_val_accuracy": None,
                    "epochs": None,
                    "detector.kind": None,
                    "config": {},
                    "drawn": None if space is None else [],
                    "run": "",
                }
            )
    return rows


def is_sweep_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a sweep's record or summary (``sweep.json``, ``summary.json``)."""
    return any((folder / name).exists() for name in (SWEEP_RECORD, "summary.json"))


def _history(run: Path) -> list[dict[str, Any]]:
    """Every finished epoch's metrics of a run folder (its ``metrics.jsonl``), oldest first."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return [json.loads(x) for x in lines if x.strip()]


def _figures(run: Path, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A run's accuracies, epochs, last verdict and mask figures (from its ``history``) and flat config."""
    last = history[-1]
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    return {
        "last_val_accuracy": last.get(METRIC),
        "best_val_accuracy": max(h.get(METRIC, -math.inf) for h in history),
        "epochs": last.get("epoch"),
        "detector.kind": last.get("detector.kind"),
        **{k: v for k, v in last.items() if k.startswith("mask.") and ".h" not in k},
        "config": flat_keys(config),
    }


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is the folder of one training run (``tune-attn train --out``, or a sweep trial's ``run``):
    it holds ``checkpoint.pt`` and ``config.yaml``."""
    path = Path(path)
    return not is_uri(path) and (path / "checkpoint.pt").is_file() and (path / "config.yaml").is_file()


def trial_of_run(run: str | Path) -> tuple[Path, str] | None:
    """The sweep folder and trial id of a sweep trial's run folder (``SWEEP/trial_<id>/run``); None for another."""
    run = Path(run).absolute()
    trial, sweep = run.parent, run.parent.parent
    if run.name != "run" or not trial.name.startswith("trial_"):
        return None
    if not is_sweep_folder(sweep):
        return None
    return sweep, trial.name.removeprefix("trial_")


def read_run(run: str | Path) -> dict[str, Any]:
    """The row of one ``tune-attn train`` run folder, with the keys of :func:`read_sweep`'s rows: its status from
    its last epoch (before its epoch budget: ``running`` while a process trains into it, told by its
    :data:`~tune_attn.files.RUN_LOCK`, else ``interrupted``), ``trial_id`` None."""
    run = Path(run)
    history = _history(run)
    if not history:
        raise SweepError(f"{run}: no epoch of this run has finished (its metrics.jsonl is empty or missing)")
    last = history[-1]
    trainer = lock_holder(run, RUN_LOCK)  # "": none trains into it; None: not known (a copy, an older run)
    if is_last_epoch(last):
        status, reason = run_status(last, False, METRIC)
    elif trainer:
        status, reason = (
            "running",
            f"epoch {last['epoch']} of {last.get('epochs_budget', '?')}: training now ({trainer})",
        )
    else:
        stopped = "stopped before its last epoch" + (", or training still" if trainer is None else "")
        status, reason = (
            INTERRUPTED,
            f"{interrupted_when(last)}: {stopped}; tune-attn train --out {shlex.quote(str(run))} --resume goes on",
        )
    return {
        "trial_id": None,
        "number": None,
        "status": status,
        "reason": reason,
        **_figures(run, history),
        "drawn": None,
        "run": str(run),
    }


def _recorded_space(folder: Path) -> SearchSpace | None:
    """The sweep's space as its ``sweep.json`` recorded it; None for a sweep without that record (or one this
    version cannot read)."""
    try:
        record = json.loads((folder / SWEEP_RECORD).read_text())
        return SearchSpace.from_dict(record["space"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def searched_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The config keys a leaderboard shows for each trial: those the sweep drew for some trial (from the space
    ``sweep.json`` records); for a sweep without that record, those whose value differs between trials."""
    drawn = [r["drawn"] for r in rows if r.get("drawn") is not None]
    if drawn:
        return sorted({k for keys in drawn for k in keys})
    return sorted({k for r in rows for k in r["config"] if len({str(x["config"].get(k)) for x in rows}) > 1})


def was_drawn(row: dict[str, Any], key: str) -> bool:
    """Whether ``key`` was drawn for this trial (always true for a sweep without a recorded space)."""
    return row.get("drawn") is None or key in row["drawn"]


def rank(
    rows: Sequence[dict[str, Any]],
    metric: str = "last_val_accuracy",
    min_object_mass: float | None = None,
    show_pruned: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The leaderboard (best first) and the pick: the best trial by ``metric`` among those that completed
    with healthy masks at the end (and, with ``min_object_mass``, with at least that share of mask mass on
    the object). Pruned, stopped and failed trials are listed only with ``show_pruned``, never picked."""
    if metric not in METRICS:
        raise ValueError(f"--metric: {metric!r} is not valid; choose one of {', '.join(METRICS)}")
    if min_object_mass is not None:
        if not 0.0 <= min_object_mass <= 1.0:
            raise ValueError(f"--min-object-mass: {min_object_mass}; must be in [0, 1]")
        if rows and not any(QUALITY in r for r in rows):
            raise ValueError(
                f"--min-object-mass: this sweep has no {QUALITY} (its data set has no object masks)"
            )

    def eligible(r: dict[str, Any]) -> bool:
        quality = r.get(QUALITY)
        ok = min_object_mass is None or (isinstance(quality, (int, float)) and quality >= min_object_mass)
        return pickable(r) and ok

    shown = [r for r in rows if show_pruned or r["status"] in ("completed", "running", INTERRUPTED)]
    board = sorted(shown, key=lambda r: rank_key(r, metric))  # the pick first of those that tie
    return board, the_pick(rows, metric, eligible)


NO_TRIALS = "no trial has started"
"""Why a sweep without trials (one just started, or one that failed before its first trial) has no pick."""


def why_no_pick(
    rows: Sequence[dict[str, Any]], min_object_mass: float | None = None, show_pruned: bool = False
) -> str:
    """Why :func:`rank` picked nothing, in a line: what the trials' object mass was against ``min_object_mass``,
    or how the trials ended (``6 trials: 3 pruned:corner, 2 completed with flat masks, 1 error``), or
    :data:`NO_TRIALS`."""
    if not rows:
        return NO_TRIALS
    healthy = [r for r in rows if pickable(r)]
    if healthy and min_object_mass is not None:
        masses = [
            (float(r[QUALITY]), r["trial_id"]) for r in healthy if isinstance(r.get(QUALITY), (int, float))
        ]
        if not masses:
            return f"no trial that completed with healthy masks has a {QUALITY}"
        most, trial = max(masses)
        return (
            f"the most mass on the object among the {len(healthy)} trials that completed with healthy masks is "
            f"{most:.3f} ({trial}), under --min-object-mass {min_object_mass:g}"
        )
    ends: dict[str, int] = {}
    for r in rows:
        end = r["status"]
        if end == "completed":
            end = f"completed with {r.get('detector.kind') or 'unknown'} masks"
        ends[end] = ends.get(end, 0) + 1
    told = ", ".join(f"{n} {end}" for end, n in sorted(ends.items(), key=lambda e: -e[1]))
    hidden = sum(r["status"] not in ("completed", "running", INTERRUPTED) for r in rows)
    return f"{len(rows)} trial{'s' * (len(rows) != 1)}: {told}" + (
        "; --show-pruned lists them" if hidden and not show_pruned else ""
    )


def sweep_pick(folder: Path, what: str) -> dict[str, Any]:
    """The pick of the sweep in ``folder``, as ``best`` picks it (its row); where there is none, a SweepError
    that says why, ``what`` naming who asked (``--try runs/sweeps/x``)."""
    rows = read_sweep(folder)
    pick = rank(rows)[1]
    if pick is None:
        raise SweepError(
            f"{what}: this sweep has no trial to pick, none completed with healthy masks "
            f"({why_no_pick(rows)}); give one of its trial folders"
        )
    return pick


def config_source(given: str | Path, option: str = "--try") -> tuple[str, str]:
    """What ``sweep --try GIVEN`` (or ``train --config GIVEN``: ``option``) reads, and a note of what it stands
    for ("" when it is itself): a sweep folder stands for its pick (the best completed trial with healthy masks,
    as ``best`` picks it: its run folder), a sweep's trial folder for its run folder; any other path is read as
    given (a config file, a bundle or run folder). A sweep with nothing to pick raises a SweepError that says
    why."""
    folder = Path(given).expanduser()
    if not folder.is_dir() or (folder / "config.yaml").is_file():
        return str(given), ""
    if (folder / "run" / "config.yaml").is_file():  # a sweep's trial folder
        return str(folder / "run"), ""
    if not is_sweep_folder(folder):
        return str(given), ""
    pick = sweep_pick(folder, f"{option} {given}")
    return str(pick["run"]), (
        f"{option} {given}: its pick, trial {pick['trial_id']} (last_val_accuracy "
        f"{pick['last_val_accuracy']:.3f}; {pick['run']})"
    )


def list_sweeps(storage: str | Path) -> list[dict[str, Any]]:
    """One row per sweep in a local ``--storage`` folder, the last started first: its name, when it started
    (ISO), its space file, its trials (how many Tune started, lost ones not counted, and how many it was started
    or grown to), their statuses, its pick (the best trial with healthy masks at the end, as :func:`rank` picks
    it), its driver (:func:`~tune_attn.tune.options.running_driver`: who runs it now, "" when none does, None
    when not known) and whether it goes on (:func:`going_on`)."""
    from collections import Counter

    from tune_attn.tune.options import sweeps_in

    if is_uri(storage):
        raise SweepError(
            f"{storage}: a URI; list the sweeps of a local folder (tune-attn fetch copies one here)"
        )
    if not Path(storage).is_dir():
        raise SweepError(f"{storage}: no such folder")
    out = []
    for name in sweeps_in(str(storage)):
        folder = Path(storage) / name
        record = json.loads((folder / SWEEP_RECORD).read_text())
        rows = read_sweep(folder)  # [] for a sweep with no trial yet (its sweep.json makes it a sweep folder)
        driver = running_driver(folder)
        pick = rank(rows)[1]
        out.append(
            {
                "name": name,
                "started": record.get("started")  # sweep.json's time for a sweep of an earlier version
                or datetime.datetime.fromtimestamp((folder / SWEEP_RECORD).stat().st_mtime).isoformat(),
                "space": Path(str(record.get("space_file", "?"))).name,
                "trials": started_trials(rows),
                "planned": record.get("options", {}).get("num_samples"),
                "statuses": dict(Counter(r["status"].split(":")[0] for r in rows)),
                "best": None if pick is None else pick["last_val_accuracy"],
                "best_trial": None if pick is None else pick["trial_id"],
                "driver": driver,
                "state": going_on(driver, rows, record.get("options", {}).get("num_samples")),
            }
        )
    return sorted(out, key=lambda s: s["started"], reverse=True)  # by start, not by sweep.json's last write


def going_on(driver: str | None, rows: Sequence[dict[str, Any]], planned: int | None = None) -> str:
    """Whether a sweep goes on, from its driver (:func:`~tune_attn.tune.options.running_driver`), rows and number
    of trials (``planned``, its ``sweep.json``'s): ``running`` while a driver runs it, ``stopped`` when none does
    and trials of it were interrupted or never started (stopped before it ended, or at its time budget:
    ``--resume`` continues it); "" when it ended, or when that cannot be told."""
    if driver:
        return "running"
    cut = any(r["status"] == INTERRUPTED for r in rows)
    return "stopped" if driver == "" and (cut or _not_started(rows, planned)) else ""


def _not_started(rows: Sequence[dict[str, Any]], planned: int | None) -> int:
    """How many of a sweep's ``planned`` trials never started (a lost trial's config ran again as another)."""
    return max(0, (planned or 0) - started_trials(rows))


def sweep_progress(experiment: str | Path, rows: Sequence[dict[str, Any]]) -> tuple[str | None, str]:
    """Whether the sweep at ``experiment`` (its rows from :func:`read_sweep_at`) goes on: ``running`` while a
    driver runs it, ``stopped`` when it stopped before it ended (:func:`going_on`), ``ended``, or None when that
    cannot be told (a URI, a copy without its lock); and a line that says so for the first two (the driver, or the
    command that continues it), else ""."""
    if is_uri(experiment):
        return None, ""
    folder = Path(experiment)
    driver = running_driver(folder)
    planned = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        planned = int(json.loads((folder / SWEEP_RECORD).read_text())["options"]["num_samples"])
    state = going_on(driver, rows, planned)
    if state == "running":
        line = f"the sweep is running now ({driver}): this is where it stands; trials still training may rise"
        return state, line
    if state != "stopped":
        return (None if driver is None else "ended"), ""
    if not (folder / SWEEP_RECORD).is_file():  # an older sweep's folder: no command to continue it
        return state, ""
    stopped, waiting = sum(r["status"] == INTERRUPTED for r in rows), _not_started(rows, planned)
    parts = [f"{stopped} trial{'s' if stopped > 1 else ''} interrupted"] if stopped else []
    parts += [f"{waiting} of {planned} trials not started"] if waiting else []
    return state, (
        f"the sweep stopped before it ended ({', '.join(parts)}); continue it with: {resume_command(folder)}"
    )


def sweep_state(experiment: str | Path, rows: Sequence[dict[str, Any]]) -> str:
    """A line on whether the sweep at ``experiment`` goes on (:func:`sweep_progress`): ``the sweep is running now
    (pid ...)``, or that it stopped before it ended and the command that continues it; "" when it ended, or when
    that cannot be told (a URI)."""
    return sweep_progress(experiment, rows)[1]


def pick_report(
    experiment: str | Path,
    rows: Sequence[dict[str, Any]],
    metric: str = "last_val_accuracy",
    min_object_mass: float | None = None,
) -> dict[str, Any]:
    """What ``best --json`` writes, for a script that deploys a sweep's pick: the rule (``metric``,
    ``min_object_mass``), whether the sweep goes on (``state``: running, stopped, ended or None when not known,
    and ``state_line``), the pick (its row: trial id, Optuna number, status, accuracies, epochs, last verdict,
    mask figures, full flat ``config``, ``run`` folder) or None and ``why_no_pick``, and every trial, the best
    first."""
    board, pick = rank(rows, metric, min_object_mass, show_pruned=True)
    state, line = sweep_progress(experiment, rows)
    why = None
    if pick is None:
        why = why_no_pick(rows, min_object_mass, show_pruned=True)
    return {
        "sweep": str(experiment),
        "metric": metric,
        "min_object_mass": min_object_mass,
        "state": state,
        "state_line": line or None,
        "pick": pick,
        "why_no_pick": why,
        "trials": board,
    }


def find_trial(rows: Sequence[dict[str, Any]], trial_id: str) -> dict[str, Any]:
    for r in rows:
        if r["trial_id"] == trial_id:
            return r
    raise SweepError(
        f"--trial: {trial_id!r} is not a trial of this sweep; trials: {[r['trial_id'] for r in rows]}"
    )
