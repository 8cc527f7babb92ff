"""A real multi-node Ray cluster on this machine, on loopback addresses only: a head and N worker nodes.

For trying the cluster path (``tune-attn sweep --address``) without machines, and for the multi-node tests.
Each node is a real ``ray start --block`` process (in its own process group, so stopping a node stops all
of its processes) on its own loopback address: Ray turns ``127.0.0.1`` into the machine's routable address,
so the head is ``127.0.0.2`` and the workers ``127.0.0.3``, ``127.0.0.4``, ... Ray's token authentication
is on, as on a real cluster: every node and the driver run with ``RAY_AUTH_MODE=token`` and the same token
(``~/.ray/auth_token``, made with ``ray get-auth-token --generate``).

    python -m tune_attn.localcluster start --workers 2      # prints the address and the driver's env
    python -m tune_attn.localcluster stop
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HEAD_IP = "127.0.0.2"
STATE = Path.home() / ".cache" / "tune_attn" / "localcluster.json"


def _ray() -> list[str]:
    """Ray's command line, run by this Python: the ``ray`` script is not always beside it (``pip install
    --target`` or ``--user`` put it elsewhere, or nowhere on the PATH), but wherever ray imports, this runs."""
    return [sys.executable, "-m", "ray.scripts.scripts"]


def token_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every node and the driver: token auth on, the token made if missing; Ray's usage
    stats off, and the one report a `ray start` head sends even then ("disabled") sent to a closed loopback
    port, not to Ray's server: a loopback cluster sends nothing elsewhere."""
    quiet = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/"}
    env = {**quiet, **(env or os.environ), "RAY_AUTH_MODE": "token"}
    subprocess.run([*_ray(), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    return env


@dataclass
class LocalCluster:
    """The nodes of a local cluster: ``nodes[0]`` is the head; ``ips[i]`` the address of ``nodes[i]``."""

    port: int
    env: dict[str, str]
    nodes: list[subprocess.Popen] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    """Indexes of the nodes :meth:`kill` took down (their addresses are not reused)."""

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    @property
    def client_port(self) -> int:
        return self.port + 1

    @property
    def client_address(self) -> str:
        """The head's Ray Client server: a driver on another machine joins with this."""
        return f"ray://{HEAD_IP}:{self.client_port}"

    def add_worker(
        self,
        cpus: int = 1,
        resources: dict[str, float] | None = None,
        tries: int = 2,
        prefix: list[str] | None = None,
    ) -> str:
        """Start a worker node on the next loopback address and wait until it is alive; on a loaded machine a
        node can time out while starting (Ray's own startup timeout): it is started again, ``tries`` in all.
        ``prefix``: a command that runs the node's ``ray start`` command (its arguments), e.g. in a namespace of
        its own."""
        ip = f"127.0.0.{len(self.nodes) + 2}"
        cmd = [
            *(prefix or []),
            *_ray(),
            "start",
            "--block",
            f"--address={self.address}",
            f"--node-ip-address={ip}",
        ]
        cmd += [f"--num-cpus={cpus}", "--num-gpus=0", f"--resources={json.dumps(resources or {})}"]
        for attempt in range(tries):
            self._start(cmd, ip)
            try:
                self.wait_for([ip])
                return ip
            except RuntimeError:
                if attempt == tries - 1:
                    raise
                failed = self.nodes.pop()
                self.ips.pop()
                stop_group(failed.pid, grace=0.0)  # whatever the failed start left running
                failed.wait()
        return ip

    @property
    def temp_dir(self) -> str:
        """The head's Ray temp dir: its own (short: socket paths are limited), so that `ray start` here does not
        become the cluster that a plain ``ray.init()`` elsewhere on the machine would join."""
        return f"/tmp/tune-attn-ray-{self.port}"

    def log_path(self, ip: str) -> Path:
        """Where the node at ``ip`` writes what it says (appended to by every start there)."""
        return Path(f"{self.temp_dir}-{ip}.log")

    def _start(self, cmd: list[str], ip: str) -> None:
        log = self.log_path(ip).open("a")  # noqa: SIM115
        self.nodes.append(
            subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        self.ips.append(ip)

    def wait_for(self, ips: list[str], timeout: float = 90.0) -> None:
        """Wait until the nodes at ``ips`` are registered and alive (asks the head's GCS from a fresh driver
        process); fail at once when a node that was not killed has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.nodes):
                if i not in self.killed and p.poll() is not None:
                    log = self.log_path(self.ips[i])
                    said = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
                    raise RuntimeError(  # its last line says why: "Ray is ... already running at 127.0.0.2:6395"
                        f"the Ray node at {self.ips[i]} exited with {p.returncode}: "
                        f"{said[-1] if said else 'nothing said'} (its log: {log})"
                    )
            try:  # a driver for a head that is not up yet waits for it; at most what is left of the timeout
                r = subprocess.run(
                    [sys.executable, "-c", _ALIVE, self.address],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=max(1.0, min(30.0, deadline - time.monotonic())),
                )
            except subprocess.TimeoutExpired:
                continue  # then look at the nodes again: one that exited is told at once
            if r.returncode == 0 and set(ips) <= set(r.stdout.split()):
                return
            time.sleep(1.0)
        raise TimeoutError(f"the local cluster at {self.address}: no alive node at {', '.join(ips)}")

    def kill(self, index: int) -> None:
        """Kill node ``index`` and every process it started at once, its trials' worker processes included
        (they run in process groups of their own): a lost machine."""
        root = self.nodes[index].pid
        for pid in [root, *descendants(root)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_group(root, grace=0.0)
        self.nodes[index].wait()
        self.killed.add(index)

    def stop(self) -> None:
        stop_groups([p.pid for p in self.nodes])
        for p in self.nodes:
            p.wait()


def _processes() -> list[tuple[int, int, int, str]]:
    """Every process (Linux /proc): (pid, parent pid, process group, state letter; ``Z``: a zombie)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.append((int(stat.parent.name), int(fields[1]), int(fields[2]), fields[0]))
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children before grandchildren."""
    children: dict[int, list[int]] = {}
    for child, parent, _, _ in _processes():
        children.setdefault(parent, []).append(child)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs: zombies (dead, not yet reaped by their parent) do not
    count."""
    return any(group == pgid and state != "Z" for _, _, group, state in _processes())


def stop_groups(pgids: list[int], grace: float = 10.0) -> None:
    """Stop the nodes together: SIGTERM each group's leader (``ray start``, which stops the node's processes in
    about 2 s; a SIGTERM to the whole group at once kept a head running past 4 s), SIGKILL each group whatever
    still runs after ``grace`` seconds; returns when no process of them runs, or 5 s after the SIGKILL."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM if grace > 0 else signal.SIGKILL
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGTERM:
                os.kill(pgid, sig)  # the leader: its pid is the group's id
            else:
                os.killpg(pgid, sig)
    left = list(pgids)
    while left and time.monotonic() < deadline + 5.0:
        time.sleep(0.2)
        left = [g for g in left if group_running(g)]
        if sig == signal.SIGTERM and time.monotonic() > deadline:
            sig = signal.SIGKILL
            for pgid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)


def stop_group(pgid: int, grace: float = 10.0) -> None:
    """:func:`stop_groups` for one group."""
    stop_groups([pgid], grace)


_ALIVE = """
import sys, ray
ray.init(address=sys.argv[1], _node_ip_address="127.0.0.2", log_to_driver=False)
print(" ".join(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]))
"""


def start(
    workers: int = 2, cpus_per_worker: int = 1, port: int = 6393, env: dict[str, str] | None = None
) -> LocalCluster:
    """Start a head (no CPUs: it runs the driver only) and ``workers`` worker nodes; wait until all are up.
    The head's Ray Client server listens on ``port + 1`` (``ray://127.0.0.2:<port + 1>``)."""
    cluster = LocalCluster(port, token_env(env))
    cluster._start(
        [
            *_ray(),
            "start",
            "--block",
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={port}",
            f"--ray-client-server-port={cluster.client_port}",
            "--num-cpus=0",
            "--num-gpus=0",
            "--include-dashboard=false",
            f"--temp-dir={cluster.temp_dir}",
        ],
        HEAD_IP,
    )
    cluster.wait_for([HEAD_IP])
    for _ in range(workers):
        cluster.add_worker(
            cpus_per_worker
        )  # one at a time: starting nodes together overloads a small machine
    return cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=int, default=1)
    ap.add_argument("--port", type=int, default=6393)
    args = ap.parse_args()
    if args.action == "start":
        cluster = start(args.workers, args.cpus_per_worker, args.port)
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps({"pids": [p.pid for p in cluster.nodes], "address": cluster.address}))
        print(f"local Ray cluster: head {cluster.address}, workers {', '.join(cluster.ips[1:])}")
        print("run a sweep on it with:")
        print(f"  RAY_AUTH_MODE=token tune-attn sweep search_spaces/smoke.yaml --address {cluster.address}")
        print("or, as from another machine, through the head's Ray Client server:")
        print(
            f"  RAY_AUTH_MODE=token tune-attn sweep search_spaces/smoke.yaml --address {cluster.client_address} "
            "--storage /tmp/tune-attn-sweeps"
        )
        print("stop it with: python -m tune_attn.localcluster stop")
    else:
        if not STATE.is_file():
            sys.exit(f"{STATE}: no local cluster recorded")
        stop_groups(json.loads(STATE.read_text())["pids"])
        STATE.unlink()
        print("stopped")


if __name__ == "__main__":
    main()
