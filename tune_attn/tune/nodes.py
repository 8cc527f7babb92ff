"""The Ray cluster a sweep runs on: reaching it (:func:`check_reachable`, :func:`connect`) and checking its nodes
before and while trials run (:class:`NodeWatch`: can they hold a trial, import tune-attn, see the --storage folder
and the data folders). The sweep (:mod:`tune_attn.tune.sweep`) calls these; ``benchmarks/node_check.py`` too."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_attn.status import error_reason
from tune_attn.tune.options import SweepOptions, missing_files, missing_folders


def holds_a_trial(resources: dict[str, float], options: SweepOptions) -> bool:
    """Whether a node with these resources (``ray.nodes()``'s ``Resources``) can run one trial."""
    return (
        resources.get("CPU", 0) >= options.cpus_per_trial
        and resources.get("GPU", 0) >= options.gpus_per_trial
    )


def unused_gpus(nodes: list[dict[str, Any]], options: SweepOptions) -> str | None:
    """A note when the alive nodes (``ray.nodes()``) have GPUs that the trials will not use (``--gpus-per-trial``
    0: each trial trains on its CPUs), None otherwise."""
    gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes if n.get("Alive"))
    if not gpus or options.gpus_per_trial:
        return None
    return (
        f"the Ray cluster has {gpus:g} GPU{'s' if gpus != 1 else ''}, but --gpus-per-trial is 0: the trials train "
        "on CPUs; pass --gpus-per-trial 1, or a fraction (0.25: four trials share a GPU), to train on them"
    )


def trial_does_not_fit(nodes: list[dict[str, Any]], options: SweepOptions) -> str | None:
    """Why no alive node (``ray.nodes()``) can hold one trial's CPUs and GPUs, or None when one can."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(holds_a_trial(r, options) for r in alive):
        return None
    have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in alive) or "none alive"
    return (
        f"--cpus-per-trial {options.cpus_per_trial:g} --gpus-per-trial {options.gpus_per_trial:g}: no Ray node "
        f"has that much (nodes: {have})"
    )


def _look(marker: str | None, roots: list[str], files: list[str]) -> tuple[bool, str, list[str], list[str]]:
    """On a node: whether it sees ``marker`` (a file the sweep wrote under --storage; None: a URI storage), its
    tune-attn version, which of the data folders ``roots`` and which of the weights ``files`` it lacks. Importing
    this function and the trial's code checks that they import there."""
    import tune_attn
    import tune_attn.tune.trainable  # noqa: F401  (torch, Ray Tune, wandb: what a trial needs)

    seen = marker is None or os.path.exists(marker)
    return seen, tune_attn.__version__, missing_folders(roots), missing_files(files)


@dataclass
class NodeCheck:
    """What a task on each node that could run a trial found (:func:`check_nodes`), by node address."""

    unseen: list[str] = field(default_factory=list)
    """Nodes that do not see the --storage folder: their trials would fail at their first checkpoint."""
    broken: dict[str, str] = field(default_factory=dict)
    """Nodes where tune-attn cannot run (the task's error, one line): their trials would fail at once."""
    versions: dict[str, str] = field(default_factory=dict)
    """Nodes with another tune-attn version than this process's: their trials run that version's code."""
    no_data: dict[str, list[str]] = field(default_factory=dict)
    """Nodes without some of the space's ``data.root`` folders: their trials would fail at once."""
    no_weights: dict[str, list[str]] = field(default_factory=dict)
    """Nodes without some of the space's ``model.pretrained_path`` files: their trials would fail at once."""

    def note(self) -> str | None:
        """A line about the nodes with another tune-attn version, or None."""
        if not self.versions:
            return None
        from tune_attn import __version__

        versions = ", ".join(f"{ip} has {v}" for ip, v in self.versions.items())
        return f"note: tune-attn {__version__} here, but {versions}: trials there run that version's code"

    def problems(self, source: str, storage: str) -> list[str]:
        """What would make trials fail, one message per problem (``source``: the space; ``storage``: the path)."""
        out = []
        if self.broken:
            reasons = list(self.broken.items())
            why = (
                reasons[0][1] if len(reasons) == 1 else "; ".join(f"{ip}: {reason}" for ip, reason in reasons)
            )
            out.append(
                f"{named_nodes(list(self.broken))} cannot run tune-attn's trials ({why}): install tune-attn, with the "
                "same packages as here, on every node (cluster/README.md)"
            )
        for root in sorted({r for missing in self.no_data.values() for r in missing}):
            lacking = [ip for ip, missing in self.no_data.items() if root in missing]
            out.append(
                f"{source}: data.root {root} is not a folder on {named_nodes(lacking)}, where trials run: put the data "
                "set there too, or on a file system every node mounts"
            )
        for path in sorted({w for missing in self.no_weights.values() for w in missing}):
            lacking = [ip for ip, missing in self.no_weights.items() if path in missing]
            out.append(
                f"{source}: model.pretrained_path {path} is not a file on {named_nodes(lacking)}, where trials run: "
                "put the weights file there too, or on a file system every node mounts"
            )
        if self.unseen:
            out.append(
                f"--storage {storage}: {named_nodes(self.unseen)} cannot see this folder (a file written in it where "
                "the sweep runs is not there), so trials there could not save checkpoints; give a path on a file "
                "system every node mounts (NFS, EFS, Filestore), or a URI such as s3://bucket/sweeps"
            )
        return out


