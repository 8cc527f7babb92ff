"""Evaluating a saved model: on its validation set, on its data set's test split, on a folder of images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY
from tune_attn.config import load_config
from tune_attn.data import DatasetError, build_data
from tune_attn.data.folders import class_key
from tune_attn.export import evaluate_saved
from tune_attn.leaderboard import SweepError
from tune_attn.run import train_run

ROOT = Path(__file__).resolve().parents[1]


def _photos(folder: Path, counts: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(counts.items()):
        (folder / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 80, (36, 36, 3), dtype=np.uint8)
            pixels[8:24, 8:24, k] = 230  # a square of the class's colour
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on a tree split in folders: train / val / test, classes cat, dog, fox."""
    tree = tmp_path_factory.mktemp("photos")
    _photos(tree / "train", {"cat": 10, "dog": 10, "fox": 10}, seed=0)
    _photos(tree / "val", {"cat": 4, "dog": 4, "fox": 2}, seed=1)
    _photos(tree / "test", {"cat": 3, "fox": 5}, seed=2)  # a test set need not hold every class
    out = tmp_path_factory.mktemp("evaluated") / "run"
    train_run(load_config(None, [*TINY, "data.name=imagefolder", f"data.root={tree}", "train.epochs=1"]), out)
    return out


def test_a_run_is_evaluated_on_its_validation_set_and_told_of_its_test_split(run: Path) -> None:
    done = evaluate_saved(run)
    tree = Path(load_config(run / "config.yaml").data.root or "")
    assert done.on is None and done.test_split == str(tree / "test")
    assert done.class_names == ("cat", "dog", "fox") and done.epoch == 1
    assert done.evaluation.confusion.sum(1).tolist() == [4, 4, 2]  # rows: the val folder's classes
    assert done.evaluation.accuracy == np.trace(done.evaluation.confusion) / 10


