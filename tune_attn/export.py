"""Export a sweep's trial (the pick of :mod:`tune_attn.leaderboard`, or any) as a bundle that runs anywhere;
load a bundle and predict.

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
import os
import shlex
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_attn import panels
from tune_attn.config import ConfigError, RunConfig, from_dict, load_config
from tune_attn.data import find_test_split, held_out
from tune_attn.data.base import DatasetError
from tune_attn.data.folders import IMAGE_SUFFIXES, OVERLAY, is_image_file, load_rgb
from tune_attn.engine import Evaluation, Trainer, per_class, resolve_device
from tune_attn.leaderboard import (
    find_trial,
    is_run_folder,
    is_sweep_folder,
    is_uri,
    read_sweep,
    run_uri,
    sweep_folder,
    sweep_pick,
)
from tune_attn.masks import MaskStats, mask_statistics
from tune_attn.models.classifier import build_model
from tune_attn.run import CHECKPOINT, load_checkpoint, panel_path
from tune_attn.tune.options import SWEEP_RECORD

BUNDLE_FORMAT = 1
BUNDLE_DESCRIPTION = "bundle.json"
BUNDLE_FILES = ("config.yaml", "weights.pt", "model.pt2", BUNDLE_DESCRIPTION)
"""The files :func:`load_bundle` needs."""
WRITTEN = (*BUNDLE_FILES, "panel.png", "timeline.png", "MODEL_CARD.md")
"""Every file an export writes: a folder with nothing else in it may be filled with a new bundle."""
PARTIAL = ".partial-"
"""The hidden folder in ``out`` that an export writes into before its files take their places."""


class BundleError(ValueError):
    """A bundle is missing, corrupt or inconsistent; the message names the file."""


def export_trial(experiment: str | Path, trial_id: str, out: str | Path) -> Path:
    """Export trial ``trial_id`` of the sweep at ``experiment`` (a folder, or a URI: then only the summary and
    that trial's run folder are fetched) into ``out``; see :func:`export_bundle`."""
    check_out(Path(out))  # before any fetching
    with sweep_folder(experiment, trial_id) as folder:
        row = find_trial(read_sweep(folder), trial_id)
        return export_bundle(row, out, folder, source=str(experiment) if is_uri(experiment) else None)


def export_bundle(
    row: dict[str, Any], out: str | Path, experiment: str | Path | None = None, source: str | None = None
) -> Path:
    """Write the bundle of one trial (a row of :func:`read_sweep`; or of one ``tune-attn train`` run, a row of
    :func:`~tune_attn.leaderboard.read_run`) into ``out`` (see the module doc). ``source``: the sweep's URI when ``experiment`` is a local copy of it (:func:`fetch_sweep`); the bundle's
    provenance names the URI. The bundle is moved into ``out`` once whole: an export that fails or is stopped
    (Ctrl+C during ``torch.export``) leaves ``out`` as it was, an earlier bundle there included."""
    run, out = Path(row["run"]), Path(out)
    check_out(out)
    state = load_checkpoint(run / CHECKPOINT)
    cfg = load_config(run / "config.yaml")
    names = list(state.get("class_names") or [])
    model = build_model(cfg.model, len(names), pretrained=False).eval()  # the checkpoint's weights
    model.load_state_dict(state["model"])
    with _in_place_of(out) as folder:
        shutil.copy(run / "config.yaml", folder / "config.yaml")
        torch.save(model.state_dict(), folder / "weights.pt")
        size = cfg.data.image_size
        example = torch.rand(2, 3, size, size)
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, folder / "model.pt2")
        last_epoch = int(state["epoch"])
        for src, name in (
            (panel_path(run, last_epoch), "panel.png"),
            (run / "panels" / "timeline.png", "timeline.png"),
        ):
            if src.is_file():
                shutil.copy(src, folder / name)
        provenance = _provenance(row, experiment, source)
        meta = {
            "format": BUNDLE_FORMAT,
            "class_names": names,
            "image_size": size,
            "preprocessing": "RGB, turned upright as its EXIF orientation says (a JPEG over twice the input "
            f"size decoded at 1/2 to 1/8 scale first), resized to {size} x {size} (bilinear), pixels scaled to "
            "[0, 1]; the model normalises them itself",
            "outputs": {
                "logits": "(B, classes)",
                "masks": f"(B, {cfg.model.heads}, h, w), {cfg.model.activation}",
            },
            "epoch": last_epoch,
            "metrics": {
                k: row.get(k) for k in ("last_val_accuracy", "best_val_accuracy", "status", "detector.kind")
            },
            "attention": {k: v for k, v in row.items() if k.startswith("mask.")},
            "class_accuracy": _class_accuracy(state.get("confusion"), names),
            "provenance": provenance,
        }
        (folder / "bundle.json").write_text(json.dumps(meta, indent=1, default=str))
        (folder / "MODEL_CARD.md").write_text(_model_card(cfg, meta))
    return out


