"""Ray Client cost: the same sweep on the same local cluster, started with the head's address (the driver runs
here) and with ``ray://`` (this process only connects; the sweep runs in a task on the head node).

Starts a local cluster (``tune_attn.localcluster``: a head without CPUs and one worker on loopback
addresses, token auth), runs ``tune-attn sweep`` both ways one after the other with the same seed, and
prints each one's wall time from the command to its end, the trial-epochs it trained, and the ratio of the
wall times (Ray Client / direct).

    .venv/bin/python benchmarks/ray_client.py [--num-samples 6] [--set train.epochs=4 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tune_attn import localcluster

ROOT = Path(__file__).resolve().parents[1]


def sweep(address: str, storage: Path, name: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "tune_attn.cli", "sweep", str(ROOT / args.space), "--address", address]
    cmd += ["--storage", str(storage), "--name", name, "--num-samples", str(args.num_samples)]
    cmd += ["--max-concurrent", str(args.workers_cpus), "--seed", str(args.seed), "--wandb", "off"]
    for item in args.set:
        cmd += ["--set", item]
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{name}: exit {r.returncode}\n{(r.stdout + r.stderr)[-3000:]}")
    rows = json.loads((storage / name / "summary.json").read_text())
    end = [line for line in r.stdout.splitlines() if line.startswith("sweep finished:")]
    return {
        "wall_s": wall,
        "trial_epochs": sum(int(row["epochs"] or 0) for row in rows),
        "end": end[-1] if end else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="search_spaces/default.yaml")
    ap.add_argument("--num-samples", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workers-cpus", type=int, default=2, help="CPUs of the one worker node (trials at once)"
    )
    ap.add_argument("--port", type=int, default=6421)
    ap.add_argument("--set", action="append", default=[], help="section.key=value over the space file")
    args = ap.parse_args()
    cluster = localcluster.start(workers=1, cpus_per_worker=args.workers_cpus, port=args.port)
    try:
        env = {**cluster.env, "COLUMNS": "300"}
        with tempfile.TemporaryDirectory() as tmp:
            direct = sweep(cluster.address, Path(tmp), "direct", args, env)
            client = sweep(cluster.client_address, Path(tmp), "client", args, env)
    finally:
        cluster.stop()
    for name, r in (("direct (driver here)", direct), ("Ray Client (on the head)", client)):
        print(f"{name:26}: {r['wall_s']:6.1f} s, {r['trial_epochs']} trial-epochs; {r['end']}")
    print(f"ratio wall time Ray Client / direct: {client['wall_s'] / direct['wall_s']:.2f}")


if __name__ == "__main__":
    main()
