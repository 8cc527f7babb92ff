"""A sweep on a real multi-node Ray cluster on loopback addresses (127.0.0.2-4), with token auth, surviving
the loss of a worker node: the lost trial resumes from its last checkpoint on the other node."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

import tune_attn
from tune_attn import localcluster
from tune_attn.status import INTERRUPTED
from tune_attn.tune.searcher import RAY_TRIAL_ID, load_study
from tune_attn.tune.summary import count_statuses
from tune_attn.tune.sweep import HEAD_STOP_S

ROOT = Path(__file__).resolve().parents[1]
# With pytest-xdist (scripts/test): the clusters share loopback addresses and ports: one at a time.
pytestmark = [pytest.mark.xdist_group("ray_cluster"), pytest.mark.slow]


def _results(trial: Path) -> list[dict]:
    path = trial / "result.json"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _sweep_driver(cmd: list[str], cluster: localcluster.LocalCluster) -> subprocess.Popen:
    """A sweep's driver process on ``cluster``, its output (both streams, lines wide enough not to wrap) read
    from ``stdout``."""
    env = {**cluster.env, "COLUMNS": "400"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    c = localcluster.start(workers=2, cpus_per_worker=1, port=6395, env=env)
    yield c
    c.stop()


def test_a_sweep_survives_a_lost_worker_node(cluster: localcluster.LocalCluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    space = tmp_path / "space.yaml"
    space.write_text(
        # ~2 s epochs on one CPU: long enough to kill a node while a trial is between checkpoints
        "data.image_size: 32\ndata.num_train: 1200\ndata.num_val: 48\nmodel.width: 8\ntrain.epochs: 5\n"
        "train.batch_size: 32\ntrain.stats_samples: 24\ntrain.panel_samples: 2\n"
        "model.heads: {type: int, low: 1, high: 2}\n"
    )
    cmd = [sys.executable, "-m", "tune_attn.cli", "sweep", str(space), "--address", cluster.address]
    cmd += [
        "--storage",
        str(tmp_path / "sweeps"),
        "--name",
        "mn",
        "--num-samples",
        "4",
        "--max-concurrent",
        "2",
    ]
    cmd += ["--no-prune", "--wandb", "off"]
    driver = _sweep_driver(cmd, cluster)
    folder = tmp_path / "sweeps" / "mn"
    # Wait until a trial on the second worker (127.0.0.4) has reported epoch 2 or 3, then kill that node.
    victim, deadline = None, time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        for trial in folder.glob("trial_*"):
            rows = _results(trial)
            if rows and rows[-1].get("node_ip") == "127.0.0.4" and rows[-1]["epoch"] in (2, 3):
                victim = trial
        time.sleep(0.2)
    assert victim is not None, "no trial ran on the second worker in time"
    done_before = {t.name: _results(t) for t in folder.glob("trial_*") if len(_results(t)) == 5}
    cluster.kill(2)
    out, _ = driver.communicate(timeout=420)
    assert driver.returncode == 0, out[-3000:]
    rows = json.loads((folder / "summary.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), out[-3000:]
    # The trials ran on both workers.
    nodes = {r.get("node_ip") for t in folder.glob("trial_*") for r in _results(t)}
    assert {"127.0.0.3", "127.0.0.4"} <= nodes
    # The lost trial finished on the surviving node, resumed from its last checkpoint: its epochs never go
    # back to 1, and the first epoch after the move follows one it had reported.
    results = _results(victim)
    epochs = [r["epoch"] for r in results]
    moved = next(i for i, r in enumerate(results) if r["node_ip"] == "127.0.0.3")
    assert moved >= 2 and epochs[moved] > 1 and epochs[moved] - 1 in epochs[:moved], epochs
    assert epochs[-1] == 5 and 1 not in epochs[moved:], epochs
    # The sweep said so: where it failed, and from which epoch it goes on.
    lost = (
        rf"^{victim.name.removeprefix('trial_')}: failed on 127\.0\.0\.4 \(try 1 of 3\): .+; it starts again "
    )
    assert re.search(lost + rf"from its checkpoint of epoch {epochs[moved] - 1} \| ", out, re.M), out[-3000:]
    # Nothing finished before the loss was lost or rerun.
    for name, before in done_before.items():
        assert _results(folder / name)[: len(before)] == before


def _unshared(*mounts: str) -> list[str]:
    """A command prefix: run the rest (a node's `ray start`) in a mount namespace of its own, after ``mounts``."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [
        "unshare",
        *user,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        " && ".join(mounts) + ' && exec "$@"',
        "sh",
    ]


