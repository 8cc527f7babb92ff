from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from tune_attn.files import in_place, write_json
from tune_attn.run import load_checkpoint, save_checkpoint


def test_a_file_written_in_place_is_whole_or_the_previous_one(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    with in_place(target) as tmp:
        assert tmp.parent == tmp_path and not target.exists()
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError, match="stopped half way"), in_place(target) as tmp:
        tmp.write_text("sec")
        raise RuntimeError("stopped half way")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_checkpoint_that_fails_to_save_leaves_the_previous_one_and_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "epoch": 1}, path)
    # torch.save fails part way through a state it cannot pickle, after it began writing the file.
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint({"model": {"w": torch.zeros(1000)}, "config": {}, "epoch": 2, "f": lambda: 0}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no .checkpoint.pt.<pid>.tmp left


def test_json_is_written_strict_with_numbers_that_are_not_finite_as_null(tmp_path: Path) -> None:
    target = tmp_path / "pick.json"
    write_json(
        target, {"accuracy": math.nan, "rows": [{"loss": math.inf, "n": 3}, (-math.inf, 0.5)], "s": "nan"}
    )

    def refuse(name: str) -> None:  # Python's reader takes NaN and Infinity; strict JSON has no such words
        raise ValueError(f"not strict JSON: {name}")

    got = json.loads(target.read_text(), parse_constant=refuse)
    assert got == {"accuracy": None, "rows": [{"loss": None, "n": 3}, [None, 0.5]], "s": "nan"}
    # Not JSON at all: the file stays as it was, and nothing is left beside it.
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(target, {"x": object()})
    assert json.loads(target.read_text())["s"] == "nan"
    assert [p.name for p in tmp_path.iterdir()] == ["pick.json"]
