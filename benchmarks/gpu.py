"""What one GPU gives tune-attn trials, measured in one run on the GPU at hand.

1. Throughput: training images/s of a trial's loop (data, forward, backward, optimizer step) against the
   same model trained over and over on one batch already on the GPU, for the small CNN of
   configs/default.yaml (64 px) and the ResNet-18 of search_spaces/pets.yaml (224 px); each with
   deterministic kernels (``train.deterministic``, the default) and with the fastest ones.
2. Decoding: the pets loop with JPEGs decoded every epoch (``data.memory_cache_mb=0``) against decoded
   images kept in memory after the first epoch (the default), on a generated stand-in for Oxford-IIIT Pet
   (500 x 375 JPEGs with trimaps, in its layout; nothing is downloaded).
3. Fractional GPUs: the same pets sweep (search_spaces/pets.yaml on that stand-in) with one trial per GPU
   (``--gpus-per-trial 1``) and with four (``0.25``): wall time and trial-epochs per minute.

    python benchmarks/gpu.py [--per-class 50] [--trials 4] [--epochs 3]

Without CUDA it runs on the CPU with one logical GPU for Ray (a dry run of the script; numbers meaningless).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tune_attn.config import load_config
from tune_attn.engine import Trainer
from tune_attn.tune.options import SweepOptions
from tune_attn.tune.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
BREEDS = 37


def _pet(args: tuple[Path, str, int]) -> None:
    """One 500 x 375 photo-like JPEG (smooth background, an ellipse 'pet', mild noise) and its trimap."""
    base, image_id, seed = args
    rng = np.random.default_rng(seed)
    h, w = 375, 500
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = (
        rng.uniform(40, 200, 3) + 40 * np.sin(xx[..., None] / rng.uniform(30, 90) + yy[..., None] / 70)
    ).astype(np.float32)
    cy, cx, ry, rx = rng.uniform(120, 255), rng.uniform(150, 350), rng.uniform(60, 140), rng.uniform(80, 180)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img[inside] = rng.uniform(0, 255, 3) + 25 * np.sin(xx[inside, None] / 7)
    img += rng.normal(0, 6, img.shape)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(base / "images" / f"{image_id}.jpg", quality=85)
    tri = np.where(inside, 1, 2).astype(np.uint8)
    Image.fromarray(tri).save(base / "annotations" / "trimaps" / f"{image_id}.png")


def fake_pets(root: Path, per_class: int) -> Path:
    """Oxford-IIIT Pet's layout under ``root``: 37 breeds of ``per_class`` generated images each."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    jobs, lines = [], []
    for cls in range(1, BREEDS + 1):
        for i in range(1, per_class + 1):
            image_id = f"breed{cls:02d}_{i}"
            jobs.append((base, image_id, cls * 10_000 + i))
            lines.append(f"{image_id} {cls} 1 {cls}")
    # spawned, not forked: this process has started torch's threads (forking it warns, and can hang)
    with multiprocessing.get_context("spawn").Pool() as pool:
        pool.map(_pet, jobs, chunksize=16)
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    return root


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def loop_rate(trainer: Trainer, epochs: int) -> list[float]:
    """Training images/s of ``epochs`` epochs of the trainer's own loop (the data path included)."""
    rates = []
    for _ in range(epochs):
        sync()
        start = time.perf_counter()
        _, seen = trainer.train_epoch()
        sync()
        rates.append(seen / (time.perf_counter() - start))
        trainer.epoch += 1
    return rates