def test_nodes_whose_trials_would_fail_are_named_before_any_trial(tmp_path: Path) -> None:
    """Worker nodes set up unlike the driver's machine, each in a mount namespace of its own: one mounts
    neither the --storage folder nor the data (empty tmpfs over them), so its trials would fail at their
    first checkpoint, or at once; one has no tune-attn (an empty tmpfs over the package), so its trials
    would fail at once; one has another tune-attn version (its own __init__.py). The sweep names each
    before any trial starts."""
    storage, disk = tmp_path / "sweeps", tmp_path / "disk"
    storage.mkdir()
    data = disk / "pets"  # an image folder here; on the first worker, the tmpfs over `disk` hides it
    (data / "cat").mkdir(parents=True)
    other = tmp_path / "init.py"
    package = ROOT / "tune_attn"
    other.write_text(
        (package / "__init__.py").read_text().replace("__version__ = ", "__version__ = '0.0.0-other' or ")
    )
    cluster = localcluster.start(workers=0, port=6399, env={**os.environ, "HOME": str(tmp_path / "home")})
    try:
        hide = _unshared(f"mount -t tmpfs tmpfs {storage}", f"mount -t tmpfs tmpfs {disk}")
        assert cluster.add_worker(1, prefix=hide) == "127.0.0.3"
        assert cluster.add_worker(1, prefix=_unshared(f"mount -t tmpfs tmpfs {package}")) == "127.0.0.4"
        version = _unshared(f"mount --bind {other} {package / '__init__.py'}")
        assert cluster.add_worker(1, prefix=version) == "127.0.0.5"
        cmd = [sys.executable, "-m", "tune_attn.cli", "sweep", str(ROOT / "search_spaces" / "smoke.yaml")]
        cmd += ["--address", cluster.address, "--storage", str(storage), "--name", "nodes", "--wandb", "off"]
        cmd += ["--set", "data.name=imagefolder", "--set", f"data.root={data}"]
        refused = subprocess.run(
            cmd, env={**cluster.env, "COLUMNS": "400"}, capture_output=True, text=True, timeout=180
        )
        assert refused.returncode == 2, (refused.stdout + refused.stderr)[-3000:]
        error = refused.stderr
        assert (
            "Ray node 127.0.0.4 cannot run tune-attn's trials (ModuleNotFoundError: No module named 'tune_attn"
            in error
        )
        assert f"data.root {data} is not a folder on Ray node 127.0.0.3, where trials run" in error
        assert f"--storage {storage}: Ray node 127.0.0.3 cannot see this folder" in error
        assert "127.0.0.5" not in error
        assert (
            f"note: tune-attn {tune_attn.__version__} here, but 127.0.0.5 has 0.0.0-other" in refused.stdout
        )
        assert "started" not in refused.stdout  # no trial ran
        assert not any(storage.iterdir())  # the check's marker is gone, and nothing else was written
    finally:
        cluster.stop()


