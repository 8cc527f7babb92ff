"""Pick the best trial of a sweep and export it as a bundle that runs anywhere; load a bundle and predict.

A sweep folder is read from the files the trials write themselves (``trial_*/run/metrics.jsonl``,
``config.yaml``, ``checkpoint.pt``) and, once the sweep has finished, its ``summary.json`` (statuses such
as ``stopped:asha`` or ``error`` that only the driver knows), so a running sweep can be ranked too.

A bundle folder holds::

    config.yaml      the trial's config; ``tune-attn train --config config.yaml`` reruns it as is
    weights.pt       the model's state dict (read with torch.load(weights_only=True))
    model.pt2        the model as a torch.export program: images (B, 3, S, S) in [0, 1] ->
                     (logits (B, K), masks (B, heads, h, w)); normalisation is inside
    bundle.json      class names, input size and preprocessing, metrics, provenance
    panel.png        the trial's mask panel at its last epoch (and timeline.png)
    MODEL_CARD.md    what the model is, how good it is, what its attention looks at, where it came from
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tune_attn import panels
from tune_attn.config import ConfigError, RunConfig, load_config
from tune_attn.data.folders import load_rgb
from tune_attn.models.classifier import build_model
from tune_attn.run import CHECKPOINT, INTERRUPTED, is_last_epoch, load_checkpoint, panel_path, run_status
from tune_attn.tune.sweep import SWEEP_RECORD

METRICS = ("last_val_accuracy", "best_val_accuracy")
QUALITY = "mask.object_mass"
BUNDLE_FORMAT = 1
BUNDLE_FILES = ("config.yaml", "weights.pt", "model.pt2", "bundle.json")


class BundleError(ValueError):
    """A bundle or a sweep folder is missing, corrupt or inconsistent; the message names the file."""


def is_uri(experiment: str | Path) -> bool:
    """A sweep at a URI (``s3://bucket/sweeps/name``, ``gs://...``, ``file://...``), not a local folder."""
    return "://" in str(experiment)


@contextlib.contextmanager
def sweep_folder(experiment: str | Path, trial: str | None = None) -> Iterator[Path]:
    """The local folder to read a sweep from: ``experiment`` itself, or for a URI a temporary copy (see
    :func:`fetch_sweep`, which ``trial`` is passed to), removed afterwards."""
    if not is_uri(experiment):
        yield Path(experiment)
        return
    with tempfile.TemporaryDirectory(prefix="tune-attn-sweep-") as tmp:
        yield fetch_sweep(str(experiment), Path(tmp), trial)


def run_uri(experiment: str, trial_id: str) -> str:
    """The URI of a trial's run folder in a sweep at a URI."""
    return f"{experiment.rstrip('/')}/trial_{trial_id}/run"


def read_sweep_at(experiment: str | Path) -> list[dict[str, Any]]:
    """:func:`read_sweep` of a sweep folder or URI; for a URI each row's ``run`` is the run folder's URI."""
    with sweep_folder(experiment) as folder:
        rows = read_sweep(folder)
    if is_uri(experiment):
        for r in rows:
            r["run"] = run_uri(str(experiment), r["trial_id"]) if r["run"] else ""
    return rows


def export_trial(experiment: str | Path, trial_id: str, out: str | Path) -> Path:
    """Export trial ``trial_id`` of the sweep at ``experiment`` (a folder, or a URI: then only the summary and
    that trial's run folder are fetched) into ``out``; see :func:`export_bundle`."""
    with sweep_folder(experiment, trial_id) as folder:
        row = find_trial(read_sweep(folder), trial_id)
        return export_bundle(row, out, folder, source=str(experiment) if is_uri(experiment) else None)


def fetch_sweep(uri: str, dest: Path, trial: str | None = None, everything: bool = False) -> Path:
    """Copy from a sweep at ``uri`` into ``dest`` its ``summary.json`` and ``sweep.json``, and: each trial's
    ``run/metrics.jsonl`` and ``run/config.yaml``, what :func:`read_sweep` reads (a few small files per trial,
    not Ray's checkpoints); or with ``trial``, that trial's whole run folder only (checkpoint, panels; not its
    W&B run), for :func:`export_bundle`; or with ``everything``, every file but Ray's checkpoints (each trial's
    run folder with its panels and offline W&B run, the plots, Ray's results and searcher state). Returns
    ``dest``."""
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        found = fs.get_file_info(root).type == pyarrow.fs.FileType.Directory
    except (OSError, ValueError) as exc:  # pyarrow's errors are OSError / ArrowInvalid (a ValueError)
        raise BundleError(f"{uri}: cannot read it ({exc})") from None
    if not found:
        raise BundleError(f"{uri}: no such sweep folder")
    root = root.rstrip("/")

    def files(folder: str, skip: str) -> set[str]:
        every = fs.get_file_info(pyarrow.fs.FileSelector(folder, recursive=True, allow_not_found=True))
        return {e.path for e in every if e.type == pyarrow.fs.FileType.File and skip not in e.path}

    wanted = {f"{root}/summary.json", f"{root}/{SWEEP_RECORD}"}
    if everything:
        wanted |= files(root, "/checkpoint_")
    elif trial is not None:
        wanted |= files(f"{root}/trial_{trial}/run", "/wandb/")
    else:
        for entry in fs.get_file_info(pyarrow.fs.FileSelector(root)):
            if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith("trial_"):
                wanted |= {f"{entry.path}/run/metrics.jsonl", f"{entry.path}/run/config.yaml"}
    for info in fs.get_file_info(sorted(wanted)):
        if info.type == pyarrow.fs.FileType.File:
            target = dest / info.path[len(root) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src:
                target.write_bytes(src.read())
    return dest


def read_sweep(experiment: str | Path) -> list[dict[str, Any]]:
    """One row per trial: trial id, status and reason, accuracies, epochs, detector verdict, mask figures, the
    flat config and the run folder. Works while the sweep runs (a trial still training is ``running``; one that
    a Ctrl+C stopped is ``interrupted`` until a resumed sweep finishes it); a trial that failed before its first
    epoch is known only once the sweep has finished (``summary.json``)."""
    folder = Path(experiment)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such sweep folder")
    if not any((folder / name).exists() for name in ("sweep.json", "summary.json")) and not any(
        folder.glob("trial_*")
    ):
        raise BundleError(
            f"{folder}: not a sweep folder (no sweep.json, summary.json or trial_* in it); give the folder that "
            "`tune-attn sweep` printed as its results"
        )
    final = {}
    if (folder / "summary.json").is_file():
        final = {r["trial_id"]: r for r in json.loads((folder / "summary.json").read_text())}
    rows = []
    for run in sorted(folder.glob("trial_*/run")):
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
        history = [json.loads(x) for x in lines if x.strip()]
        if not history:
            continue
        last = history[-1]
        trial_id = run.parent.name.removeprefix("trial_")
        done = final.get(trial_id)
        if done is not None and done["status"] == INTERRUPTED and is_last_epoch(last):
            done = None  # a resumed sweep has finished it since
        if done is not None:
            status, reason = done["status"], done.get("reason", "")
        elif is_last_epoch(last):
            status, reason = run_status(last, False, "val_accuracy")
        else:
            status, reason = "running", f"epoch {last['epoch']} of {last.get('epochs_budget', '?')}"
        config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "number": (done or {}).get("number"),
            "status": status,
            "reason": reason,
            "last_val_accuracy": last.get("val_accuracy"),
            "best_val_accuracy": max(h.get("val_accuracy", -math.inf) for h in history),
            "epochs": last.get("epoch"),
            "detector.kind": last.get("detector.kind"),
        }
        row.update({k: v for k, v in last.items() if k.startswith("mask.") and ".h" not in k})
        row["config"] = {f"{s}.{k}": v for s, sec in (config or {}).items() for k, v in sec.items()}
        row["run"] = str(run)
        rows.append(row)
    seen = {r["trial_id"] for r in rows}
    for trial_id, done in final.items():  # trials that failed before their first epoch
        if trial_id not in seen:
            rows.append(
                {
                    "trial_id": trial_id,
                    "number": done.get("number"),
                    "status": done["status"],
                    "reason": done.get("reason", ""),
                    "last_val_accuracy": None,
                    "best_val_accuracy": None,
                    "epochs": None,
                    "detector.kind": None,
                    "config": {},
                    "run": "",
                }
            )
    return rows


def rank(
    rows: Sequence[dict[str, Any]],
    metric: str = "last_val_accuracy",
    min_object_mass: float | None = None,
    show_pruned: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The leaderboard (best first) and the pick: the best trial by ``metric`` among those that completed
    with healthy masks at the end (and, with ``min_object_mass``, with at least that share of mask mass on
    the object). Pruned, stopped and failed trials are listed only with ``show_pruned``, never picked."""
    if metric not in METRICS:
        raise ValueError(f"--metric: {metric!r} is not valid; choose one of {', '.join(METRICS)}")
    if min_object_mass is not None:
        if not 0.0 <= min_object_mass <= 1.0:
            raise ValueError(f"--min-object-mass: {min_object_mass}; must be in [0, 1]")
        if rows and not any(QUALITY in r for r in rows):
            raise ValueError(
                f"--min-object-mass: this sweep has no {QUALITY} (its data set has no object masks)"
            )

    def value(r: dict[str, Any]) -> float:
        v = r.get(metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf

    def eligible(r: dict[str, Any]) -> bool:
        quality = r.get(QUALITY)
        ok = min_object_mass is None or (isinstance(quality, (int, float)) and quality >= min_object_mass)
        return r["status"] == "completed" and r.get("detector.kind") == "healthy" and ok

    shown = [r for r in rows if show_pruned or r["status"] in ("completed", "running", INTERRUPTED)]
    board = sorted(shown, key=value, reverse=True)
    best = max((r for r in rows if eligible(r)), key=value, default=None)
    return board, best


def find_trial(rows: Sequence[dict[str, Any]], trial_id: str) -> dict[str, Any]:
    for r in rows:
        if r["trial_id"] == trial_id:
            return r
    raise BundleError(
        f"--trial: {trial_id!r} is not a trial of this sweep; trials: {[r['trial_id'] for r in rows]}"
    )


def export_bundle(
    row: dict[str, Any], out: str | Path, experiment: str | Path | None = None, source: str | None = None
) -> Path:
    """Write the bundle of one trial (a row of :func:`read_sweep`) into ``out`` (see the module doc).
    ``source``: the sweep's URI when ``experiment`` is a local copy of it (:func:`fetch_sweep`); the bundle's
    provenance names the URI."""
    run, out = Path(row["run"]), Path(out)
    state = load_checkpoint(run / CHECKPOINT)
    cfg = load_config(run / "config.yaml")
    names = list(state.get("class_names") or [])
    model = build_model(cfg.model, len(names)).eval()
    model.load_state_dict(state["model"])
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "config.yaml", out / "config.yaml")
    torch.save(model.state_dict(), out / "weights.pt")
    size = cfg.data.image_size
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out / "model.pt2")
    last_epoch = int(state["epoch"])
    for src, name in (
        (panel_path(run, last_epoch), "panel.png"),
        (run / "panels" / "timeline.png", "timeline.png"),
    ):
        if src.is_file():
            shutil.copy(src, out / name)
    provenance = _provenance(row, experiment, source)
    meta = {
        "format": BUNDLE_FORMAT,
        "class_names": names,
        "image_size": size,
        "preprocessing": f"RGB, resized to {size} x {size} (bilinear), pixels scaled to [0, 1]; the model "
        "normalises them itself",
        "outputs": {
            "logits": "(B, classes)",
            "masks": f"(B, {cfg.model.heads}, h, w), {cfg.model.activation}",
        },
        "epoch": last_epoch,
        "metrics": {
            k: row.get(k) for k in ("last_val_accuracy", "best_val_accuracy", "status", "detector.kind")
        },
        "attention": {k: v for k, v in row.items() if k.startswith("mask.")},
        "provenance": provenance,
    }
    (out / "bundle.json").write_text(json.dumps(meta, indent=1, default=str))
    (out / "MODEL_CARD.md").write_text(_model_card(cfg, meta))
    return out


def _provenance(
    row: dict[str, Any], experiment: str | Path | None, source: str | None = None
) -> dict[str, Any]:
    run = run_uri(source, row["trial_id"]) if source else row["run"]
    out: dict[str, Any] = {"trial_id": row["trial_id"], "optuna_trial": row.get("number"), "run": run}
    if experiment is not None:
        out["sweep"] = source or str(Path(experiment).resolve())
        record = Path(experiment) / SWEEP_RECORD
        if record.is_file():
            sweep = json.loads(record.read_text())
            out.update(space_file=sweep.get("space_file"), space=sweep.get("space"))
            out["sweep_options"] = sweep.get("options")
    return out


def _model_card(cfg: RunConfig, meta: dict[str, Any]) -> str:
    m, a, p = meta["metrics"], meta["attention"], meta["provenance"]

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        f"# Attention classifier: {cfg.model.backbone} + {cfg.model.activation} spatial attention x{cfg.model.heads}",
        "",
        "## Model",
        f"- Backbone `{cfg.model.backbone}` (width {cfg.model.width}), spatial attention `{cfg.model.activation}`, "
        f"{cfg.model.heads} head(s), mask kernel {cfg.model.mask_kernel}, channel attention "
        f"{'on' if cfg.model.channel_attention else 'off'}; {len(meta['class_names'])} classes.",
        f"- Input: {meta['preprocessing']}.",
        "- Outputs: logits and the attention masks (the masks are the prediction's explanation).",
        "",
        "## Data",
        f"- `{cfg.data.name}`"
        + (f" from `{cfg.data.root}`" if cfg.data.root else "")
        + f", {meta['image_size']} px.",
        f"- Classes: {', '.join(meta['class_names'])}",
        "",
        "## Metrics (validation set, at the exported epoch)",
        f"- Epoch {meta['epoch']}; val accuracy {fmt(m['last_val_accuracy'])} (best epoch {fmt(m['best_val_accuracy'])}); "
        f"trial status {m['status']}; masks at the end: {m['detector.kind']}.",
        "",
        "## Attention quality (last epoch)",
        *[f"- `{k}`: {fmt(v)}" for k, v in sorted(a.items())],
        "",
        "## Provenance",
        f"- Sweep `{p.get('sweep', '?')}`, trial `{p['trial_id']}` (Optuna trial {p.get('optuna_trial')}).",
        f"- Search space: `{p.get('space_file', '?')}`",
        "",
        "## Use",
        "```bash",
        "tune-attn predict THIS_FOLDER image.jpg        # class, probability, and image.attention.png",
        "tune-attn train --config THIS_FOLDER/config.yaml   # retrain the same config",
        "```",
        "",
        "![mask panel](panel.png)",
        "",
    ]
    return "\n".join(lines)


@dataclass
class Bundle:
    """A loaded bundle: the eager model (from weights.pt, weights_only), its config and class names."""

    folder: Path
    model: torch.nn.Module
    cfg: RunConfig
    class_names: list[str]
    meta: dict[str, Any]


def load_bundle(folder: str | Path) -> Bundle:
    """Load a bundle on the CPU; a missing, corrupt or mismatched file raises :class:`BundleError` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    missing = [f for f in BUNDLE_FILES if not (folder / f).is_file()]
    if missing:
        raise BundleError(
            f"{folder}: not a tune-attn bundle, missing {', '.join(missing)} (make one with tune-attn export)"
        )
    try:
        meta = json.loads((folder / "bundle.json").read_text())
    except ValueError as exc:
        raise BundleError(f"{folder / 'bundle.json'}: not valid JSON ({exc})") from None
    if meta.get("format") != BUNDLE_FORMAT or not isinstance(meta.get("class_names"), list):
        raise BundleError(f"{folder / 'bundle.json'}: not a format-{BUNDLE_FORMAT} bundle description")
    try:
        cfg = load_config(folder / "config.yaml")
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    try:
        weights = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{folder / 'weights.pt'}: not readable weights ({exc})") from None
    names = [str(n) for n in meta["class_names"]]
    model = build_model(cfg.model, len(names))
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(
            f"{folder / 'weights.pt'}: does not match config.yaml / bundle.json ({first})"
        ) from None
    return Bundle(folder, model.eval(), cfg, names, meta)


@dataclass
class Prediction:
    image: Path
    label: str
    probability: float
    overlay: Path


def predict(bundle: Bundle, images: Sequence[str | Path]) -> list[Prediction]:
    """Class and probability per image; writes ``<image stem>.attention.png`` (each head's mask over the
    image) next to each image."""
    size = bundle.cfg.data.image_size
    paths = [Path(p) for p in images]
    pixels = torch.stack([load_rgb(p, size) for p in paths])  # (B, 3, S, S) uint8
    with torch.no_grad():
        logits, masks = bundle.model(pixels.float() / 255.0)  # (B, K), (B, heads, h, w)
    probs = torch.softmax(logits, dim=1)
    out = []
    for i, path in enumerate(paths):
        k = int(probs[i].argmax())
        label, p = bundle.class_names[k], float(probs[i, k])
        overlay = path.with_name(f"{path.stem}.attention.png")
        panels.mask_panel(
            pixels[i : i + 1].permute(0, 2, 3, 1).numpy(),
            masks[i : i + 1].numpy().astype(np.float64),
            overlay,
            f"{path.name}: {label} ({p:.2f})",
        )
        out.append(Prediction(path, label, p, overlay))
    return out
