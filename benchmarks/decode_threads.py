"""Image files decoded by one thread against as many threads as the run's CPUs (torch's threads: a trial's
``--cpus-per-trial``), on a generated stand-in for Oxford-IIIT Pet (benchmarks/gpu.py's 500 x 375 JPEGs).

Times, in one run, a pass over the training images as the training loop reads them (``iterate_batches``,
nothing kept in memory: what a trial's first epoch and every epoch over the memory limit read) at 64 and at
224 px, with 1 thread, with ``--threads``, and with 1 thread again (drift shows). Prints the times and the
ratio threads / one thread.

    .venv/bin/python benchmarks/decode_threads.py [--per-class 20] [--threads N (default: all CPUs)]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from gpu import fake_pets  # benchmarks/gpu.py, beside this script

from tune_attn.data import iterate_batches
from tune_attn.data.folders import load_pets


def read_pass(root: Path, size: int, threads: int) -> float:
    """Seconds to read every image once, in batches of 64, decoding each file (nothing kept)."""
    torch.set_num_threads(threads)
    ds, _ = load_pets(root, size)
    start = time.perf_counter()
    for _ in iterate_batches(ds, 64, shuffle=True, generator=torch.Generator().manual_seed(0)):
        pass
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = fake_pets(Path(tmp) / "pets", args.per_class)
        n = len(load_pets(root, 64)[0])
        print(f"{n} generated 500 x 375 JPEGs; {os.cpu_count()} CPUs; torch {torch.__version__}", flush=True)
        read_pass(root, 64, 1)  # warm: the files in the page cache, PIL's modules loaded
        for size in (64, 224):
            one, many = read_pass(root, size, 1), read_pass(root, size, args.threads)
            one_again = read_pass(root, size, 1)
            print(
                f"read pass at {size} px: 1 thread {one:.2f} s and {one_again:.2f} s ({n / one:.0f} img/s), "
                f"{args.threads} threads {many:.2f} s ({n / many:.0f} img/s); "
                f"ratio {args.threads} threads / 1 thread {many / min(one, one_again):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
