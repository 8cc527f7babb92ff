"""What each offline W&B run under a folder holds, a line per run: whether it ended, its history rows, the
per-class accuracies and mask images logged, its best validation accuracy, the device in its config, and any
config key that looks like a secret (there should be none).

    python benchmarks/device/wandb_runs.py FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.wandb_records import OfflineRun  # noqa: E402


def main(root: Path) -> None:
    runs = sorted(root.glob("**/wandb/offline-run-*"))
    print(f"{len(runs)} offline W&B runs under {root}")
    for folder in runs:
        r = OfflineRun.read(folder)
        keys = sorted({k for h in r.history for k in h})
        per_class = [k for k in keys if k.startswith("class_accuracy/")]
        images = [k for k in keys if any(isinstance(h.get(k), dict) and "_type" in h[k] for h in r.history)]
        pngs = len(list(folder.glob("files/media/**/*.png")))
        secret = [k for k in r.config if "key" in k.lower() or "token" in k.lower()]
        device = r.config.get("device")  # the one it trained on (train.device may say auto)
        print(
            f"{folder.relative_to(root)}: exited={r.exited} rows={len(r.history)} class_accuracy keys="
            f"{len(per_class)} image keys={len(images)} pngs={pngs} best_val_accuracy="
            f"{r.summary.get('best_val_accuracy')} device={device} secret-like keys={secret}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