def check_out(out: Path) -> None:
    """Refuse (:class:`BundleError`) an ``out`` that an export could not fill without mixing or losing files: a
    file, or a folder with anything in it but an earlier bundle's files."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: a file, not a folder; give a new folder, or an earlier bundle to replace")
    names = [f.name for f in out.iterdir()] if out.is_dir() else []
    others = sorted(n for n in names if n not in WRITTEN and not n.startswith(PARTIAL))
    if others:
        raise BundleError(
            f"{out}: holds files that are not a bundle's ({', '.join(others[:5])}"
            f"{', ...' if len(others) > 5 else ''}); give a new or empty folder, or an earlier bundle to replace"
        )


@contextlib.contextmanager
def _in_place_of(out: Path) -> Iterator[Path]:
    """A hidden folder in ``out`` to write a bundle into. Once the ``with`` body ends well its files take the
    place of ``out``'s (an earlier bundle's file that the new one lacks is removed); otherwise it is removed
    and ``out`` stays as it was (a folder made for it is removed too)."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{PARTIAL}*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    partial = out / f"{PARTIAL}{os.getpid()}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:  # Ctrl+C too
        shutil.rmtree(partial, ignore_errors=True)
        if made:
            out.rmdir()
        raise
    for name in WRITTEN:
        if (partial / name).is_file():
            os.replace(partial / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    partial.rmdir()


def _provenance(
    row: dict[str, Any], experiment: str | Path | None, source: str | None = None
) -> dict[str, Any]:
    if row["trial_id"] is None:  # a tune-attn train run's
        return {"run": str(Path(row["run"]).resolve())}
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


def _class_accuracy(confusion: Any, names: Sequence[str]) -> list[dict[str, Any]] | None:
    """The validation accuracy of each class at the exported epoch, the least accurate first (with the class
    it is most often taken for), from the checkpoint's confusion counts; None for a checkpoint without them
    (an earlier version's)."""
    if confusion is None or len(confusion) != len(names):
        return None
    return [
        {
            "class": name,
            "correct": correct,
            "images": images,
            "accuracy": correct / images,
            "taken_for": taken,
        }
        for name, correct, images, taken in per_class(np.asarray(confusion, dtype=np.int64), tuple(names))
    ]


def _class_lines(per: list[dict[str, Any]] | None) -> list[str]:
    """The model card's section on the accuracy of each class (none without the counts)."""
    if not per:
        return []
    never = sum(c["correct"] == 0 for c in per)
    return [
        "## Accuracy per class (validation set, at the exported epoch; the least accurate first)",
        *[
            f"- {c['class']}: {c['correct']}/{c['images']} ({c['accuracy']:.2f})"
            + (f", most often taken for {c['taken_for']}" if c["taken_for"] else "")
            for c in per
        ],
        *([f"- {never} of {len(per)} classes never right."] if never else []),
        "",
    ]


def _model_card(cfg: RunConfig, meta: dict[str, Any]) -> str:
    m, a, p = meta["metrics"], meta["attention"], meta["provenance"]
    size = meta["image_size"]

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
        "## Training",
        f"- {cfg.train.optimizer}, lr {cfg.train.lr:.3g}"
        + (f", momentum {cfg.train.momentum:.3g}" if cfg.train.optimizer == "sgd" else "")
        + f", weight decay {cfg.train.weight_decay:.3g}, {cfg.train.epochs} epochs of batch "
        f"{cfg.train.batch_size}, seed {cfg.train.seed} (all in config.yaml).",
        "",
        "## Data",
        f"- `{cfg.data.name}`"
        + (f" from `{cfg.data.root}`" if cfg.data.root else "")
        + f", {meta['image_size']} px.",
        f"- Classes: {', '.join(meta['class_names'])}",
        "",
        "## Metrics (validation set, at the exported epoch)",
        f"- Epoch {meta['epoch']}; val accuracy {fmt(m['last_val_accuracy'])} (best epoch {fmt(m['best_val_accuracy'])}); "
        f"{'trial' if 'trial_id' in p else 'run'} status {m['status']}; masks at the end: {m['detector.kind']}.",
        "- The validation accuracy picked this model, so it flatters it a little; `tune-attn evaluate THIS_FOLDER "
        "--test` measures it on the data set's test images (read in neither training nor picking), each class apart.",
        "",
        *_class_lines(meta.get("class_accuracy")),
        "## Attention quality (last epoch)",
        *[f"- `{k}`: {fmt(v)}" for k, v in sorted(a.items())],
        "",
        "## Provenance",
        *(
            [
                f"- Sweep `{p.get('sweep', '?')}`, trial `{p['trial_id']}` (Optuna trial {p.get('optuna_trial')}).",
                f"- Search space: `{p.get('space_file', '?')}`",
            ]
            if "trial_id" in p
            else [f"- `tune-attn train` run `{p['run']}` (not a sweep's trial)."]
        ),
        "",
        "## Use",
        "```bash",
        "tune-attn predict THIS_FOLDER image.jpg        # class, probability, and image.attention.png",
        "tune-attn evaluate THIS_FOLDER --test              # accuracy per class on the test images",
        "tune-attn train --config THIS_FOLDER/config.yaml   # retrain the same config",
        "```",
        "",
        "With torch and Pillow alone (no tune-attn), as `predict` reads an image (which also decodes a large JPEG at "
        "a reduced scale first, and puts a transparent image over white):",
        "```python",
        "import json",
        "",
        "import numpy as np",
        "import torch",
        "from PIL import Image, ImageOps",
        "",
        'model = torch.export.load("THIS_FOLDER/model.pt2").module()',
        'classes = json.load(open("THIS_FOLDER/bundle.json"))["class_names"]',
        'image = ImageOps.exif_transpose(Image.open("image.jpg")).convert("RGB")',
        f"image = image.resize(({size}, {size}), Image.Resampling.BILINEAR)",
        f"x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]  # (1, 3, {size}, {size})",
        "with torch.no_grad():",
        f"    logits, masks = model(x)  # (1, {len(meta['class_names'])}), (1, {cfg.model.heads}, h, w): where it looked",
        "p = logits.softmax(1)[0]",
        "print(classes[int(p.argmax())], float(p.max()))",
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
        how = (
            f"a training run's folder: make a bundle of its model with tune-attn export {shlex.quote(str(folder))} --out BUNDLE"
            if is_run_folder(folder)
            else "make one with tune-attn export"
        )
        raise BundleError(f"{folder}: not a tune-attn bundle, missing {', '.join(missing)} ({how})")
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
    model = build_model(cfg.model, len(names), pretrained=False)  # weights.pt's
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(
            f"{folder / 'weights.pt'}: does not match config.yaml / bundle.json ({first})"
        ) from None
    return Bundle(folder, model.eval(), cfg, names, meta)


@dataclass
class Evaluated:
    """A saved model (a run's checkpoint or a bundle) evaluated on a set of images."""

    epoch: int | None
    on: str | None  # where the images came from; None: the validation set of the model's config
    evaluation: Evaluation
    stats: MaskStats
    class_names: tuple[str, ...]
    recorded: float | None = None  # on the validation set: the accuracy a bundle records, where it differs
    source: str = ""  # the trial or run a bundle records
    test_split: str | None = None  # on the validation set: where the data set keeps test images, if it does
    picked: str | None = None  # a sweep folder given: the trial id of its pick, the model evaluated

    def to_dict(self) -> dict[str, Any]:
        """The results as plain values (``evaluate --json``): where, how many images, loss and accuracy, each
        class's accuracy as a bundle records it (the least accurate first), the classes without images, and
        the mask statistics."""
        confusion = self.evaluation.confusion
        return {
            "epoch": self.epoch,
            "on": self.on or "validation set",
            "images": int(confusion.sum()),
            "loss": self.evaluation.loss,
            "accuracy": self.evaluation.accuracy,
            "class_accuracy": _class_accuracy(confusion, self.class_names),
            "no_images_of": [n for n, row in zip(self.class_names, confusion, strict=True) if row.sum() == 0],
            # strict JSON: a statistic that is not a number is null
            "mask": {k: v if math.isfinite(v) else None for k, v in self.stats.flat().items()},
            "recorded_val_accuracy": self.recorded,
            "trial_id": self.picked,
        }


def evaluate_saved(saved: str | Path, on: str | None = None, test: bool = False) -> Evaluated:
    """Evaluate the model of ``saved`` (a run folder, its checkpoint file, a bundle, a sweep's trial folder, or a
    sweep folder: its pick, as ``best`` picks it) on the validation set of its config, on its data set's test
    split (``test``), or on ``on``, a ``FOLDER/<class>/<image>`` tree. It runs on a GPU where there is one,
    else on the CPU, whatever device it was trained on."""
    saved = Path(saved)
    if not saved.exists():
        raise FileNotFoundError(f"{saved}: no such run folder, checkpoint or bundle")
    bundle, picked = None, None
    if (saved / BUNDLE_DESCRIPTION).is_file():
        bundle = load_bundle(saved)
        cfg, weights, epoch = bundle.cfg, bundle.model.state_dict(), bundle.meta.get("epoch")
        names = tuple(bundle.class_names)
    else:
        path = saved / CHECKPOINT if saved.is_dir() else saved
        if saved.is_dir() and not path.is_file():
            if (saved / "run" / CHECKPOINT).is_file():  # a sweep's trial folder
                path = saved / "run" / CHECKPOINT
            elif is_sweep_folder(saved):  # its pick, as `best` picks it
                pick = sweep_pick(saved, str(saved))
                path, picked = Path(pick["run"]) / CHECKPOINT, pick["trial_id"]
            else:
                raise FileNotFoundError(
                    f"{saved}: no run folder (no {CHECKPOINT}) and no bundle ({BUNDLE_DESCRIPTION})"
                )
        state = load_checkpoint(path)
        cfg, weights, epoch = from_dict(state["config"], source=str(path)), state["model"], state["epoch"]
        names = tuple(state.get("class_names") or ())
    data, where = held_out(cfg.data, names, on) if on is not None or test else (None, None)
    trainer = Trainer(cfg, data=data, device=resolve_device("auto"), pretrained=False)
    trainer.model.load_state_dict(weights)
    result = trainer.evaluate()
    val = trainer.data.val
    stats = mask_statistics(result.masks, trainer.probe_objects, trainer.probe_parts, val.part_names)
    out = Evaluated(epoch, where, result, stats, trainer.data.class_names, picked=picked)
    if where is None:
        out.test_split = find_test_split(cfg.data)
        recorded = bundle.meta.get("metrics", {}).get("last_val_accuracy") if bundle is not None else None
        # Half a point apart at least: another device's numerics may move a sample or two, not a whole trial.
        if bundle is not None and isinstance(recorded, float) and abs(recorded - result.accuracy) > 0.005:
            provenance = bundle.meta.get("provenance", {})
            out.recorded = recorded
            out.source = (
                f"trial {provenance['trial_id']}"
                if "trial_id" in provenance
                else f"run {provenance.get('run')}"
            )
    return out


@dataclass
class Prediction:
    """One image's prediction, or why it has none (``error``: the image could not be read)."""

    image: Path
    label: str = ""
    probability: float = math.nan
    overlay: Path | None = None
    error: str | None = None


PREDICT_BATCH = 64
"""Images per forward pass in :func:`predict`: memory stays flat however many images are given."""


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The images named: a file as given; a folder's image files, in its sub-folders too (by suffix, sorted; not
    hidden ones, nor the ``*.attention.png`` overlays, so that predicting on a folder again does not predict its
    overlays)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(f for f in path.rglob("*") if is_image_file(f, path))
        if not found:
            raise DatasetError(
                f"{path}: a folder without image files (ending in {', '.join(IMAGE_SUFFIXES)})"
            )
        out += found
    return out


