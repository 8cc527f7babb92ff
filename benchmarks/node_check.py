"""The cost of the sweep's node check (``check_nodes``: a task on each node that could run a trial imports
tune-attn there and looks for a file written under --storage) on a local cluster, against Ray's own cost of
a first task on every node (an empty one).

Starts a local cluster (``tune_attn.localcluster``: a head without CPUs and N one-CPU workers on loopback
addresses, token auth) twice: on one, times a first empty task on every node (Ray starts a worker process
there); on the other, the node check (what a sweep pays once, at its start), then the check again (worker
processes reused), and last the sweep's watch for nodes that join while it runs (``NodeWatch.poll``, every
5 s from Tune's loop) when none joined: its cost against the 5 s between polls.

    .venv/bin/python benchmarks/node_check.py [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tune_attn import localcluster
from tune_attn.tune.nodes import NodeWatch, check_nodes
from tune_attn.tune.options import SweepOptions


def _nothing() -> None:
    return None


def first_call(args: argparse.Namespace, check: bool) -> tuple[float, list[float], object, list[float]]:
    """On a fresh cluster: the first call's time, the later calls' times, what the last call returned; with
    ``check``, then the times of 20 watch polls that find no new node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cluster = localcluster.start(workers=args.workers, cpus_per_worker=1, port=args.port)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        nothing = ray.remote(_nothing)
        here = ray.get_runtime_context().get_node_id()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
        times, found = [], None
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                start = time.perf_counter()
                if check:
                    found = check_nodes(Path(tmp), SweepOptions())
                else:
                    on = [NodeAffinitySchedulingStrategy(n, soft=False) for n in nodes]
                    found = ray.get([nothing.options(num_cpus=0, scheduling_strategy=s).remote() for s in on])
                times.append(time.perf_counter() - start)
            polls = []
            if check:
                watch = NodeWatch(SweepOptions(), [], Path(tmp))
                watch.answers(60.0, watch.ask())
                for _ in range(20):
                    start = time.perf_counter()
                    watch.poll(print, force=True)
                    polls.append(time.perf_counter() - start)
                watch.close()
        ray.shutdown()
    finally:
        cluster.stop()
    return times[0], times[1:], found, polls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--port", type=int, default=6451)
    args = ap.parse_args()
    os.environ.update(localcluster.token_env())
    empty, empty_later, _, _ = first_call(args, check=False)
    first, later, found, polls = first_call(args, check=True)
    print(f"local cluster: head without CPUs + {args.workers} one-CPU workers on loopback, token auth")
    print(
        f"empty task on every node: first {empty:.2f} s, later median {statistics.median(empty_later):.3f} s"
    )
    print(
        f"node check              : first {first:.2f} s, later median {statistics.median(later):.3f} s; {found}"
    )
    print(f"ratio first node check / first empty task: {first / empty:.2f}")
    poll = statistics.median(polls)
    print(
        f"watch poll, no new node : median {poll * 1000:.1f} ms of 20; ratio to the 5 s between polls: {poll / 5:.4f}"
    )


if __name__ == "__main__":
    main()
