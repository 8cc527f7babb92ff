from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# The commands' output is read as a pipe gets it, without colour codes, even where the shell forces colour
# (FORCE_COLOR=1 made rich style the leaderboard's header and Ray's log lines: tests that read them failed).
# Here, before the test modules import the CLI (its consoles read these when made).
for _var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"):
    os.environ.pop(_var, None)


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


UNGROUPED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own, which adds the group to the node id
def heavy_imports_after(*args: str, cwd: Path) -> tuple[int, str, list[str]]:
    """Run ``tune-attn ARGS`` in a fresh interpreter: its exit code, its stderr, and which of torch, ray and
    optuna it had imported by its end (each takes seconds: a refused command, or one that only reads a few
    files, should not wait for them)."""
    code = (
        "import sys\nfrom tune_attn.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print(e.code, *sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )
    code_, *modules = r.stdout.splitlines()[-1].split()  # what the wrapper printed last
    return int(code_), r.stderr, modules


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (scripts/test), a test marked ``xdist_group`` carries its group
    in its node id, which is how the tests that share a Ray or a loopback cluster stay on one worker. pytest
    9.2 stopped that without a word (pytest-xdist#1386): such tests then fail, saying so, instead of running
    apart. The slow tests go first."""
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers
        for item in items:
            item.stash[UNGROUPED] = bool(item.get_closest_marker("xdist_group")) and "@" not in item.nodeid
        # The slow tests first (after the groups, which xdist sends first): a long one left to the end keeps
        # one worker busy while the other has nothing to do. Every worker sorts alike, as xdist requires.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.stash.get(UNGROUPED, False):
        pytest.fail(
            f"not run: --dist loadgroup did not keep it with the other tests of its xdist_group, as pytest "
            f"{pytest.__version__} with pytest-xdist does not (pytest-xdist#1386); install the pytest that "
            "pyproject.toml's dev extra asks for",
            pytrace=False,
        )
