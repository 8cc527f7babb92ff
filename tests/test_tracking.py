"""W&B logging with the real wandb library in offline mode, read back from what it wrote."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY
from tests.wandb_records import OfflineRun
from tune_attn.config import WandbOptions, load_config
from tune_attn.data import build_data
from tune_attn.data.synthetic import CLASS_NAMES
from tune_attn.panels import MASK_LEVELS, mask_levels
from tune_attn.tracking import WandbRun, offline_runs, run_id, sync_command


def _train(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    sets = [a for kv in [*TINY, "model.heads=2", "model.activation=softmax"] for a in ("--set", kv)]
    return subprocess.run(
        [sys.executable, "-m", "tune_attn.cli", "train", *sets, "--out", "run", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
        timeout=300,
    )


def test_mask_levels_cut_each_head_at_quarters_of_its_own_max() -> None:
    mask = np.array([[0.0, 0.1], [0.3, 0.4]])  # max 0.4: levels 0, 1, 3, 3 at the corners
    levels = mask_levels(mask, 8, 8)
    assert levels.shape == (8, 8) and levels.dtype == np.uint8
    assert levels[0, 0] == 0 and levels[-1, -1] == 3 and levels[0, -1] == 1
    assert set(np.unique(levels)) <= set(MASK_LEVELS)
    assert (mask_levels(np.zeros((2, 2)), 4, 4) == 0).all()  # a dead head: nothing highlighted


def test_run_ids_are_stable_safe_and_short() -> None:
    a = run_id("my sweep/with:odd chars-" + "x" * 80, "key")
    assert a == run_id("my sweep/with:odd chars-" + "x" * 80, "key") and len(a) <= 64
    assert set(a) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    assert run_id("s", "k1") != run_id("s", "k2")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="--wandb: 'cloud' is not valid; choose one of offline, online, off"):
        WandbOptions(mode="cloud")
    assert "Invalid project name 'a/b'" in (WandbOptions(project="a/b").problem() or "")
    assert WandbOptions(project="a/b", mode="off").problem() is None


def test_train_logs_an_offline_run_with_config_history_panels_and_status(tmp_path: Path) -> None:
    r = _train(tmp_path, env={"COLUMNS": "60"})  # a narrow terminal: the command to copy is still one line
    assert r.returncode == 0, r.stderr
    runs = offline_runs(tmp_path / "run")
    sync = f"wandb sync {runs[0].relative_to(tmp_path)}"
    assert len(runs) == 1 and any(sync in line for line in r.stdout.splitlines()), r.stdout
    run = OfflineRun.read(runs[0])
    assert run.run.job_type == "train" and run.exited
    assert run.config["model"]["heads"] == 2 and run.config["train"]["epochs"] == 2
    assert run.config["train"]["device"] == "auto" and run.config["device"] == "cpu"  # the one it trained on
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["_step"] for h in run.history] == [1, 2]  # step = epoch: the media panel scrolls by epoch
    val_labels = np.bincount(  # the validation images of each class
        [v[1] for v in build_data(load_config(tmp_path / "run" / "config.yaml").data).val], minlength=18
    )
    for h, m in zip(run.history, metrics, strict=True):
        assert h["val_accuracy"] == m["val_accuracy"] and h["mask.entropy"] == m["mask.entropy"]
        # each class's accuracy; weighted by its images, they make the accuracy
        shares = {name: h.get(f"class_accuracy/{name}") for name in CLASS_NAMES}
        assert all((shares[n] is None) == (val_labels[k] == 0) for k, n in enumerate(CLASS_NAMES)), shares
        right = sum((shares[n] or 0.0) * val_labels[k] for k, n in enumerate(CLASS_NAMES))
        assert right == pytest.approx(m["val_accuracy"] * val_labels.sum(), abs=1e-6)
        # the epoch's panel PNG, as written to disk
        assert h["panel"]["_type"] == "image-file"
        logged = Image.open(runs[0] / "files" / h["panel"]["path"])
        on_disk = Image.open(tmp_path / "run" / "panels" / f"epoch_{m['epoch']:03d}.png")
        assert logged.size == on_disk.size
        # every fixed sample with one toggleable mask per head
        for i in range(3):
            sample = h[f"masks/sample_{i}"]
            assert sorted(sample["masks"]) == ["head_0", "head_1"]
            assert re.fullmatch(  # each head's lowest and highest value
                rf"epoch {m['epoch']}, sample {i}: head 0 [\d.e-]+\u2013[\d.e-]+, head 1 [\d.e-]+\u2013[\d.e-]+",
                sample["caption"],
            ), sample["caption"]
            levels = np.asarray(Image.open(runs[0] / "files" / sample["masks"]["head_0"]["path"]))
            assert levels.shape == (32, 32) and set(np.unique(levels)) <= set(MASK_LEVELS)
    assert run.summary["status"] == "completed" and run.tags == ["completed"]
    assert run.summary["detector.kind"] == metrics[-1]["detector.kind"]
    # W&B's runs table shows the last accuracy and the best one (not only the last, as a run's summary does)
    assert run.summary["val_accuracy"] == metrics[-1]["val_accuracy"]
    assert run.summary["best_val_accuracy"] == max(m["val_accuracy"] for m in metrics)


def test_a_pruned_run_ends_with_its_status_and_tag(tmp_path: Path) -> None:
    # weight decay 5 with SGD at lr 0.1 kills a ReLU mask within an epoch (see tests/data/space_collapse.yaml)
    r = _train(
        tmp_path,
        "--prune",
        "--set",
        "model.activation=relu",
        "--set",
        "train.optimizer=sgd",
        "--set",
        "train.lr=0.1",
        "--set",
        "train.weight_decay=5",
        "--set",
        "train.epochs=4",
        "--set",
        "detector.grace_epochs=1",
        "--set",
        "detector.patience=1",
    )
    assert r.returncode == 0, r.stderr
    run = OfflineRun.read(offline_runs(tmp_path / "run")[0])
    assert run.summary["status"] == "pruned:dead" and run.tags == ["pruned:dead"]
    assert "dead: mask maximum" in run.summary["reason"] and len(run.history) == 2


@pytest.mark.slow
def test_wandb_failures_never_stop_training_and_are_told_once(tmp_path: Path) -> None:
    # A project name W&B refuses: training goes on, panels are written, one clear message.
    (tmp_path / "a").mkdir()
    r = _train(tmp_path / "a", "--wandb-project", "bad/name")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("W&B:") == 1 and "Invalid project name 'bad/name'" in r.stderr
    assert (tmp_path / "a" / "run" / "panels" / "epoch_002.png").is_file()
    assert not offline_runs(tmp_path / "a" / "run")
    # Online without an API key (and a W&B server address that cannot answer): falls back to offline.
    (tmp_path / "b").mkdir()
    env = {"WANDB_API_KEY": "", "HOME": str(tmp_path / "home"), "WANDB_BASE_URL": "http://127.0.0.1:9"}
    r = _train(tmp_path / "b", "--wandb", "online", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("W&B:") == 1 and "logging offline instead" in r.stderr, r.stderr
    (run,) = offline_runs(tmp_path / "b" / "run")
    assert OfflineRun.read(run).summary["status"] == "completed"
    # --wandb off: nothing of W&B is written.
    (tmp_path / "c").mkdir()
    r = _train(tmp_path / "c", "--wandb", "off")
    assert r.returncode == 0 and not (tmp_path / "c" / "run" / "wandb").exists()


def test_a_wandb_error_mid_run_turns_logging_off_without_raising(tmp_path: Path) -> None:
    run = WandbRun(
        WandbOptions(), tmp_path, name="t", id=run_id("t", str(tmp_path)), job_type="train", config={}
    )
    assert run.active and run.error is None

    def broken(*args: object, **kwargs: object) -> None:  # a failure we cannot cause for real: a full disk
        raise OSError(28, "No space left on device")

    run.run.log = broken
    run.log({"a": 1.0}, step=1)
    assert not run.active and "W&B log failed (OSError: [Errno 28] No space left on device)" in (
        run.error or ""
    )
    run.log({"a": 2.0}, step=2)  # later calls are no-ops
    run.finish("completed")
    assert "W&B log failed" in (run.error or "")


def test_sync_command_expands_to_every_offline_run(tmp_path: Path) -> None:
    import subprocess

    sweep = tmp_path / "my sweeps" / "s"  # a space in the path must survive the shell
    runs = [sweep / f"trial_{t}" / "run" / "wandb" / f"offline-run-2026-{t}" for t in ("a1", "b2", "c3")]
    runs += [sweep / "trial_a1" / "run" / "wandb" / "offline-run-2027-a1"]  # a restarted trial's second run
    runs += [sweep / "wandb" / "offline-run-2026-summary"]
    for run in runs:
        run.mkdir(parents=True)
    (sweep / "trial_d4" / "run").mkdir(parents=True)  # a trial without W&B adds nothing
    command = sync_command(runs)
    assert command.startswith("wandb sync ") and command.count("offline-run-*") == 1  # the sweep run: exact
    listed = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {command.removeprefix('wandb sync ')}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert sorted(listed) == sorted(str(r) for r in runs)


_NAMES_LOOKED_UP = """
import atexit, socket, sys
from pathlib import Path
looked_up = []
real = socket.getaddrinfo
def spy(host, *args, **kwargs):
    looked_up.append(str(host))
    return real(host, *args, **kwargs)
socket.getaddrinfo = spy
atexit.register(lambda: print(sorted(set(looked_up))))  # the last exit handler: after wandb's own
from tune_attn.config import WandbOptions, load_config
from tune_attn.data import build_data
from tune_attn.data.synthetic import CLASS_NAMES
from tune_attn.tracking import WandbRun
run = WandbRun(WandbOptions("offline"), Path(sys.argv[1]), name="n", id="offline-check", job_type="trial", config={})
assert run.active, run.error
run.run.log({"val_accuracy": 0.5}, step=1)  # as every epoch of a trial does
run.finish("completed", summary={"val_accuracy": 0.5})
"""


def test_an_offline_run_looks_up_no_server(tmp_path: Path) -> None:
    """An offline run asks for no host name but this machine's (wandb's own usage telemetry would look up
    W&B's server from every run: it goes offline with the run). In a process of its own: wandb keeps that
    telemetry per process."""
    r = subprocess.run(
        [sys.executable, "-c", _NAMES_LOOKED_UP, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    names = ast.literal_eval(r.stdout.strip().splitlines()[-1])  # the list printed last
    assert not [n for n in names if n not in ("localhost", "127.0.0.1", "::1", "")], names
    assert list(tmp_path.glob("wandb/offline-run-*"))
