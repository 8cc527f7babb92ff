"""Read back what wandb wrote offline: the records of a run's ``run-<id>.wandb`` transaction log.

wandb 0.31 has no public reader for offline runs; the file is a LevelDB-style log (a 7-byte ``:W&B``
header, then 32 KiB blocks of chunks with a 7-byte header: CRC32, length, type) holding ``Record`` protos.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every Record in a ``.wandb`` file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def _items(items: Any) -> dict[str, Any]:
    """Items (``key`` or ``nested_key`` + JSON value) as a dict; nested keys become nested dicts."""
    out: dict[str, Any] = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


@dataclass
class OfflineRun:
    """The parts of an offline run that a user sees in W&B."""

    folder: Path
    run: Any = None  # the RunRecord: id, group, job type, tags, name
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    exited: bool = False
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)
    """The artifacts the run logged (a W&B Table is one), by name: each file's path in the artifact and where
    wandb staged it to upload (outside the run folder, in wandb's data folder)."""

    @classmethod
    def read(cls, folder: Path) -> OfflineRun:
        (log,) = folder.glob("run-*.wandb")
        out = cls(folder)
        for rec in records(log):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out.run = rec.run
                out.tags = list(rec.run.tags)
                out.config.update(_items(rec.run.config.update))
            elif kind == "config":
                out.config.update(_items(rec.config.update))
            elif kind == "history":
                out.history.append(_items(rec.history.item))
            elif kind == "summary":
                out.summary.update(_items(rec.summary.update))
            elif kind == "exit":
                out.exited = True
            elif kind == "artifact":
                files = {c.path: Path(c.local_path) for c in rec.artifact.manifest.contents}
                out.artifacts[rec.artifact.name] = files
        return out
