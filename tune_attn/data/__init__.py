"""Data sets: the embedded synthetic pets, and real sets from local folders. ``build_data`` is the entry."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from tune_attn.config import DataConfig
from tune_attn.data import synthetic
from tune_attn.data.base import (
    AttnDataset,
    DatasetError,
    DataSplits,
    TensorImages,
    iterate_batches,
    split_indices,
    subset,
)
from tune_attn.data.folders import FileImages, load_cifar10, load_imagefolder, load_pets

__all__ = [
    "AttnDataset",
    "DATASETS",
    "DataSplits",
    "DatasetError",
    "TensorImages",
    "build_data",
    "iterate_batches",
    "split_indices",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _synthetic(cfg: DataConfig) -> DataSplits:
    # Train and validation sets are drawn from their own seed streams, so the validation set stays
    # the same whatever num_train is.
    sets = {
        split: synthetic.load_or_generate(n, cfg.image_size, (cfg.seed, k), cfg.cache_dir)
        for k, (split, n) in enumerate((("train", cfg.num_train), ("val", cfg.num_val)))
    }
    train, val = (
        TensorImages(a.images, a.labels, a.objects, a.parts, part_names=synthetic.PART_NAMES)
        for a in sets.values()
    )
    sample = sets["train"].images[:512].reshape(-1, 3).astype(np.float32) / 255.0
    mean = tuple(float(v) for v in sample.mean(0))
    std = tuple(float(v) for v in sample.std(0))
    return DataSplits(train, val, synthetic.CLASS_NAMES, cfg.image_size, mean, std, {"name": "synthetic"})  # type: ignore[arg-type]


def _from_folder(
    loader: Callable[..., tuple[FileImages | TensorImages, tuple[str, ...]]],
) -> Callable[[DataConfig], DataSplits]:
    def build(cfg: DataConfig) -> DataSplits:
        assert cfg.root is not None  # checked by DataConfig
        full, names = loader(cfg.root, cfg.image_size)
        return _split(cfg, full, names, None)

    return build


def _imagefolder(cfg: DataConfig) -> DataSplits:
    assert cfg.root is not None  # checked by DataConfig
    full, names, val_idx = load_imagefolder(cfg.root, cfg.image_size)
    return _split(cfg, full, names, val_idx)


def _split(
    cfg: DataConfig, full: FileImages | TensorImages, names: tuple[str, ...], val_idx: np.ndarray | None
) -> DataSplits:
    """A folder's set split into train / validation: its own validation images ``val_idx`` where it has them
    (an ImageFolder tree's ``val`` folder), else a ``data.val_fraction`` share of each class drawn with
    ``data.seed``."""
    if isinstance(full, FileImages):
        full.keep_decoded(cfg.memory_cache_mb * 2**20)
    info = {"name": cfg.name, "root": str(cfg.root)}
    if val_idx is not None:
        train_idx = np.setdiff1d(np.arange(len(full)), val_idx)
        info["val"] = "its val folder"
    else:
        train_idx, val_idx = split_indices(np.asarray(full.labels), cfg.val_fraction, cfg.seed)
        if len(val_idx) == 0:
            raise DatasetError(
                f"data.root: {cfg.root} holds {len(full)} image(s) and no class more than one; need at least 2 "
                "of a class to split off a validation set"
            )
    return DataSplits(
        subset(full, train_idx),
        subset(full, val_idx),
        names,
        cfg.image_size,
        IMAGENET_MEAN,
        IMAGENET_STD,
        info,
    )


DATASETS: dict[str, Callable[[DataConfig], DataSplits]] = {
    "synthetic": _synthetic,
    "pets": _from_folder(load_pets),
    "cifar10": _from_folder(load_cifar10),
    "imagefolder": _imagefolder,
}


def build_data(cfg: DataConfig) -> DataSplits:
    """The train / validation sets named by ``cfg.name``."""
    if cfg.name not in DATASETS:
        raise ValueError(f"data.name: {cfg.name!r} is not valid; choose one of {', '.join(DATASETS)}")
    if cfg.root and cfg.root.startswith("~"):  # a cluster sweep's ~/data: this node's home
        cfg = dataclasses.replace(cfg, root=os.path.expanduser(cfg.root))
    return DATASETS[cfg.name](cfg)
