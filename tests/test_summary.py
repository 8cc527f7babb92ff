"""The sweep summary: status counts, and plots from an Optuna study (real Optuna, no Ray)."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from tune_attn.tune.summary import count_statuses, importances, pruned_ahead, pruned_ahead_note, write_plots


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


def test_the_sweep_plots_draw_what_the_trials_allow_and_never_raise(tmp_path: Path) -> None:
    def row(status: str, acc: float | None, wd: float = 1e-3, heads: int = 2) -> dict:
        return {
            "status": status,
            "best_val_accuracy": acc,
            "train.weight_decay": wd,
            "model.heads": heads,
            "model.activation": "relu",
        }

    said: list[str] = []
    # Every trial failed before its first epoch (a data set no trial could read): nothing to draw, and no error
    # (the log axis of an empty plot raised, and the sweep ended with "error:" after its trials had run).
    failed = [row("error", None), row("error", float("nan"), wd=0.1)]
    assert write_plots(tmp_path, failed, None, said.append) == [] and said == []
    assert not list(tmp_path.glob("*.png"))
    # One trial with an accuracy: both plots, the failed trials left off them.
    drawn = write_plots(tmp_path, [*failed, row("completed", 0.4)], None, said.append)
    assert [p.name for p in drawn] == ["accuracy_vs_weight_decay.png", "heads_vs_accuracy.png"] and said == []
    # A plot that cannot be written is said, and the others go on.
    assert write_plots(tmp_path / "gone", [row("completed", 0.4)], _study(30), said.append) == []
    assert len(said) == 3 and all(line.startswith(f"note: {tmp_path / 'gone'}/") for line in said), said
    assert "not drawn (FileNotFoundError" in said[0], said


def test_status_counts_group_pruned_kinds_and_sort_by_kind() -> None:
    assert count_statuses([]) == ""
    assert count_statuses(["completed"]) == "1 completed"
    statuses = ["pruned:flat", "completed", "error", "pruned:point", "stopped:asha", "completed"]
    assert count_statuses(statuses) == "2 completed, 1 error, 2 pruned, 1 stopped"
    assert count_statuses(iter(statuses)) == "2 completed, 1 error, 2 pruned, 1 stopped"


def _row(trial_id: str, status: str, best: float | None, epochs: int = 12) -> dict:
    return {"trial_id": trial_id, "status": status, "best_val_accuracy": best, "epochs": epochs}


def test_pruned_trials_ahead_of_every_completed_one_are_named_highest_first() -> None:
    rows = [_row("a", "completed", 0.148), _row("b", "pruned:flat", 0.086, 3)]
    assert pruned_ahead(rows) == ([], 0.148)  # pruned, but behind: nothing to say
    assert pruned_ahead_note(rows, "runs/sweeps/s") is None
    rows.append(_row("c", "pruned:point", 0.232, 3))
    rows.append(_row("d", "pruned:point", 0.250, 4))
    rows.append(_row("e", "stopped:asha", 0.400, 2))  # ASHA's stops compare accuracy already: not told
    rows.append(_row("f", "error", None, 1))
    rows.append(_row("g", "completed", 0.240))
    ahead, best = pruned_ahead(rows)
    assert [r["trial_id"] for r in ahead] == ["d"] and best == 0.240  # c (0.232) is behind g now
    rows.append(_row("h", "completed", 0.200))
    rows[2]["best_val_accuracy"] = 0.245
    assert [r["trial_id"] for r in pruned_ahead(rows)[0]] == ["d", "c"]
    note = pruned_ahead_note(rows, "runs/sweeps/s")
    assert note is not None
    assert note.startswith("note: 2 pruned trials had reached a higher accuracy before they were stopped")
    assert "(d: 0.250 by epoch 4, pruned:point; completed trials at most 0.240)" in note
    assert "`tune-attn best runs/sweeps/s --show-pruned`" in note
    assert "`tune-attn best s3://bucket/s --show-pruned`" in (pruned_ahead_note(rows, "s3://bucket/s") or "")
    assert "`tune-attn best 'runs/my sweep' --show-pruned`" in (
        pruned_ahead_note(rows, "runs/my sweep") or ""
    )


def test_nothing_is_ahead_when_no_trial_completed() -> None:
    rows = [
        _row("a", "pruned:flat", 0.3, 3),
        _row("b", "completed", None),
        _row("c", "completed", float("nan")),
    ]
    ahead, best = pruned_ahead(rows)
    assert ahead == [] and best != best  # NaN: no completed accuracy to compare with
    assert pruned_ahead_note(rows, "x") is None


def test_the_study_file_holds_the_study_and_one_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    import pytest

    from tune_attn.tune.summary import write_study
    from tune_attn.tune.sweep import _study_file

    study = _study(3)
    (tmp_path / "study.db").mkdir()  # a folder in the file's place: the copy cannot replace it
    (tmp_path / "study.db" / "kept").touch()
    with pytest.raises(OSError, match=rf"^{tmp_path}/study.db: "):
        write_study(tmp_path, study, "s")
    assert not list(tmp_path.glob(".study.db*"))  # its temporary copy is gone too
    said: list[str] = []
    _study_file(tmp_path, study, "s", said.append)  # the sweep's end: told in a line, and it goes on
    assert len(said) == 1 and said[0].startswith(f"study.db: not written ({tmp_path}/study.db: "), said
    assert said[0].endswith("every trial is in summary.json and in Tune's searcher state")
    (tmp_path / "study.db" / "kept").unlink()
    (tmp_path / "study.db").rmdir()
    write_study(tmp_path, study, "s")
    write_study(tmp_path, study, "s")  # written anew, not a second study beside the first
    saved = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [(t.params, t.value, t.state) for t in saved.trials] == [
        (t.params, t.value, t.state) for t in study.trials
    ]
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'study.db'}") == ["s"]


def test_the_summary_is_written_whole_and_a_broken_one_is_named(tmp_path: Path) -> None:
    import json

    import pytest

    from tune_attn.leaderboard import SweepError, read_sweep
    from tune_attn.tune.summary import write_table

    rows = [{"trial_id": "a", "status": "pruned:flat", "number": 0}, {"trial_id": "b", "status": "error"}]
    write_table(tmp_path, rows)
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    assert (tmp_path / "summary.csv").read_text().splitlines() == [
        "trial_id,status,number",
        "a,pruned:flat,0",
        "b,error,",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "summary.csv",
        "summary.json",
    ]  # no temporary file left
    assert [r["status"] for r in read_sweep(tmp_path)] == ["pruned:flat", "error"]
    # Cut short (a copy broken on the way, a disk that filled): named, with what to do, not a bare JSON error.
    text = (tmp_path / "summary.json").read_text()
    (tmp_path / "summary.json").write_text(text[: len(text) // 2])
    with pytest.raises(
        SweepError, match=r"summary.json: not a sweep summary \(.*\); the sweep writes it at its end"
    ):
        read_sweep(tmp_path)
