"""Files written whole: a reader never finds half of one, and a crash mid-write leaves the previous one; and a
folder's lock, held by the one process that writes into the folder."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def in_place(target: str | Path) -> Iterator[Path]:
    """A temporary file beside ``target`` to write, moved onto ``target`` once written, and removed when the
    writing fails (a full disk, an exception), so no half-written file stays: neither as ``target`` nor beside it."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` to ``target`` whole (:func:`in_place`) as strict JSON, for any reader: a float that is not
    a finite number (a NaN accuracy, an infinite loss), at any depth, is written as null."""

    def finite(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    with in_place(target) as tmp:
        tmp.write_text(json.dumps(finite(data), indent=1, allow_nan=False))


RUN_LOCK = ".train.lock"
"""In a ``tune-attn train`` run folder: locked (:func:`sole_writer`) by the process training into it."""


@contextlib.contextmanager
def sole_writer(folder: Path, lock_name: str, refuse: Callable[[str], BaseException]) -> Iterator[None]:
    """Hold the lock file ``folder/lock_name`` (``flock``) while the body runs, writing into it who holds it
    (``pid 4242 on head-0, since 2026-11-27 10:15:00``); when another process holds it, raise ``refuse(holder)``
    before the body runs. The lock goes with the process (no stale lock after a crash or a kill); on a file system
    without locks nothing is guarded. ``folder`` is made if missing."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / lock_name, "a+") as lock:
        for _ in range(20):  # :func:`lock_holder` may hold it for a moment: wait out such a look (1 s)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:  # a file system without locks: run unguarded
                break
        else:
            lock.seek(0)
            raise refuse(lock.read().strip() or "another process")
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock.flush()
        yield


def lock_holder(folder: Path, lock_name: str) -> str | None:
    """Who holds ``folder/lock_name`` (:func:`sole_writer`) now: ``pid 4242 on head-0, since ...``; ``""`` when
    no process does; None when it cannot be told (no lock file: a copy, a folder at a URI or of an earlier
    version; a file system without locks)."""
    import fcntl

    try:
        lock = open(folder / lock_name)  # noqa: SIM115 (closed below; never created here)
    except OSError:
        return None
    with lock:
        try:  # taken only when no process holds it; let go at once
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or "another process"
        except OSError:
            return None
        fcntl.flock(lock, fcntl.LOCK_UN)
        return ""