def ceiling_rate(trainer: Trainer, steps: int = 100) -> float:
    """Training images/s of the same model on one batch kept on the device: what the GPU alone allows."""
    x, y = next(
        iter(torch.utils.data.DataLoader(trainer.data.train, batch_size=trainer.cfg.train.batch_size))
    )
    x, y = trainer._prepare(x), y.to(trainer.device)
    trainer.model.train()

    def step() -> None:
        logits, _ = trainer.model(x)
        loss = F.cross_entropy(logits, y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for _ in range(5):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * len(y) / (time.perf_counter() - start)


def pets_config(root: Path, extra: list[str]) -> list[str]:
    return [f"data.root={root}", "train.device=auto", *extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-class", type=int, default=50, help="generated images per breed (Pets: ~100)")
    ap.add_argument("--trials", type=int, default=4, help="trials of each fractional sweep")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each sweep trial")
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "decoding", "fractional"])
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "no CUDA (dry run on the CPU)"
    print(f"device: {name}; torch {torch.__version__}; {multiprocessing.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = fake_pets(Path(tmp) / "pets", args.per_class)
        print(
            f"generated {BREEDS * args.per_class} pets-like JPEGs (500 x 375) in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        if "throughput" not in args.skip:
            for label, cfg_path, overrides in (
                ("small CNN 64 px, batch 64", ROOT / "configs" / "default.yaml", []),
                (
                    "ResNet-18 224 px, batch 64",
                    None,
                    pets_config(root, ["data.name=pets", "data.image_size=224", "model.backbone=resnet18"]),
                ),
            ):
                rate = {}
                for deterministic in (True, False):
                    cfg = load_config(cfg_path, [*overrides, f"train.deterministic={deterministic}"])
                    trainer = Trainer(cfg)
                    rates = loop_rate(trainer, 3)  # the first epoch warms up (and, for files, decodes them)
                    ceiling = ceiling_rate(trainer)
                    rate[deterministic] = rates[-1]
                    print(
                        f"{label}, train.deterministic={deterministic}: trial loop {rates[-1]:,.0f} img/s (epochs: "
                        f"{', '.join(f'{r:,.0f}' for r in rates)}); same model on one resident batch "
                        f"{ceiling:,.0f} img/s; ratio loop / resident batch {rates[-1] / ceiling:.2f}",
                        flush=True,
                    )
                    del trainer
                print(
                    f"{label}: ratio deterministic / fastest kernels {rate[True] / rate[False]:.2f}",
                    flush=True,
                )
        if "decoding" not in args.skip:
            base = ["data.name=pets", "data.image_size=224", "model.backbone=resnet18"]
            timed = {}
            for cache_mb in (0, 2048):
                pets = load_config(None, pets_config(root, [*base, f"data.memory_cache_mb={cache_mb}"]))
                trainer = Trainer(pets)
                rates = loop_rate(trainer, 2)
                timed[cache_mb] = rates[-1]
                print(
                    f"pets loop, data.memory_cache_mb={cache_mb}: epoch 1 {rates[0]:,.0f} img/s, epoch 2 {rates[1]:,.0f} img/s",
                    flush=True,
                )
                del trainer
            print(
                f"ratio kept in memory / decoded every epoch (epoch 2): {timed[2048] / timed[0]:.2f}",
                flush=True,
            )
        if "fractional" not in args.skip:
            import ray

            walls = {}
            for gpus in (1.0, 0.25):
                ray.init(
                    address="local",
                    include_dashboard=False,
                    log_to_driver=False,
                    num_gpus=None if cuda else 1,
                )
                try:
                    start = time.perf_counter()
                    result = run_sweep(
                        ROOT / "search_spaces" / "pets.yaml",
                        SweepOptions(
                            name=f"gpus-{gpus:g}",
                            storage=str(Path(tmp) / "sweeps"),
                            num_samples=args.trials,
                            max_concurrent=round(1 / gpus),
                            gpus_per_trial=gpus,
                            prune=False,
                            fixed=tuple(pets_config(root, [f"train.epochs={args.epochs}"])),
                            progress_seconds=3600,
                            wandb="off",
                        ),
                        echo=lambda line: None,
                    )
                    walls[gpus] = time.perf_counter() - start
                finally:
                    ray.shutdown()
                epochs = sum(int(r.get("epochs") or 0) for r in result.rows)
                devices = sorted({str(r.get("device")) for r in result.rows})
                print(
                    f"sweep, --gpus-per-trial {gpus:g} (max concurrent {round(1 / gpus)}): {len(result.rows)} trials, "
                    f"{epochs} trial-epochs in {walls[gpus]:.0f} s = {60 * epochs / walls[gpus]:.1f} trial-epochs/min; "
                    f"statuses {sorted({r['status'] for r in result.rows})}; devices {devices}",
                    flush=True,
                )
            print(
                f"ratio wall time 1 GPU per trial / 0.25 GPU per trial: {walls[1.0] / walls[0.25]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
