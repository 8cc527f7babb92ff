"""What a sweep finds when it is run again under its name: the settings it keeps, trials to add, and what a
driver that died left behind.

A resumed sweep keeps what it started with (:data:`RESUME_KEEPS`; :func:`resume_differences` says which given
flags it does not take); a larger ``--num-samples`` adds trials (:func:`add_trials`). A driver that died can
leave Tune's saved state behind its trials: a trial started after the last save is unknown to the resumed Tune
(:func:`mark_lost`, :func:`lost_rows`), and an old checkpoint Tune deletes may be gone already
(:func:`forgive_deleted_checkpoints`). Some of this reads Tune's saved files (``experiment_state-*.json``,
``search_gen_state-*.json``) and one Ray function: checked with ray 2.60.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from tune_attn.config import flat_keys
from tune_attn.files import in_place
from tune_attn.status import LOST, LOST_MARK, METRIC, interrupted_when
from tune_attn.tune.options import RESUME_KEEPS, SWEEP_RECORD, SweepOptions, plain, recorded
from tune_attn.tune.search import SearchSpace
from tune_attn.tune.summary import SUMMARY_FIGURES


def resume_differences(folder: Path, space: SearchSpace, options: SweepOptions) -> list[str]:
    """What this call asks for that a resumed sweep does not take (its searcher, scheduler and space are
    restored as they started, see ``RESUME_KEEPS``), one item per flag: given now, and the sweep's own."""
    try:
        record = json.loads((folder / SWEEP_RECORD).read_text())
    except (OSError, ValueError):
        return []

    started = record.get("options", {})
    now = recorded(options)
    kept = [
        _difference(flag, now[key], started[key])
        for key, flag in RESUME_KEEPS.items()
        if key in started
        and started[key] != now[key]
        and (options.given is None or key in options.given)
        and not (key == "num_samples" and now[key] > started[key])  # trials to add: taken
    ]
    if "space" in record and record["space"] != plain(space.to_dict()):
        kept.append(f"the search space of {space.source} (it changed since the sweep started)")
    return kept


def _difference(flag: str, now: Any, started: Any) -> str:
    """``--num-samples 9 (the sweep's: 6)``; for an on/off flag ``--no-reuse-actors (the sweep's:
    --reuse-actors)``."""
    if isinstance(now, bool):
        return f"{_switch(flag, now)} (the sweep's: {_switch(flag, started)})"
    return f"{flag} {_flag_value(now)} (the sweep's: {_flag_value(started)})"


def _switch(flag: str, on: bool) -> str:
    return flag if on else flag.replace("--", "--no-", 1)


