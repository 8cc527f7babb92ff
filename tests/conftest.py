from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _cache_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated synthetic sets are cached in a fresh folder per test session, not in the user's home."""
    os.environ["TUNE_ATTN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    # Ray's usage stats off for the Ray instances tests start themselves (as `tune-attn sweep` does for its own).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # wandb's own settings, caches and data stay in the test session too (runs go to each run folder).
    wandb_home = tmp_path_factory.mktemp("wandb-home")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        os.environ[var] = str(wandb_home / var.lower())


TINY = [
    "data.num_train=96",
    "data.num_val=48",
    "data.image_size=32",
    "train.epochs=2",
    "train.batch_size=32",
    "train.stats_samples=24",
    "train.panel_samples=3",
    "model.width=8",
]


@pytest.fixture(autouse=True)
def _own_wandb_service() -> Iterator[None]:
    """A test that used wandb in this process leaves WANDB_SERVICE set; later subprocesses would then write
    their runs through this process's wandb-core, which flushes them to disk only later. Each process owns
    its own service, as for a user."""
    yield
    os.environ.pop("WANDB_SERVICE", None)
