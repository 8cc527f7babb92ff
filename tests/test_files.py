from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tune_attn.files import in_place
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
