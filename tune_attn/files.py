"""Files written whole: a reader never finds half of one, and a crash mid-write leaves the previous one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


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