def overlay_paths(images: Sequence[Path], overlays: Path | None = None) -> list[Path]:
    """Where :func:`predict` writes each image's overlay: ``<image stem>.attention.png`` next to the image, or
    in the folder ``overlays``. Two images that would write the same file, or an overlay that would write over
    one of the images, are refused (ValueError naming both) before any work."""
    out: list[Path] = []
    seen: dict[Path, Path] = {}
    inputs = {p.resolve() for p in images}
    for image in images:
        target = (overlays if overlays is not None else image.parent) / f"{image.stem}{OVERLAY}"
        key = target.resolve()
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {image}: both overlays would be {target}; predict them in separate runs, "
                "with another --overlays folder each"
            )
        if key in inputs:
            raise ValueError(f"{image}: its overlay would write over the image {target}; give --overlays DIR")
        seen[key] = image
        out.append(target)
    return out


def predict(
    bundle: Bundle,
    images: Sequence[str | Path],
    overlays: Path | None = None,
    batch_size: int = PREDICT_BATCH,
    draw: bool = True,
) -> Iterator[Prediction]:
    """Class and probability per image, ``batch_size`` images at a time, each yielded once its batch is done;
    with ``draw``, writes each image's overlay (each head's mask over the image) where :func:`overlay_paths`
    says (nine tenths of the time per image). An image that cannot be read is yielded with its ``error`` and the
    others go on; an overlay that cannot be written stops it (OSError naming the file)."""
    size = bundle.cfg.data.image_size
    paths = [Path(p) for p in images]
    targets: list[Path | None] = list(overlay_paths(paths, overlays)) if draw else [None] * len(paths)
    if overlays is not None and draw:
        try:
            overlays.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"--overlays {overlays}: cannot make this folder ({exc.strerror or exc})") from None
    for start in range(0, len(paths), batch_size):
        batch, pixels = [], []
        for path, target in zip(
            paths[start : start + batch_size], targets[start : start + batch_size], strict=True
        ):
            try:
                pixels.append(load_rgb(path, size))  # (3, S, S) uint8
                batch.append((path, target))
            except DatasetError as exc:
                yield Prediction(path, error=str(exc))
        if not batch:
            continue
        x = torch.stack(pixels)  # (B, 3, S, S)
        with torch.no_grad():
            logits, masks = bundle.model(x.float() / 255.0)  # (B, K), (B, heads, h, w)
        probs = torch.softmax(logits, dim=1)
        for i, (path, target) in enumerate(batch):
            k = int(probs[i].argmax())
            label, p = bundle.class_names[k], float(probs[i, k])
            if target is not None:
                try:
                    panels.mask_panel(
                        x[i : i + 1].permute(0, 2, 3, 1).numpy(),
                        masks[i : i + 1].numpy().astype(np.float64),
                        target,
                        f"{path.name}: {label} ({p:.2f})",
                    )
                except OSError as exc:
                    raise OSError(f"{target}: cannot write the overlay ({exc.strerror or exc})") from None
            yield Prediction(path, label, p, target)