def test_a_node_that_joins_a_running_sweep_is_checked(tmp_path: Path) -> None:
    """An autoscaling cluster's shape: the head has no CPUs, so the sweep waits for a worker, and the first to
    join has no tune-attn (an empty tmpfs over the package). The sweep names that node while it runs and goes
    on; once the node is gone and a sound one has joined, the sweep finishes with every trial."""
    cluster = localcluster.start(workers=0, port=6393, env={**os.environ, "HOME": str(tmp_path / "home")})
    driver = None
    try:
        cmd = [sys.executable, "-m", "tune_attn.cli", "sweep", str(ROOT / "search_spaces" / "smoke.yaml")]
        cmd += ["--address", cluster.address, "--storage", str(tmp_path / "sweeps"), "--name", "late"]
        cmd += ["--num-samples", "1", "--max-failures", "-1", "--wandb", "off"]
        driver = _sweep_driver(cmd, cluster)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(driver.stdout or []), daemon=True)
        reader.start()

        def said(text: str, timeout: float = 90.0) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and driver.poll() is None:
                found = [line for line in list(lines) if text in line]
                if found:
                    return found[0]
                time.sleep(0.2)
            raise AssertionError(f"not said in {timeout} s: {text}\n" + "".join(lines)[-3000:])

        said("trials wait until such a node joins")
        # The worker joins once the start check is done (it writes sweep.json after it): a node there before
        # the check is refused at the start (exit 2), as the check-at-start test shows; seen once on a loaded CI.
        record = tmp_path / "sweeps" / "late" / "sweep.json"
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert record.exists(), "".join(lines)[-3000:]
        assert (
            cluster.add_worker(1, prefix=_unshared(f"mount -t tmpfs tmpfs {ROOT / 'tune_attn'}"))
            == "127.0.0.3"
        )
        line = said("a node that joined the sweep: Ray node 127.0.0.3 cannot run tune-attn's trials")
        assert "(ModuleNotFoundError: No module named 'tune_attn" in line and "The sweep goes on" in line
        # The trial's first try there fails (--max-failures -1: it is tried there again and again): seen before
        # the node goes (on a loaded machine the node was once gone before the trial had been sent to it).
        said("failed on 127.0.0.3 (try 1)")
        cluster.kill(1)
        assert cluster.add_worker(1) == "127.0.0.4"
        driver.wait(timeout=240)
        reader.join(timeout=10)
        out = "".join(lines)
        assert driver.returncode == 0, out[-3000:]
        rows = json.loads((tmp_path / "sweeps" / "late" / "summary.json").read_text())
        assert len(rows) == 1 and rows[0]["status"] != "error", out[-3000:]
        assert out.count("a node that joined the sweep") == 1 and "127.0.0.4 cannot" not in out
        # Its trial's failures there name it, though the trial never started on it (no result from that node).
        assert re.search(r"^\w{8}: failed on 127\.0\.0\.3 \(try 1\): .*ModuleNotFoundError", out, re.M), out[
            -3000:
        ]
        trials = (tmp_path / "sweeps" / "late").glob("trial_*")
        assert {r["node_ip"] for t in trials for r in _results(t)} == {"127.0.0.4"}
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.stop()


