"""The package's one-way data flow (design.md): a module imports only from modules before it in the pipeline."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tune_attn"

PIPELINE: list[set[str]] = [
    # shared helpers that know no step: file writing, trial statuses, the mask figures, panel drawing
    {"tune_attn", "tune_attn.files", "tune_attn.status", "tune_attn.masks", "tune_attn.panels"},
    {"tune_attn.config"},
    {"tune_attn.data.base"},
    {"tune_attn.data.folders", "tune_attn.data.synthetic"},
    {"tune_attn.data"},
    {"tune_attn.models.attention"},
    {"tune_attn.models.backbones"},
    {"tune_attn.models.classifier"},
    {"tune_attn.models"},
    {"tune_attn.engine"},  # the training loop
    {"tune_attn.degeneracy"},  # mask statistics -> verdict
    {"tune_attn.detector_eval"},
    {"tune_attn.run"},  # a whole run: training, verdicts, checkpoints
    {"tune_attn.tracking"},  # panels and W&B
    {"tune_attn.tune"},
    {"tune_attn.tune.search"},
    {"tune_attn.tune.options", "tune_attn.tune.summary", "tune_attn.tune.searcher"},
    {"tune_attn.tune.resume", "tune_attn.tune.trainable"},
    {"tune_attn.tune.nodes"},
    {"tune_attn.tune.sweep"},  # the Tune run and its report
    {"tune_attn.leaderboard"},  # the pick
    {"tune_attn.export"},  # best-config export
    {"tune_attn.cli", "tune_attn.localcluster"},  # adapters
]
"""Steps in the order data flows; a module may import from an earlier step (the package root, for its version,
from anywhere), never from its own step or a later one."""


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The tune_attn modules a file imports, at its top or inside a function (a lazy import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tune_attn":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tune_attn")
    return found


def _step(module: str) -> int:
    for i, step in enumerate(PIPELINE):
        if module in step:
            return i
    raise AssertionError(f"{module} is in no step of PIPELINE: add it where it belongs")


def test_every_module_imports_only_from_the_steps_before_it() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    wrong = []
    for path in files:
        module = _module(path)
        mine = _step(module)
        for dep in _imports(path):
            if dep in ("tune_attn", module):
                continue  # the version; a package's own __init__
            if _step(dep) >= mine:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, wrong


def test_the_check_sees_an_import_against_the_flow(tmp_path: Path) -> None:
    # the check itself: a lazy import of a later step, as it would be written inside a function
    bad = tmp_path / "engine.py"
    bad.write_text("def f():\n    from tune_attn.tune.sweep import run_sweep\n    import tune_attn.cli\n")
    assert _imports(bad) == {"tune_attn.tune.sweep", "tune_attn.cli"}
    assert _step("tune_attn.tune.sweep") > _step("tune_attn.engine")
    with pytest.raises(AssertionError, match="in no step"):
        _step("tune_attn.nowhere")


def test_the_pure_steps_import_no_torch_ray_wandb_or_models_and_the_training_loop_no_ray_or_wandb() -> None:
    pure = "tune_attn.masks, tune_attn.panels, tune_attn.degeneracy"
    heavy = "'torch', 'ray', 'wandb', 'tune_attn.models', 'tune_attn.engine'"
    code = f"import sys; import {pure}; bad = [m for m in ({heavy}) if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import sys; import tune_attn.engine; assert 'ray' not in sys.modules and 'wandb' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
