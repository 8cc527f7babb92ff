from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, heavy_imports_after
from tune_attn.files import RUN_LOCK, sole_writer
from tune_attn.leaderboard import read_run

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tune_attn.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _sets(*extra: str) -> list[str]:
    return [a for kv in [*TINY, *extra] for a in ("--set", kv)]


@pytest.mark.slow
def test_train_writes_a_run_and_resume_and_evaluate_work(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  activation: relu\n  heads: 2\n")
    r = _cli("train", "--config", str(cfg), *_sets(), "--out", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "val_accuracy" in r.stdout and "panels in run/panels" in r.stdout.replace("\n", "")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert (tmp_path / "run" / "panels" / "epoch_002.png").is_file()
    # The same folder again without --resume is refused; with it, training goes on to the new epoch count.
    r = _cli("train", "--config", str(cfg), *_sets(), "--out", "run", cwd=tmp_path)
    assert r.returncode == 2 and "add --resume" in r.stderr
    r = _cli("train", "--out", "run", "--resume", "--set", "train.epochs=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    r = _cli("evaluate", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"val_accuracy {rows[-1]['val_accuracy']:.4f}" in r.stdout
    assert "mask.corner_mass" in r.stdout


@pytest.mark.slow
def test_a_relative_data_root_is_recorded_absolute_so_the_run_is_read_from_anywhere(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 30), (40 * i, 100 if cls == "cat" else 200, 0)).save(
                tmp_path / "photos" / cls / f"{i}.png"
            )
    args = _sets("data.name=imagefolder", "data.root=photos", "data.val_fraction=0.3", "train.epochs=1")
    r = _cli("train", *args, "--out", "run", "--wandb", "off", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"root: {tmp_path / 'photos'}\n" in (tmp_path / "run" / "config.yaml").read_text()
    r = _cli("evaluate", str(tmp_path / "run"), cwd=ROOT)  # elsewhere, where "photos" names no folder
    assert r.returncode == 0, r.stderr
    accuracy = float(re.search(r"val_accuracy (\S+)", r.stdout)[1])  # type: ignore[index]
    classes = re.findall(r"^  (cat|dog) +(\d)/(\d)  ", r.stdout, re.M)  # 30 % of each class's 6: 2
    assert sorted(c[0] for c in classes) == ["cat", "dog"] and {c[2] for c in classes} == {"2"}, r.stdout
    assert accuracy == pytest.approx(sum(int(c[1]) for c in classes) / 4, abs=1e-4)
    # A run of an earlier version recorded the root as given; resumed from where it ran, it goes on.
    import torch

    config = tmp_path / "run" / "config.yaml"
    config.write_text(config.read_text().replace(f"root: {tmp_path / 'photos'}\n", "root: photos\n"))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["config"]["data"]["root"] = "photos"
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    r = _cli("train", "--out", "run", "--resume", "--set", "train.epochs=2", "--wandb", "off", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_train_stopped_with_ctrl_c_says_how_to_go_on(tmp_path: Path) -> None:
    import re
    import shlex
    import signal

    from tests.wandb_records import OfflineRun

    run = subprocess.Popen(
        [sys.executable, "-m", "tune_attn.cli", "train", *_sets("train.epochs=1000"), "--out", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )
    assert run.stdout is not None
    for line in run.stdout:
        if line.startswith("epoch   2 "):
            break
    # While it trains, the folder is its own: a second process is refused (it wrote into the same metrics.jsonl),
    # and the run reads as running, not as stopped.
    second = _cli("train", "--out", "run", "--resume", cwd=tmp_path)
    assert second.returncode == 2 and (
        f"run: a run is training into this folder now (pid {run.pid} on " in second.stderr
    ), second.stderr
    row = read_run(tmp_path / "run")
    assert row["status"] == "running" and f"training now (pid {run.pid} on " in row["reason"], row
    run.send_signal(signal.SIGINT)
    out = run.stdout.read()
    assert run.wait(timeout=60) == 130, out  # not a traceback, not "Aborted!"
    said = re.search(
        r"^interrupted after epoch (\d+) of 1000; continue it with: (tune-attn train .*)$", out, re.M
    )
    assert said and said.group(2) == "tune-attn train --out run --resume", out
    epoch = int(said.group(1))
    saved = [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert saved in (
        list(range(1, epoch + 1)),
        list(range(1, epoch + 2)),
    )  # +1: written just as it was stopped
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    summary = OfflineRun.read(folder).summary  # the W&B run says so too (it said "error", KeyboardInterrupt)
    assert summary["status"] == "interrupted" and summary["reason"].startswith(
        f"interrupted after epoch {epoch} of 1000"
    )
    row = read_run(tmp_path / "run")
    assert row["status"] == "interrupted" and row["reason"].endswith(
        f": stopped before its last epoch; tune-attn train --out {tmp_path / 'run'} --resume goes on"
    ), row
    r = _cli(*shlex.split(said.group(2))[1:], "--set", f"train.epochs={epoch + 1}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [
        json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ] == list(range(1, epoch + 2))


DIVERGES = (
    "train.optimizer=sgd",
    "train.lr=10",
    "train.momentum=0",
    "train.weight_decay=100",
    "train.epochs=4",
)
"""Valid settings whose loss is NaN in epoch 3: L2 in SGD's gradient multiplies the weights by about -999 a step."""


@pytest.mark.slow
def test_training_that_diverges_ends_with_a_clear_error(tmp_path: Path) -> None:
    from tests.wandb_records import OfflineRun

    r = _cli("train", *_sets(*DIVERGES), "--out", "run", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: training diverged (epoch 3, batch 1: loss is nan); a lower train.lr" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    saved = [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert saved == [1, 2]
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    summary = OfflineRun.read(folder).summary
    assert summary["status"] == "error"
    assert summary["reason"] == "TrainingDiverged: epoch 3, batch 1: loss is nan"


@pytest.mark.slow
def test_bad_input_fails_before_training_with_a_clear_message(tmp_path: Path) -> None:
    r = _cli("train", "--set", "model.heds=2", "--out", "x", cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown key 'model.heds'" in r.stderr and "model.heads" in r.stderr
    assert not (tmp_path / "x").exists()  # no work started
    r = _cli("train", "--set", "data.name=cifar10", "--set", "data.root=nowhere", "--out", "x", cwd=tmp_path)
    assert r.returncode == 2 and "nowhere is not a folder" in r.stderr and "cifar-10-batches-py" in r.stderr
    r = _cli("train", "--config", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml: no such file" in r.stderr
    assert not (tmp_path / "x").exists()  # nor a folder made for the run and left empty
    # The same command started twice: the second is refused before it writes (both wrote into one metrics.jsonl).
    with sole_writer(
        tmp_path / "twice", RUN_LOCK, RuntimeError
    ):  # as the first process holds it while it trains
        r = _cli("train", "--out", "twice", *_sets(), cwd=tmp_path)
    assert r.returncode == 2 and (
        f"twice: a run is training into this folder now (pid {os.getpid()} on " in r.stderr
    ), r.stderr
    assert [p.name for p in (tmp_path / "twice").iterdir()] == [RUN_LOCK]
    (tmp_path / "a-file").write_text("")
    r = _cli("train", "--out", "a-file", *_sets(), cwd=tmp_path)  # was a NotADirectoryError traceback
    assert r.returncode == 2 and "--out a-file: a file, not a folder" in r.stderr, r.stderr
    r = _cli("train", "--out", "a-file/run", *_sets(), cwd=tmp_path)
    assert r.returncode == 2 and "--out a-file/run: cannot be made (a-file is a file)" in r.stderr, r.stderr
    # Told before torch is imported (~3 s): a mistyped key, --out or --wandb.
    for args, needle in (
        (["--set", "model.heds=2"], "unknown key 'model.heds'"),
        (["--out", "a-file/run"], "--out a-file/run: cannot be made"),
        (["--wandb", "cloud"], "--wandb: 'cloud' is not valid; choose one of offline, online, off"),
        # a folder of no run (it said "no such file" of a folder that is there)
        (["--config", "."], "--config .: a folder without config.yaml; give a config file, or a bundle, run"),
    ):
        code, stderr, heavy = heavy_imports_after("train", *args, cwd=tmp_path)
        assert (code, heavy) == (2, []) and needle in stderr, (args, stderr)


def test_keys_lists_every_key_with_its_doc(tmp_path: Path) -> None:
    from tune_attn.config import valid_keys

    r = _cli("keys", cwd=tmp_path)
    assert r.returncode == 0
    for key in valid_keys():
        assert f"│ {key} " in r.stdout  # a table (200 columns)
    assert "spatial softmax" in r.stdout
    # 80 columns: a table would cut the longer key names short ("detector.corner_min_bl…"); a line per key, its
    # meaning under it.
    r = subprocess.run(
        [sys.executable, "-m", "tune_attn.cli", "keys"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        timeout=300,
    )
    assert r.returncode == 0 and "…" not in r.stdout, r.stdout
    starts = [line.split()[0] for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert starts == valid_keys(), starts
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    assert "    Mask activation: ``sigmoid`` (0..1), ``relu`` (>= 0) or ``softmax``" in r.stdout


def test_a_sweeps_last_word_names_the_trial_best_picks() -> None:
    from tune_attn.cli import _best_line, _next_step

    def row(tid: str, status: str, kind: str, acc: float) -> dict[str, object]:
        return {"trial_id": tid, "status": status, "detector.kind": kind, "last_val_accuracy": acc}

    healthy, flat = row("a", "completed", "healthy", 0.30), row("b", "completed", "flat", 0.35)
    pruned = row("c", "pruned:point", "point", 0.40)
    assert _best_line([healthy, pruned]) == "best trial (completed, healthy masks): a val_accuracy 0.300"
    # A --no-prune sweep completes degenerate trials: the pick is still the healthy one, and the other is named.
    assert _best_line([healthy, flat, pruned]) == (
        "best trial (completed, healthy masks): a val_accuracy 0.300; the most accurate completed trial, b "
        "(0.350), ends with flat masks"
    )
    assert _best_line([flat, pruned]) == (
        "no completed trial has healthy masks at the end; the most accurate completed trial, b (0.350), ends "
        "with flat masks"
    )
    # None completed: how many were pruned and what the best of them reached, and what to do if such masks are
    # what the data gives (a colour tells the classes apart: flat masks, and a perfect accuracy).
    assert _best_line(
        [{**pruned, "best_val_accuracy": 0.45}, {**pruned, "trial_id": "d"}, row("e", "error", "", 0)]
    ) == (
        "no trial completed, so none can be picked (3 trials: 2 pruned:point, 1 error); the most accurate pruned "
        "one, c, reached 0.450 before it was stopped. If such masks are what this data gives, sweep with "
        "--no-prune (the verdicts are still recorded) or set the detector's thresholds (tune-attn keys: detector.*)"
    )
    assert _best_line([row("e", "error", "", 0)]) == "no trial completed, so none can be picked"
    assert _best_line([]) == ""
    # Trials that tie (2 of 48 validation images right, as in a smoke sweep): the earlier trial, in whatever order
    # the rows come (the sweep's summary lists them by number, `best` reads its folders by trial id).
    tied = [{**healthy, "trial_id": tid, "number": n} for tid, n in (("f9", 2), ("83", 7), ("c2", 5))]
    said = "best trial (completed, healthy masks): f9 val_accuracy 0.300"
    assert _best_line(tied) == _best_line(tied[::-1]) == said
    # The last line: the command that exports the pick, or, with none to pick, the one that lists the trials.
    assert (
        _next_step([flat, healthy], "runs/s", False)
        == "pick and export the best config: tune-attn best runs/s --export DIR"
    )
    assert _next_step([flat, pruned], "/s", True) == (
        "review the trials (there), none can be picked yet: tune-attn best /s --show-pruned"
    )
    # A path with a space in it is quoted, so that the line can be pasted into a shell as it is.
    assert _next_step([healthy], "runs/my sweep", False).endswith(
        "tune-attn best 'runs/my sweep' --export DIR"
    )