def test_a_sweep_from_a_ray_client_runs_on_the_head_node(tmp_path: Path) -> None:
    """``--address ray://...`` (Ray Client): the driver here only connects; Tune, the Optuna study and the
    summary live on the head node, and the progress lines still reach this terminal. Interrupted here
    (ctrl-c), the sweep stops on the head too, and the same command with --resume finishes it."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    cluster = localcluster.start(workers=1, cpus_per_worker=2, port=6397, env=env)
    try:
        here = tmp_path / "client"  # the client's working directory: nothing of the sweep may land in it
        here.mkdir()
        storage = tmp_path / "sweeps"
        cmd = [
            sys.executable,
            "-m",
            "tune_attn.cli",
            "sweep",
            str(ROOT / "tests" / "data" / "space_collapse.yaml"),
        ]
        cmd += ["--address", cluster.client_address, "--storage", str(storage), "--name", "rc"]
        cmd += ["--num-samples", "4", "--max-concurrent", "1", "--wandb", "off", "--progress-every", "0"]
        cmd += ["--set", "train.epochs=8", "--set", "data.num_train=480"]  # a few seconds per AdamW trial
        run_env = {**cluster.env, "COLUMNS": "300"}
        first = subprocess.Popen(
            cmd, cwd=here, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert first.stdout is not None
        out = ""
        for line in first.stdout:  # ctrl-c once the first trial has ended
            out += line
            if re.match(r"^\w{8}: (completed|pruned:)", line):
                first.send_signal(signal.SIGINT)
                break
        out += first.communicate(timeout=HEAD_STOP_S + 60)[0]
        # Stopped as a local sweep stops: the client waited while the head stopped its trials and saved Tune's
        # state (it left at once before, and the head's task with it, so the trial started after Tune's last save
        # was lost: seen on a loaded GPU machine), then told the stop as a local sweep's, with 130 as a shell's.
        assert first.returncode == 130, out[-3000:]
        assert "stopping the sweep on the head node: its trials stop and Tune saves its state there" in out
        assert "\nsweep interrupted: " in out, out[-3000:]
        told = out[out.index("\nsweep interrupted: ") :]
        assert "Continue it with: tune-attn " in told and "--resume" in told, out[-3000:]
        assert f"results on the cluster's head node: {storage / 'rc'} " in told
        assert "sweep finished:" not in out
        ended = {m for m in re.findall(r"^(\w{8}): (?:completed|pruned:)", out, re.M)}
        finished = {t.name: _results(t) for t in (storage / "rc").glob("trial_*") if t.name[6:] in ended}
        assert 1 <= len(finished) < 4, out[-3000:]
        # The head's summary at the stop: the trials that ended, as told here, and the one the stop cut short.
        rows = json.loads((storage / "rc" / "summary.json").read_text())
        assert {r["trial_id"] for r in rows if r["status"] != INTERRUPTED} == ended, rows
        assert {r["status"] for r in rows} - {"completed", "pruned:dead"} <= {INTERRUPTED}, (
            rows,
            out[-3000:],
        )

        resumed = subprocess.run(
            cmd + ["--resume"], cwd=here, env=run_env, capture_output=True, text=True, timeout=300
        )
        out += resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, out[-3000:]
        assert f"resuming the sweep in {storage / 'rc'}" in resumed.stdout
        rows = json.loads((storage / "rc" / "summary.json").read_text())
        assert len(rows) == 4
        # The study is the one the head's searcher filled (the client's copy never sees a trial).
        study = load_study(str(storage / "rc"))
        assert study is not None and len(study.trials) == 4
        numbers = {t.user_attrs[RAY_TRIAL_ID]: t.number for t in study.trials}
        assert {r["trial_id"]: r["number"] for r in rows} == numbers
        for t in study.trials:  # weight decay 5 with SGD kills the mask: pruned; AdamW completes
            pruned = t.params["train.optimizer"] == "sgd"
            assert t.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE), t.params
        assert {t.state for t in study.trials} == {TrialState.PRUNED, TrialState.COMPLETE}
        # Progress lines from Tune's driver on the head, then the end lines here.
        for row in rows:
            assert re.search(rf"^{row['trial_id']}: started ", out, re.M), out[-3000:]
            assert re.search(rf"^{row['trial_id']}: {re.escape(row['status'])}", out, re.M), out[-3000:]
        assert f"sweep finished: {count_statuses(r['status'] for r in rows)}" in resumed.stdout
        assert f"results on the cluster's head node: {storage / 'rc'} " in resumed.stdout
        assert not any(here.iterdir())
        assert (
            "no Ray node has that much" not in out
        )  # the worker's 2 CPUs hold a trial, seen through the client
        # Nothing finished before the interrupt was rerun; every trial ran on the worker (the head has no CPUs).
        for name, before in finished.items():
            assert _results(storage / "rc" / name) == before
        trials = list((storage / "rc").glob("trial_*"))
        assert {r["node_ip"] for t in trials for r in _results(t)} == {"127.0.0.3"}

        # A driver without the cluster's token: Ray Client only says it timed out; the error says why it may.
        bare = {k: v for k, v in run_env.items() if k != "RAY_AUTH_MODE"}
        bare["HOME"] = str(tmp_path / "elsewhere")
        # Ray Client's waits for the server (5 s, then 5 s longer each of 3 tries, at most 30 s): 1 s each
        bare["RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S"] = bare["RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S"] = "1"
        refused = subprocess.run(cmd, cwd=here, env=bare, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2, (refused.stdout + refused.stderr)[-3000:]
        assert (
            f"--address {cluster.client_address}: ray client connection timeout. If the cluster uses Ray's token authentication"
            in refused.stderr
        )
        assert "RAY_AUTH_MODE=token" in refused.stderr
    finally:
        cluster.stop()
