"""Files written whole: a reader never finds half of one, and a crash mid-write leaves the previous one."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
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
