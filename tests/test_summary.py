"""The sweep summary: status counts, and plots from an Optuna study (real Optuna, no Ray)."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from tune_attn.tune.summary import count_statuses, importances


def _study(n: int, signal: float = 10.0) -> optuna.Study:
    """``n`` trials whose value is ``signal`` x lr (heads does nothing); signal 0: every value the same."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: (
            0.02 + t.suggest_float("lr", 1e-4, 1e-1, log=True) * signal + 0 * t.suggest_int("heads", 1, 4)
        ),
        n_trials=n,
    )
    return study


def test_importances_are_plotted_when_the_trials_tell_parameters_apart(tmp_path: Path) -> None:
    path = importances(_study(30), tmp_path / "imp.png")
    assert path == tmp_path / "imp.png" and path.stat().st_size > 2000


def test_trials_that_cannot_tell_parameters_apart_give_no_plot_and_no_warning(tmp_path: Path) -> None:
    # One trial, or trials that all scored the same (e.g. a smoke sweep at chance): Optuna would warn and
    # give every parameter the same importance.
    for study in (_study(1), _study(3, signal=0.0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert importances(study, tmp_path / "imp.png") is None
        assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "imp.png").exists()


def test_status_counts_group_pruned_kinds_and_sort_by_kind() -> None:
    assert count_statuses([]) == ""
    assert count_statuses(["completed"]) == "1 completed"
    statuses = ["pruned:flat", "completed", "error", "pruned:point", "stopped:asha", "completed"]
    assert count_statuses(statuses) == "2 completed, 1 error, 2 pruned, 1 stopped"
    assert count_statuses(iter(statuses)) == "2 completed, 1 error, 2 pruned, 1 stopped"
