"""A local cluster's Ray command line runs wherever ray imports; stopping its nodes: a node's process group is
gone when nothing of it runs (zombies, dead but not yet reaped, do not count), and a process that ignores
SIGTERM is killed after the grace period."""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tune_attn.localcluster import HEAD_IP, group_running, stop_groups

ROOT = Path(__file__).resolve().parents[1]

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
)


def _start(code: str) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "1"  # running, its handler set
    return p


def test_a_group_of_zombies_is_not_running() -> None:
    p = _start("import time; print(1, flush=True); time.sleep(60)")
    try:
        assert group_running(p.pid)
        p.send_signal(signal.SIGKILL)
        # Dead, not reaped yet: still in the process table as a zombie of this process.
        for _ in range(50):
            if not group_running(p.pid):
                break
            subprocess.run(["sleep", "0.1"])
        assert not group_running(p.pid)
        assert p.poll() == -signal.SIGKILL  # reaped only now
    finally:
        p.kill()
        p.wait()


def test_groups_stop_together_and_sigterm_is_escalated() -> None:
    polite = _start("import time; print(1, flush=True); time.sleep(60)")
    stubborn = _start(IGNORES_SIGTERM)
    try:
        stop_groups([polite.pid, stubborn.pid], grace=0.5)
        assert not group_running(polite.pid) and not group_running(stubborn.pid)
        assert polite.wait(timeout=5) == -signal.SIGTERM
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
    finally:
        for p in (polite, stubborn):
            p.kill()
            p.wait()


def test_rays_command_line_runs_from_a_python_without_the_ray_script_beside_it(tmp_path: Path) -> None:
    # Ray installed with `pip install --target` (a GPU machine's own Python, Ray on its PYTHONPATH) or `--user`
    # leaves its `ray` script away from the interpreter: every multi-node test failed there to start a node
    # ("No such file or directory: .../bin/ray"). The same Python, from a folder without that script:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    home = tmp_path / "home"
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join([*site.getsitepackages(), str(ROOT)]),
    }
    code = "import sys; from tune_attn.localcluster import token_env; print(sys.executable); token_env()"
    r = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(python)] and not (bin_dir / "ray").exists()
    assert (home / ".ray" / "auth_token").is_file()  # `ray get-auth-token --generate` ran, in that HOME


def test_a_node_that_exits_while_starting_is_named_with_its_last_words(tmp_path: Path) -> None:
    # A head left running by a test run that was killed held the port: the next run's head exited at once, and
    # all it said was "a Ray node exited with 1: see /tmp/tune-attn-ray-6395-*.log". Its last line says why.
    from tune_attn.localcluster import LocalCluster

    cluster = LocalCluster(port=64999, env=dict(os.environ))
    said = "ConnectionError: Ray is trying to start at 127.0.0.2:64999, but is already running at 127.0.0.2:64999."
    cluster.log_path(HEAD_IP).unlink(missing_ok=True)
    cluster._start(
        [sys.executable, "-c", f"import sys; print('starting'); print({said!r}); sys.exit(1)"], HEAD_IP
    )
    try:
        cluster.nodes[0].wait(timeout=60)
        with pytest.raises(RuntimeError) as caught:
            cluster.wait_for([HEAD_IP], timeout=60)
        assert str(caught.value) == (
            f"the Ray node at 127.0.0.2 exited with 1: {said} (its log: {cluster.temp_dir}-127.0.0.2.log)"
        )
    finally:
        cluster.log_path(HEAD_IP).unlink(missing_ok=True)