def test_the_test_split_and_a_folder_are_labelled_by_the_models_classes(run: Path, tmp_path: Path) -> None:
    tree = Path(load_config(run / "config.yaml").data.root or "")
    done = evaluate_saved(run, test=True)
    assert done.on == str(tree / "test") and done.test_split is None
    assert done.evaluation.confusion.sum(1).tolist() == [3, 0, 5]
    # The val folder copied elsewhere gives what the validation set gave: the same labels, the same model.
    shutil.copytree(tree / "val", tmp_path / "copy")
    on_copy = evaluate_saved(run, on=str(tmp_path / "copy"))
    np.testing.assert_array_equal(on_copy.evaluation.confusion, evaluate_saved(run).evaluation.confusion)
    assert on_copy.evaluation.loss == pytest.approx(evaluate_saved(run).evaluation.loss, rel=1e-5)
    # Folders named another way (case, _ or -: Pets' "American Pit Bull Terrier" as american_pit_bull_terrier)
    for name in ("cat", "dog", "fox"):
        shutil.copytree(tree / "val" / name, tmp_path / "renamed" / name.upper())
    on_renamed = evaluate_saved(run, on=str(tmp_path / "renamed"))
    np.testing.assert_array_equal(on_renamed.evaluation.confusion, on_copy.evaluation.confusion)
    assert (
        class_key("american_pit_bull_terrier")
        == class_key("American Pit Bull Terrier")
        == class_key("american-pit bull_Terrier")
    )
    (tmp_path / "renamed" / "Cat").mkdir()
    with pytest.raises(DatasetError, match=r"folders CAT and Cat name one class"):
        evaluate_saved(run, on=str(tmp_path / "renamed"))
    # A class the model was not trained on is refused before any work, naming it and the model's classes.
    _photos(tmp_path / "other", {"cat": 1, "wolf": 1}, seed=3)
    with pytest.raises(
        DatasetError,
        match=r"--on: \S+other has class folders that the model does not have: wolf; the classes are: cat, dog, fox",
    ):
        evaluate_saved(run, on=str(tmp_path / "other"))
    with pytest.raises(DatasetError, match=r"--on: \S+nowhere is not a folder"):
        evaluate_saved(run, on=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\S+nowhere: no such run folder, checkpoint or bundle"):
        evaluate_saved(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"\S+copy: no run folder \(no checkpoint.pt\) and no bundle"):
        evaluate_saved(tmp_path / "copy")  # a folder of images
    # A sweep's trial folder is read as its run folder; a sweep folder stands for its pick (test_export), and
    # one without a pick (this run's masks are flat) is refused, saying why and what to give instead.
    (tmp_path / "sweep" / "trial_1").mkdir(parents=True)
    shutil.copytree(run, tmp_path / "sweep" / "trial_1" / "run")
    trial = evaluate_saved(tmp_path / "sweep" / "trial_1")
    np.testing.assert_array_equal(trial.evaluation.confusion, evaluate_saved(run).evaluation.confusion)
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    with pytest.raises(
        SweepError,
        match=r"\S+sweep: this sweep has no trial to pick, none completed with healthy masks \(1 trial: 1 "
        r"completed with flat masks\); give one of its trial folders",
    ):
        evaluate_saved(tmp_path / "sweep")


def test_a_run_on_the_synthetic_set_is_tested_on_images_drawn_apart(tmp_path: Path) -> None:
    train_run(load_config(None, [*TINY, "train.epochs=1"]), tmp_path / "run")
    on_val = evaluate_saved(tmp_path / "run")
    assert on_val.test_split == "the synthetic set's test stream, data.seed 0"
    done = evaluate_saved(tmp_path / "run", test=True)
    assert done.on == on_val.test_split and done.evaluation.confusion.sum() == 48
    from tune_attn.data import held_out

    cfg = load_config(tmp_path / "run" / "config.yaml").data
    test = held_out(cfg, done.class_names)[0].val
    val = build_data(cfg)
    seen = {bytes(val.val[i][0].numpy()) for i in range(48)} | {
        bytes(val.train[i][0].numpy()) for i in range(96)
    }
    assert not seen & {bytes(test[i][0].numpy()) for i in range(48)}  # none of them trained on or validated


def test_a_model_trained_on_a_gpu_is_evaluated_where_it_is(run: Path, tmp_path: Path) -> None:
    # A sweep's trial on a GPU cluster records train.device: cuda; its run or bundle is evaluated on a
    # laptop too (before, "train.device: 'cuda' was asked for but torch sees no CUDA device", and no flag
    # could change a bundle's config).
    shutil.copytree(run, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["config"]["train"]["device"] = "cuda"
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    done = evaluate_saved(tmp_path / "run")
    assert done.evaluation.accuracy == evaluate_saved(run).evaluation.accuracy


@pytest.mark.slow
def test_the_evaluate_command_prints_accuracy_per_class_and_where(run: Path) -> None:
    tree = Path(load_config(run / "config.yaml").data.root or "")
    cli = [sys.executable, "-m", "tune_attn.cli", "evaluate", str(run)]
    r = subprocess.run([*cli, "--test"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert f"  on 8 images: {tree / 'test'}\n" in r.stdout and "val_accuracy" not in r.stdout
    lines = r.stdout.splitlines()
    start = lines.index("accuracy per class (correct / images), the least accurate first:")
    rows = lines[start + 1 : start + 3]
    assert sorted(row.split()[0] for row in rows) == ["cat", "fox"], r.stdout
    assert [row.split()[1].split("/")[1] for row in sorted(rows)] == ["3", "5"]
    assert lines[start + 3] == "  no images of: dog" and "mask statistics:" in lines
    # --json: the same, for a script that decides on deploying (a threshold on the test accuracy, say)
    out = run.parent / "test.json"
    r = subprocess.run([*cli, "--test", "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and f"results written to {out}\n" in r.stdout, r.stderr
    got = json.loads(out.read_text())
    assert got["saved"] == str(run) and got["on"] == str(tree / "test") and got["images"] == 8
    printed = {row.split()[0]: row.split()[1] for row in rows}
    assert {c["class"]: f"{c['correct']}/{c['images']}" for c in got["class_accuracy"]} == printed
    assert got["accuracy"] == pytest.approx(sum(c["correct"] for c in got["class_accuracy"]) / 8)
    assert f"accuracy {got['accuracy']:.4f}" in r.stdout and got["no_images_of"] == ["dog"]
    assert set(got["mask"]) >= {"mask.entropy", "mask.corner_mass"} and got["epoch"] >= 1
    r = subprocess.run([*cli, "--json", str(run / "no" / "such" / "x.json")], capture_output=True, text=True)
    assert r.returncode == 2 and f"--json {run / 'no' / 'such' / 'x.json'}: no folder" in r.stderr, r.stderr
    r = subprocess.run([*cli, "--json", str(run)], capture_output=True, text=True)
    assert r.returncode == 2 and f"--json {run}: a folder; give the path of a file" in r.stderr, r.stderr
    r = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert (
        f"this data set has test images, read in neither training nor picking ({tree / 'test'})" in r.stdout
        and f"evaluate {run} --test" in r.stdout
    )
    r = subprocess.run([*cli, "--test", "--on", str(tree)], capture_output=True, text=True)
    assert r.returncode == 2 and "--test and --on name two sets to evaluate on; give one" in r.stderr
