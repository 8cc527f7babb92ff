"""An OptunaSearch that tells Optuna how a trial really ended.

Ray's ``OptunaSearch.on_trial_complete`` tells COMPLETE whenever the last result holds the metric, so a
trial stopped for mask degeneracy (or by ASHA) would count as a finished trial with its stop-epoch accuracy,
pulling TPE towards collapsing regions; and a NaN metric leaves the Optuna trial RUNNING. Here a trial is:

- PRUNED when the degeneracy monitor stopped it (``detector.prune`` in its last result), with the reason
  stored as the user attribute ``prune_reason``;
- PRUNED with ``prune_reason = "stopped:asha"`` when it ended before its epoch budget without an error;
- FAIL on an error, a loss that diverged (``error`` in its last result) or a non-finite metric;
- COMPLETE otherwise, with its last metric.

Each also gets the user attributes ``status`` (as in the summary), ``ray_trial_id`` and ``masks`` (the detector's
last verdict: ``healthy``, ``flat``, ...; a completed trial of a ``--no-prune`` sweep can be degenerate).

A trial that a Ctrl+C stopped is not told anything: it stays RUNNING in the study, and a resumed sweep
finishes it. Past the sweep's ``--time-budget`` (:data:`propose_until`) the search proposes no more trials.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tune_attn.files import in_place
from tune_attn.status import run_status

RAY_TRIAL_ID = "ray_trial_id"

propose_until: float | None = None
"""Wall-clock time (``time.time()``) after which the search proposes no trial (``--time-budget``), so Tune ends
the sweep once the running trials finish; None: no limit. Set by the sweep for each run (a resumed one too) and
read here by name, never saved with the searcher's state."""
budget_reached = False
"""Whether the search has declined a trial for :data:`propose_until` in this run."""


class DegeneracyAwareOptunaSearch(OptunaSearch):
    """OptunaSearch whose trials end COMPLETE, PRUNED or FAIL as they really ended (see the module doc)."""

    def suggest(self, trial_id: str) -> dict | None:
        global budget_reached
        if propose_until is not None and time.time() >= propose_until:
            budget_reached = True
            return Searcher.FINISHED  # type: ignore[return-value]
        return super().suggest(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        study: Any = self._ot_study
        status, reason = run_status(result, error, str(self.metric))
        ot_trial.set_user_attr("status", status)
        ot_trial.set_user_attr(RAY_TRIAL_ID, trial_id)
        if result and result.get("detector.kind"):  # the last verdict: healthy, flat, ...
            ot_trial.set_user_attr("masks", str(result["detector.kind"]))
        if status == "completed":
            assert result is not None
            study.tell(ot_trial, float(result[str(self.metric)]), state=TrialState.COMPLETE)
        elif status == "error":
            ot_trial.set_user_attr("error", reason)
            study.tell(ot_trial, state=TrialState.FAIL)
        else:
            ot_trial.set_user_attr("prune_reason", reason)
            self.tell_stopped(ot_trial, result)
        self._completed_trials.add(trial_id)

    def tell_stopped(self, ot_trial: Any, result: dict | None) -> None:
        """Tell Optuna of a trial stopped early (degenerate masks, or ASHA): PRUNED, so that TPE ranks it
        below every completed trial."""
        study: Any = self._ot_study
        study.tell(ot_trial, state=TrialState.PRUNED)

    def save(self, checkpoint_path: str) -> None:
        """Like OptunaSearch.save, but atomic: a driver killed mid-write leaves the previous state intact."""
        with in_place(checkpoint_path) as tmp:
            super().save(str(tmp))

    @property
    def study(self) -> Any:
        """The Optuna study (read it after a sweep: states, params, user attributes)."""
        return self._ot_study


def load_study(experiment: str) -> Any:
    """The Optuna study of a sweep, from the searcher state Tune saved in its experiment folder (a local
    path or a URI such as ``s3://bucket/sweeps/name``); None when there is none.

    Tune saves the searcher apart from its wrappers (the concurrency limit) so that it can be restored
    alone with ``Searcher.restore_from_dir``. The file is a pickle: read only sweeps you ran yourself.
    """
    import glob
    import tempfile

    searcher = DegeneracyAwareOptunaSearch()
    pattern = searcher.CKPT_FILE_TMPL.format("*")
    if "://" not in experiment:
        if not glob.glob(os.path.join(experiment, pattern)):
            return None
        searcher.restore_from_dir(experiment)
        return searcher.study
    import fnmatch

    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment)
    files = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    states = [f.path for f in files if fnmatch.fnmatch(f.base_name, pattern)]
    if not states:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for path in states:
            with fs.open_input_stream(path) as src:
                Path(tmp, os.path.basename(path)).write_bytes(src.read())
        searcher.restore_from_dir(tmp)
    return searcher.study