def _flag_value(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(value) or "none"
    return "default" if value is None else str(value)


def _search_state(path: str) -> tuple[Any, str, dict[str, Any]] | None:
    """The file system, file and contents of the search state Tune restores for the sweep at ``path`` (a local
    folder or a URI): the newest ``search_gen_state-*.json`` by name. None when there is none."""
    import pyarrow.fs
    import ray.cloudpickle as cloudpickle

    fs, root = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (pyarrow.fs.LocalFileSystem(), path)
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    states = sorted(f.path for f in found if re.fullmatch(r"search_gen_state-.*\.json", f.base_name))
    if not states:
        return None
    with fs.open_input_stream(states[-1]) as f:
        return fs, states[-1], cloudpickle.loads(f.read())


def _write_search_state(fs: Any, file: str, state: dict[str, Any]) -> None:
    import pyarrow.fs
    import ray.cloudpickle as cloudpickle

    if not isinstance(fs, pyarrow.fs.LocalFileSystem):  # an object store writes an object whole
        with fs.open_output_stream(file) as f:
            f.write(cloudpickle.dumps(state))
        return
    with in_place(file) as tmp:  # atomic, as Tune writes it
        tmp.write_bytes(cloudpickle.dumps(state))


def add_trials(path: str, total: int) -> int:
    """Before a sweep (a local folder or a URI) is restored: raise its number of trials to ``total`` where it
    has fewer, in Tune's saved search state (the count of trials the search proposes,
    ``search_gen_state-*.json``: Tune has no option for it) and in a local ``sweep.json``. Returns the number
    the sweep had."""
    saved = _search_state(path)
    if saved is None:
        raise ValueError(
            f"{path}: no saved search state (search_gen_state-*.json), so no trials can be added"
        )
    fs, file, state = saved
    if not isinstance(state, dict) or not isinstance(state.get("total_samples"), int):
        raise ValueError(
            f"{file}: this Ray version's search state has no number of trials (total_samples) to raise; "
            "start a new sweep instead"
        )
    had = int(state["total_samples"])
    if total <= had:
        return had
    state.update(total_samples=total, finished=False)
    _write_search_state(fs, file, state)
    if "://" in path:  # a URI's sweep.json is written again at the end
        return had
    record_file = Path(path) / SWEEP_RECORD
    with contextlib.suppress(OSError, ValueError, KeyError):
        record = json.loads(record_file.read_text())
        record["options"]["num_samples"] = total
        record_file.write_text(json.dumps(record, indent=1, default=str))
    return had


def reopen_search(path: str) -> bool:
    """Before a sweep is restored: a search that ended at its time budget (the searcher said it had finished,
    which Tune saved) proposes trials again, so the resumed sweep runs those it had not started. Returns whether
    it had ended so."""
    saved = _search_state(path)
    if saved is None or not isinstance(saved[2], dict) or not saved[2].get("finished"):
        return False
    fs, file, state = saved
    state["finished"] = False
    _write_search_state(fs, file, state)
    return True


def _experiment_state(folder: Path) -> Path | None:
    """The Tune experiment state a resumed sweep in ``folder`` restores: the newest ``experiment_state-*.json``
    (by name, which is its time); None when there is none."""
    return max(folder.glob("experiment_state-*.json"), default=None)


def restored_trials(folder: Path) -> set[str] | None:
    """The ids of the trials in the Tune experiment state a resumed sweep in ``folder`` restores (the newest
    ``experiment_state-*.json``); None when it cannot be read (none there, or a Ray that writes another
    format)."""
    state = _experiment_state(folder)
    if state is None:
        return None
    try:
        return {json.loads(trial[0])["trial_id"] for trial in json.loads(state.read_text())["trial_data"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mark_lost(folder: Path, space: SearchSpace) -> list[dict[str, Any]]:
    """Before a local sweep resumes: write :data:`~tune_attn.status.LOST_MARK` into the run folder of each
    trial that the state Tune restores does not hold (:func:`lost_rows`), so that ``tune-attn best`` shows it
    ``lost`` while the resumed sweep runs; at its end the summary lists it too. Returns their rows."""
    known = restored_trials(folder)
    if known is None:
        return []
    lost = lost_rows(str(folder), [], space, known)
    for row in lost:
        mark = Path(row["path"]) / "run" / LOST_MARK
        with contextlib.suppress(OSError):  # the summary at the end tells it anyway
            mark.write_text(json.dumps({"status": LOST, "reason": row["reason"]}))
    return lost


def check_experiment_state(folder: Path) -> None:
    """Refuse to resume from an unreadable Tune experiment state (Ray writes it in place, so a driver
    killed during the write leaves it empty, and Tune would silently start the sweep over)."""
    state = _experiment_state(folder)
    if state is None:
        return
    try:
        json.loads(state.read_text() or "!")
    except ValueError:
        raise ValueError(
            f"{state}: Tune's experiment state is unreadable (the driver died while writing it), so this "
            f"sweep cannot be resumed; its finished trials stay in {folder}. Start a new sweep with another --name."
        ) from None


def lost_rows(
    path: str, rows: list[dict[str, Any]], space: SearchSpace, known: set[str] | None = None
) -> list[dict[str, Any]]:
    """Summary rows (status :data:`~tune_attn.status.LOST`) for the trial folders in the sweep at ``path`` (a
    folder or a URI) that hold epochs of a trial Tune does not know (``known``; by default the trials of
    ``rows``, Tune's own): one its driver started and died before saving the sweep's state again. Their figures
    come from the trial's own files (its ``run/metrics.jsonl`` and ``run/config.yaml``); the reason names the
    trial of ``rows`` that ran the same config again, if one did."""
    import pyarrow.fs
    import yaml

    known = {r["trial_id"] for r in rows} if known is None else known
    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except (OSError, ValueError):  # the storage could not be listed: the summary has Tune's trials
        return []
    lost = []
    for entry in sorted(found, key=lambda e: e.base_name):
        trial_id = entry.base_name.removeprefix("trial_")
        if entry.type != pyarrow.fs.FileType.Directory or trial_id == entry.base_name or trial_id in known:
            continue
        try:
            with fs.open_input_stream(f"{entry.path}/run/metrics.jsonl") as f:
                history = [json.loads(x) for x in f.read().decode().splitlines() if x.strip()]
            with fs.open_input_stream(f"{entry.path}/run/config.yaml") as f:
                nested = yaml.safe_load(f.read().decode())
        except (OSError, ValueError):  # no epoch ended there: nothing to keep
            continue
        if not history:
            continue
        last = history[-1]
        config = flat_keys(nested)
        drawn = space.drawn_keys(config)
        searched = {k: config.get(k) if k in drawn else None for k in space.searched_keys()}  # as Tune's rows
        again = [r["trial_id"] for r in rows if all(r.get(k) == v for k, v in searched.items())]
        row: dict[str, Any] = {"trial_id": trial_id, "number": None, "status": LOST}
        row["reason"] = (
            f"stopped {interrupted_when(last)}: it started after the sweep last saved its state, and its driver "
            "died, so the resumed sweep did not know it"
            + (f"; its config ran again as trial {again[0]}" if again else "")
        )
        row.update(searched)
        row["best_val_accuracy"] = max((h.get(METRIC, -math.inf) for h in history), default=None)
        row["last_val_accuracy"] = last.get(METRIC)
        row["epochs"] = last.get("epoch")
        row["device"] = last.get("device")
        row.update({k: last.get(k) for k in SUMMARY_FIGURES})
        row["path"] = entry.path if "://" not in path else f"{path.rstrip('/')}/{entry.base_name}"
        lost.append(row)
    return lost


def forgive_deleted_checkpoints() -> None:
    """Let Tune's checkpoint manager (in this driver) pass over an old checkpoint it deletes that is gone already.

    A driver that dies can leave Tune's saved state a few epochs behind a trial: the trial had saved newer
    checkpoints, and the driver deleted the oldest beyond ``num_to_keep``. Resumed, the trial goes on from the
    newest checkpoint the state knows; when it saves the next one, Tune deletes the oldest it knows of, which is
    gone, and Ray 2.60 raises there (``FileNotFoundError: Path not found``): an ERROR with a traceback in the
    sweep's output, the trial's checkpoint left out of the next experiment snapshot, and any other old
    checkpoint of that round kept on disk. Here a path that is not there is left alone, the rest deleted as
    Ray does. A Ray without that function is left as it is."""
    import pyarrow.fs
    from ray.train._internal import checkpoint_manager

    delete = getattr(checkpoint_manager, "_delete_fs_path", None)
    if delete is None or getattr(delete, "forgives_missing", False):
        return

    def delete_if_there(fs: pyarrow.fs.FileSystem, fs_path: str) -> None:
        if fs.get_file_info(fs_path).type != pyarrow.fs.FileType.NotFound:
            delete(fs=fs, fs_path=fs_path)

    delete_if_there.forgives_missing = True  # type: ignore[attr-defined]
    checkpoint_manager._delete_fs_path = delete_if_there
