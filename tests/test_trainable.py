"""The Tune trainable outside a sweep (a Tune Trainable runs without Ray): how a trial that Tune starts again
continues. From Tune's checkpoint it goes on where that checkpoint left off; without one it starts from
scratch, whatever an earlier try left in its run folder; restored from its last epoch it reports that
epoch's metrics again (Tune ends a sweep whose trial reports no metric)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tune_attn.status import METRIC
from tune_attn.tune.trainable import AttentionTrial

from .conftest import TINY

CONFIG: dict[str, Any] = {k: json.loads(v) for k, v in (item.split("=") for item in TINY)}


def _trial(experiment: Path) -> AttentionTrial:
    class Trial(AttentionTrial):  # what tune.with_parameters gives a sweep's trials
        def setup(self, config: dict[str, Any]) -> None:  # type: ignore[override]
            super().setup(config, experiment=str(experiment))

    return Trial(config=CONFIG)


def _lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_restored_trial_goes_on_from_tunes_checkpoint(tmp_path: Path) -> None:
    first = _trial(tmp_path)
    assert first.train()["epoch"] == 1
    checkpoint = first.save()  # Tune's checkpoint of epoch 1
    assert first.train()["epoch"] == 2  # the run folder went on to epoch 2 (a node lost before Tune saved it)
    first.stop()

    again = _trial(tmp_path)
    again.restore(checkpoint)
    result = again.train()
    assert result["epoch"] == 2 and result["done"] and 0 <= result[METRIC] <= 1
    run = tmp_path / f"trial_{again.trial_id}" / "run"
    assert [r["epoch"] for r in _lines(run)] == [1, 2]  # epoch 2 once, from the restored epoch 1
    again.stop()


def test_a_trial_restored_from_its_last_epoch_reports_that_epochs_metrics(tmp_path: Path) -> None:
    first = _trial(tmp_path)
    first.train()
    last = first.train()
    assert last["done"]
    checkpoint = first.save()
    first.stop()

    again = _trial(tmp_path)
    again.restore(checkpoint)
    result = again.train()  # nothing left to train
    assert result["done"] and result["epoch"] == 2
    for key in (METRIC, "detector.kind", "detector.prune", "epochs_budget", "mask.entropy"):
        assert result[key] == last[key], key
    again.stop()


def test_a_trial_started_again_without_a_checkpoint_starts_from_scratch(tmp_path: Path) -> None:
    first = _trial(tmp_path)
    first.train()
    first.train()  # its run folder holds 2 epochs, but Tune kept no checkpoint (e.g. it could not save one)
    first.stop()

    again = _trial(tmp_path)
    result = again.train()
    assert result["epoch"] == 1 and result["training_iteration"] == 1 and not result["done"]
    run = tmp_path / f"trial_{again.trial_id}" / "run"
    assert [r["epoch"] for r in _lines(run)] == [1]
    assert again.train()["epoch"] == 2
    again.stop()
