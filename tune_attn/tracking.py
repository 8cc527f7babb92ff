"""Weights & Biases: one W&B run per training run (each sweep trial), one per sweep for its summary.

Offline by default: runs are written under the run folder (``<run>/wandb/offline-run-*``) with no account
and no network, and uploaded later with ``wandb sync``. W&B never takes training down: the first failure
is kept in :attr:`WandbRun.error`, an online run that cannot start falls back to offline, and a run that
cannot be written turns itself off (the panels are on disk anyway). Only our own config is sent; the API
key stays in W&B's own login files or environment, never in anything this tool writes.

Per epoch a trial logs, at ``step = epoch``: its scalar metrics and mask statistics, the accuracy of each
class (``class_accuracy/<class>``), ``panel`` (the epoch's mask panel PNG, every sample and head), and
``masks/sample_<i>`` (sample i with one toggleable W&B segmentation mask per head, levels in
:data:`tune_attn.panels.MASK_LEVELS`). Stable keys let W&B's media panels scroll through the epochs. At the
end: ``status`` and ``reason`` in the summary and the status as a tag (``pruned:corner``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tune_attn.config import WandbOptions, first_line
from tune_attn.panels import MASK_LEVELS, mask_levels, value_range
from tune_attn.status import METRIC, run_status

if TYPE_CHECKING:  # torch takes ~1.5 s to import, and `tune-attn fetch` needs none of it
    from tune_attn.engine import EpochResult


@contextlib.contextmanager
def _data_dir(folder: Path | None) -> Any:
    """While it is open, wandb's data folder (where it stages artifacts for upload, ``WANDB_DATA_DIR``, read
    at each use) is ``folder``; nothing changes for None."""
    if folder is None:
        yield
        return
    before = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(folder.resolve())
    try:
        yield
    finally:
        if before is None:
            del os.environ["WANDB_DATA_DIR"]
        else:
            os.environ["WANDB_DATA_DIR"] = before


def run_id(label: str, key: str) -> str:
    """A W&B run id: ``label`` made safe (letters, digits, ``-``, ``_``) plus a hash of ``key``, at most 64
    characters. The same label and key give the same id, so a resumed run continues its W&B run."""
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")
    return f"{text[:55]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def trial_run_id(sweep: str, trial_id: str) -> str:
    """The W&B run id of a sweep's trial: every start of that trial (a restart, a resumed sweep) logs to it."""
    return run_id(f"{sweep}-{trial_id}", f"{sweep}/{trial_id}")


