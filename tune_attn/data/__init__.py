"""Data sets: the embedded synthetic pets, and real sets from local folders. ``build_data`` is the entry."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from tune_attn.config import DataConfig, absolute_root
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
from tune_attn.data.folders import (
    FileImages,
    imagefolder_test,
    load_cifar10,
    load_imagefolder,
    load_labelled_folder,
    load_pets,
)

__all__ = [
    "AttnDataset",
    "DATASETS",
    "DataSplits",
    "DatasetError",
    "TensorImages",
    "build_data",
    "held_out",
    "find_test_split",
    "iterate_batches",
    "split_indices",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _synthetic_images(cfg: DataConfig, stream: int, n: int) -> TensorImages:
    """``n`` synthetic images of seed stream ``(data.seed, stream)``: 0 trains, 1 validates, 2 tests. Each set has
    its own stream, so the validation set stays the same whatever num_train is."""
    a = synthetic.load_or_generate(n, cfg.image_size, (cfg.seed, stream), cfg.cache_dir)
    return TensorImages(a.images, a.labels, a.objects, a.parts, part_names=synthetic.PART_NAMES)


def _synthetic(cfg: DataConfig) -> DataSplits:
    train, val = _synthetic_images(cfg, 0, cfg.num_train), _synthetic_images(cfg, 1, cfg.num_val)
    sample = train.images[:512].permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(np.float32) / 255.0
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
    counts = np.bincount(np.asarray(full.labels)[val_idx], minlength=len(names))
    unvalidated = [name for name, n in zip(names, counts, strict=True) if n == 0]
    if unvalidated:  # a class of one image, or one that a val folder lacks
        info["unvalidated"] = ", ".join(unvalidated)
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


def find_test_split(cfg: DataConfig) -> str | None:
    """Where the data set of ``cfg`` keeps test images, never read in training nor in picking a trial: an
    ``imagefolder`` tree's ``test`` folder, Pets' ``annotations/test.txt``, CIFAR-10's ``test_batch``; None when
    it has none here. The synthetic set draws its test images apart, as many as its validation images."""
    if cfg.name == "synthetic":
        return f"the synthetic set's test stream, data.seed {cfg.seed}"
    root = absolute_root(cfg.root)
    if root is None:
        return None
    if cfg.name == "imagefolder":
        folder = imagefolder_test(root)
        return str(folder) if folder is not None else None
    candidates = {
        "pets": ("oxford-iiit-pet/annotations/test.txt", "annotations/test.txt"),
        "cifar10": ("cifar-10-batches-py/test_batch", "test_batch"),
    }.get(cfg.name, ())
    return next((os.path.join(root, c) for c in candidates if os.path.isfile(os.path.join(root, c))), None)


def held_out(
    cfg: DataConfig, class_names: tuple[str, ...], folder: str | None = None
) -> tuple[DataSplits, str]:
    """Images to evaluate a trained model on, as the validation set of a :class:`DataSplits` (nothing is
    trained on them), and where they come from: ``folder``, a ``FOLDER/<class>/<image>`` tree of the model's
    classes ``class_names``; without it, the test split of the data set of ``cfg`` (:func:`find_test_split`)."""
    images: FileImages | TensorImages
    where = folder if folder is not None else find_test_split(cfg)
    if where is None:
        raise DatasetError(
            f"data.name {cfg.name}, data.root {cfg.root}: no test split here (an imagefolder tree's test folder, "
            "Pets' annotations/test.txt, CIFAR-10's test_batch); name a folder of labelled images with --on FOLDER"
        )
    if folder is None and cfg.name == "synthetic":
        images = _synthetic_images(cfg, 2, cfg.num_val)
    elif folder is not None or cfg.name == "imagefolder":
        what = "--on" if folder is not None else "test folder"
        images = load_labelled_folder(where, cfg.image_size, class_names, what, "the model")
    else:
        root = absolute_root(cfg.root)
        assert root is not None  # find_test_split found a file under it
        load = load_pets if cfg.name == "pets" else load_cifar10
        images, names = load(root, cfg.image_size, "test")
        if names != class_names:
            raise DatasetError(
                f"{where}: its classes ({', '.join(names)}) are not the model's ({', '.join(class_names)})"
            )
    return DataSplits(images, images, class_names, cfg.image_size, IMAGENET_MEAN, IMAGENET_STD), where