class NodeWatch:
    """Looks, with a :func:`_look` task, once at each alive node that could run a trial: those there when the sweep
    starts (:meth:`ask`, then :meth:`answers`), then, through :meth:`poll` from the sweep's Tune loop, those that
    join while it runs (an autoscaler's workers). A node that lacks what its trials need is named with what to do;
    the sweep itself is not stopped. This node is checked for the data folders and weights files only.

    ``folder``: a local --storage path, where a marker file is written for the nodes to look for (removed by
    :meth:`close`); None for a URI storage. ``roots``: the space's data folders; ``files``: its weights files."""

    def __init__(
        self,
        options: SweepOptions,
        roots: list[str],
        folder: Path | None,
        source: str = "",
        every: float = 5.0,
        files: Sequence[str] = (),
    ) -> None:
        import uuid

        import ray

        self.options, self.roots, self.source, self.every = options, roots, source, every
        self.files = list(files)
        self.storage = str(folder) if folder is not None else ""
        self.here = ray.get_runtime_context().get_node_id()
        self.asked: set[str] = set()  # node ids looked at (or being looked at)
        self.late: set[str] = set()  # addresses of the nodes that had not answered the start check in time
        self.pending: dict[Any, tuple[str, str]] = {}  # look task -> (node id, node address)
        self.last_poll = -math.inf
        self.marker = None
        if folder is not None:
            self.marker = folder / f".tune-attn-storage-check-{uuid.uuid4().hex}"
            try:  # where the check before Ray could not tell (a file system that refuses what access() allows)
                folder.mkdir(parents=True, exist_ok=True)
                self.marker.touch()
            except OSError as exc:
                raise ValueError(
                    f"--storage {folder}: cannot write there ({exc.strerror or exc}); give a folder you can write, "
                    "or a URI such as s3://bucket/sweeps"
                ) from None

    def ask(self, found: NodeCheck | None = None) -> NodeCheck:
        """Send the look to each node that could run a trial and was not asked yet; ``found`` (returned) gets
        what this node itself lacks at once."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        found = found if found is not None else NodeCheck()
        look = ray.remote(_look)
        for node in ray.nodes():
            node_id, ip = node["NodeID"], node["NodeManagerAddress"]
            if (
                node_id in self.asked
                or not node.get("Alive")
                or not holds_a_trial(node["Resources"], self.options)
            ):
                continue
            self.asked.add(node_id)
            if node_id == self.here:  # the driver's node runs trials too
                lacking, absent = missing_folders(self.roots), missing_files(self.files)
                if lacking:
                    found.no_data[ip] = lacking
                if absent:
                    found.no_weights[ip] = absent
                continue
            task = look.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(str(self.marker) if self.marker else None, self.roots, self.files)
            self.pending[task] = (node_id, ip)
        return found

    def answers(
        self, timeout: float, found: NodeCheck | None = None, late: NodeCheck | None = None
    ) -> NodeCheck:
        """What the nodes asked found, of those that answer within ``timeout`` seconds (the others stay asked);
        with ``late``, what the nodes in :attr:`late` found goes there. A node that died meanwhile is left out."""
        import ray

        import tune_attn

        found = found if found is not None else NodeCheck()
        if not self.pending:
            return found
        done, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=timeout)
        for task in done:
            node_id, ip = self.pending.pop(task)
            into = late if late is not None and ip in self.late else found
            try:
                answer = ray.get(task)
            except ray.exceptions.RayError as exc:
                if _alive(node_id):
                    into.broken[ip] = error_reason(exc)
                continue
            seen, version, missing = answer[:3]
            absent = answer[3] if len(answer) > 3 else []  # an earlier version there looks at no weights file
            if not seen:
                into.unseen.append(ip)
            if missing:
                into.no_data[ip] = missing
            if absent:
                into.no_weights[ip] = absent
            if version != tune_attn.__version__:
                into.versions[ip] = version
        return found

    def waiting(self) -> list[str]:
        """The addresses of the nodes asked that have not answered yet."""
        return sorted(ip for _, ip in self.pending.values())

    def poll(self, echo: Callable[[str], None], force: bool = False) -> None:
        """At most every ``every`` seconds (or now, ``force``): ask the nodes that joined, and tell ``echo`` what
        the answers found, one line per problem."""
        import time

        now = time.monotonic()
        if not force and now - self.last_poll < self.every:
            return
        self.last_poll = now
        late = NodeCheck()
        joined = self.answers(0.0, self.ask(), late)
        for found, who in (
            (late, "a node that answered the start check late"),
            (joined, "a node that joined the sweep"),
        ):
            note = found.note()
            if note:
                echo(note)
            for problem in found.problems(self.source, self.storage):
                echo(
                    f"{who}: {problem}. The sweep goes on; trials that fail there end in error once --max-failures "
                    "is spent, and --resume starts them again after the node is mended"
                )

    def close(self) -> None:
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)


def _alive(node_id: str) -> bool:
    import ray

    return any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes())


def check_nodes(
    folder: Path | None,
    options: SweepOptions,
    roots: list[str] | None = None,
    timeout: float = 60.0,
    files: Sequence[str] = (),
) -> NodeCheck:
    """Look, with a task on each alive node that could run a trial, for what would make its trials fail or
    differ (:class:`NodeWatch`, once); nodes that do not answer within ``timeout`` seconds are not counted."""
    watch = NodeWatch(options, roots or [], folder, files=files)
    try:
        return watch.answers(timeout, watch.ask())
    finally:
        watch.close()


def named_nodes(ips: list[str]) -> str:
    return f"Ray node{'s' if len(ips) > 1 else ''} {', '.join(ips)}"


def check_reachable(address: str, flag: str = "--address", timeout: float = 5.0) -> None:
    """Fail at once, naming the address, when nothing answers at ``HOST:PORT`` (or ``ray://HOST:PORT``): Ray
    itself retries a dead address for minutes. Other forms (``auto``, ``local``) are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        what = (
            "the head's Ray Client server (port 10001 unless set)" if address.startswith("ray://") else "Ray"
        )
        raise ValueError(
            f"{flag} {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); is {what} "
            "running there, and is the port open to this machine?"
        ) from None


RACE = "Initialization failure from server"
"""How Ray Client reports the head losing the session server it forks for a new client."""


def connect(
    address: str, echo: Callable[[str], None], flag: str = "--address", tries: int = 3, pause: float = 2.0
) -> None:
    """``ray.init`` on a cluster address, failing with a ValueError that names it. A Ray Client connection
    that fails with :data:`RACE` is tried again, ``tries`` times in all: the head's Ray Client server
    sometimes loses the session server it forks (a race in Ray, ray-project/ray#63202); the next try works."""
    import time

    import ray

    for attempt in range(1, tries + 1):
        try:
            ray.init(address=address, log_to_driver=False)
            return
        except ConnectionError as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            if attempt == tries or not (address.startswith("ray://") and first.startswith(RACE)):
                raise ValueError(
                    f"{flag} {address}: {first.rstrip('.')}{f' (tried {attempt} times)' if attempt > 1 else ''}"
                    + _auth_hint(first)
                ) from None
            echo(
                f"Ray Client: connecting to {address} failed ({first}); trying again ({attempt + 1}/{tries})"
            )
            time.sleep(pause)


def _auth_hint(error: str) -> str:
    """Why a cluster that answers may still refuse this driver: Ray's token authentication, when this
    process does not use it (Ray then says only that it could not connect, or timed out)."""
    if os.environ.get("RAY_AUTH_MODE") == "token" or error.startswith("Could not find any running Ray"):
        return ""
    return (
        ". If the cluster uses Ray's token authentication (see cluster/README.md), run with "
        "RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
    )