class WandbRun:
    """One W&B run that never raises: on a failure it records :attr:`error` and goes on (see module doc)."""

    def __init__(
        self,
        options: WandbOptions,
        folder: str | Path,
        *,
        name: str,
        id: str,
        job_type: str,
        config: Mapping[str, Any],
        tags: Sequence[str] = (),
    ) -> None:
        self.options = options
        self.error: str | None = None
        self.mode = options.mode
        self.run: Any = None
        if options.mode == "off":
            return
        problem = options.problem()
        if problem:
            self.error, self.mode = problem, "off"
            return
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        for mode in ("online", "offline") if options.mode == "online" else ("offline",):
            try:
                self.run = self._init(mode, name, id, job_type, dict(config), list(tags))
                self.mode = mode
                return
            except Exception as exc:
                note = "; logging offline instead" if mode == "online" else ""
                self.error = f"W&B {mode} run could not start ({first_line(exc)}){note}"
        self.mode = "off"

    def _init(self, mode: str, name: str, id: str, job_type: str, config: dict, tags: list) -> Any:
        import wandb

        settings = wandb.Settings(silent=True, console="off", disable_git=True, init_timeout=60)
        if mode == "offline":  # wandb's own process-wide telemetry too: it would reach for W&B's server
            wandb.setup(settings=wandb.Settings(mode="offline"))
        return wandb.init(
            project=self.options.project,
            entity=self.options.entity,
            group=self.options.group,
            name=name,
            id=id,
            resume="allow",
            job_type=job_type,
            config=config,
            tags=tags,
            dir=str(self.dir),
            mode=mode,  # type: ignore[arg-type]
            reinit="create_new",
            settings=settings,
        )

    @property
    def active(self) -> bool:
        return self.run is not None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            self.error = self.error or f"W&B {what} failed ({first_line(exc)}); W&B logging stopped"
            self._close()

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self._call("log", self.run.log, dict(data), step=step)

    def log_epoch(self, result: EpochResult, panel: Path | None = None) -> None:
        """The epoch's numbers, its panel PNG and the per-sample masks, at ``step = epoch``."""
        if self.run is None:
            return
        numbers = {k: v for k, v in result.metrics.items() if _is_number(v)}
        # commit now: a process stopped right after this epoch (a scheduler's decision) loses nothing
        payload = {**numbers, **class_accuracies(result), **self._images(result, panel)}
        self._call("log", self.run.log, payload, step=result.epoch, commit=True)
        words = {k: v for k, v in result.metrics.items() if isinstance(v, str)}
        if self.run is not None and words:
            self._call("summary", self.run.summary.update, words)

    def _images(self, result: EpochResult, panel: Path | None) -> dict[str, Any]:
        import wandb

        out: dict[str, Any] = {}
        if panel is not None and panel.is_file():
            out["panel"] = wandb.Image(str(panel), caption=f"epoch {result.epoch}")
        images = np.asarray(result.panel_images)  # (n, S, S, 3) uint8
        for i, image in enumerate(images):
            masks = result.masks[i]  # (heads, h, w)
            out[f"masks/sample_{i}"] = wandb.Image(
                image,
                caption=f"epoch {result.epoch}, sample {i}: "
                + ", ".join(f"head {k} {value_range(m)}" for k, m in enumerate(masks)),
                masks={
                    f"head_{k}": {"mask_data": mask_levels(m, *image.shape[:2]), "class_labels": MASK_LEVELS}
                    for k, m in enumerate(masks)
                },
            )
        return out

    def log_table(
        self,
        key: str,
        rows: Sequence[Mapping[str, Any]],
        images: Iterable[Path] = (),
        row_images: Mapping[str, Sequence[Path | None]] | None = None,
        staging: Path | None = None,
    ) -> None:
        """A W&B Table of ``rows`` (one column per key), with a column of images per ``row_images`` key (a
        file or None per row), and ``images`` under their file names. W&B keeps a Table in an artifact whose
        files it stages for upload in its data folder (``~/.local/share/wandb``), not in the run folder; with
        ``staging``, in that folder instead (``wandb sync`` reads them there, by absolute path)."""
        if self.run is None:
            return
        import wandb

        columns: list[str | int] = list(dict.fromkeys(k for r in rows for k in r))
        data: list[list[Any]] = [[_cell(r.get(str(c))) for c in columns] for r in rows]
        for name, files in (row_images or {}).items():
            columns.append(name)
            for cells, file in zip(data, files, strict=True):
                cells.append(wandb.Image(str(file)) if file is not None and file.is_file() else None)
        payload: dict[str, Any] = {key: wandb.Table(columns=columns, data=data, allow_mixed_types=True)}
        payload.update({p.stem: wandb.Image(str(p)) for p in images if p.is_file()})
        with _data_dir(staging):
            self._call("log", self.run.log, payload)

    def finish(self, status: str, reason: str = "", summary: Mapping[str, Any] | None = None) -> None:
        """Record how the run ended (summary ``status`` / ``reason``, a tag) and close it."""
        if self.run is None:
            return
        self._call(
            "summary", self.run.summary.update, {"status": status, "reason": reason, **(summary or {})}
        )
        if self.run is not None:
            self._call("tags", setattr, self.run, "tags", tuple(dict.fromkeys([*self.run.tags, status])))
        self._close()

    def end(self, last: Mapping[str, Any] | None, error: BaseException | None = None) -> None:
        """Finish with the status of a training run whose last epoch's metrics were ``last``; ``error`` is the
        exception that ended it, if any (SystemExit: Tune stopped it between epochs, not an error)."""
        if error is not None and not isinstance(error, SystemExit):
            self.finish("error", f"{type(error).__name__}: {error}"[:500])
        else:
            self.finish(*run_status(dict(last or {}), False, METRIC))

    def _close(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish()
            except Exception as exc:
                self.error = self.error or f"W&B finish failed ({first_line(exc)})"
            link = self.dir / "wandb" / "latest-run"  # wandb's convenience link: copied to a storage URI,
            if link.is_symlink():  # it would become a second copy of the run
                link.unlink()


def stop_service() -> None:
    """Stop this process's W&B service (wandb-core), as wandb does itself when Python exits normally.

    A Tune trial's process ends without that exit, and each trial left the service's socket folder
    (``$TMPDIR/wandb-<pid>-...``) behind. A no-op where wandb was never imported; never raises."""
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    with contextlib.suppress(Exception):  # on the way out: the runs are closed already, nothing is lost
        wandb.teardown()


def class_accuracies(result: EpochResult) -> dict[str, float]:
    """``class_accuracy/<class>``: the share of each class's validation images the epoch's model got right
    (classes without validation images left out), so that W&B charts which classes a trial never learns."""
    if result.confusion is None:
        return {}
    per_class = zip(
        result.class_names, result.confusion, strict=True
    )  # row: the class's images, by prediction
    return {
        f"class_accuracy/{name}": float(row[k] / row.sum())
        for k, (name, row) in enumerate(per_class)
        if row.sum()
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> Any:
    """W&B Table cells: numbers, strings and None as they are, anything else as text."""
    return v if v is None or isinstance(v, (int, float, str)) else str(v)


def offline_runs(folder: str | Path) -> list[Path]:
    """Every offline W&B run under ``folder`` (a run or an experiment), for ``wandb sync``."""
    return sorted(Path(folder).glob("**/wandb/offline-run-*"))


def sync_command(runs: list[Path]) -> str:
    """A ``wandb sync`` command line that uploads all of ``runs``: trial folders and run folders become
    shell patterns (``trial_*``, ``offline-run-*``), so it stays short for any number of trials; a run
    that no other run shares a pattern with is named as it is."""
    import shlex

    def pattern(run: Path) -> str:
        parts = [
            "trial_*" if part.startswith("trial_") else shlex.quote(part)
            for part in run.parent.parts
            if part != run.anchor
        ]
        return run.anchor + "/".join([*parts, "offline-run-*"])

    groups: dict[str, list[Path]] = {}
    for run in runs:
        groups.setdefault(pattern(run), []).append(run)
    args = [pat if len(group) > 1 else shlex.quote(str(group[0])) for pat, group in sorted(groups.items())]
    return "wandb sync " + " ".join(args)
