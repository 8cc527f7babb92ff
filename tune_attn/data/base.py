"""What every data set gives the training loop: uint8 images, labels and, where known, ground-truth masks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class DatasetError(ValueError):
    """A data folder is missing or not in the expected layout; the message says what is expected and where."""


class AttnDataset(Dataset):
    """Base class. ``self[i]`` is ``(image uint8 (3, S, S), label)``.

    ``part_names`` is empty when the set has no part masks; ``has_object_masks`` tells whether
    :meth:`masks` gives an object mask.
    """

    part_names: tuple[str, ...] = ()
    has_object_masks: bool = False

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def masks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of sample i: object (S, S) float in [0, 1] and parts (P, S, S) float."""
        raise NotImplementedError(f"{type(self).__name__} has no ground-truth masks")

    def is_decoded(self, i: int) -> bool:
        """Whether ``self[i]`` is in memory (False: reading it decodes a file)."""
        return True


class TensorImages(AttnDataset):
    """An in-memory set: images (N, S, S, 3) uint8, labels (N,), optional objects (N, S, S), parts (N, P, S, S)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        objects: np.ndarray | None = None,
        parts: np.ndarray | None = None,
        part_names: Sequence[str] = (),
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, 3, S, S) view
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.objects = objects
        self.parts = parts
        self.part_names = tuple(part_names) if parts is not None else ()
        self.has_object_masks = objects is not None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def masks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.objects is None:
            return super().masks(i)
        parts = self.parts[i] if self.parts is not None else np.zeros((0,) + self.objects.shape[1:])
        return self.objects[i].astype(np.float32), parts.astype(np.float32)

    def batches(
        self, batch_size: int, order: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Slice batches straight from memory (no per-item overhead)."""
        n = len(self)
        for start in range(0, n, batch_size):
            if order is None:
                idx = slice(start, start + batch_size)
                yield self.images[idx], self.labels[idx]
            else:
                sel = order[start : start + batch_size]
                yield self.images[sel], self.labels[sel]


@dataclass
class DataSplits:
    """A training and a validation set with the class names."""

    train: AttnDataset
    val: AttnDataset
    class_names: tuple[str, ...]
    image_size: int
    # Per-channel mean / std of the inputs in [0, 1]; the model normalises with them.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def iterate_batches(
    dataset: AttnDataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (uint8 images (B, 3, S, S), labels (B,)), in a seeded order when ``shuffle``."""
    order = torch.randperm(len(dataset), generator=generator) if shuffle else None
    if isinstance(dataset, TensorImages):
        yield from dataset.batches(batch_size, order)
        return
    threads = torch.get_num_threads()  # the CPUs this run may use: a trial's Ray CPUs (--cpus-per-trial)
    if threads > 1 and not all(dataset.is_decoded(i) for i in range(len(dataset))):
        rows = order.tolist() if order is not None else list(range(len(dataset)))
        yield from _decoded_in_threads(
            dataset, (rows[k : k + batch_size] for k in range(0, len(rows), batch_size)), threads
        )
        return
    sampler = order.tolist() if order is not None else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=0)
    yield from loader


def _decoded_in_threads(
    dataset: AttnDataset, batches: Iterable[list[int]], threads: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of rows ``batches``, their files decoded by ``threads`` threads (PIL lets go of the GIL
    while it decodes and resizes), the next batch decoding while the caller trains on this one: the same
    batches, in the same order, as one thread reads."""

    def collate(items: Iterable[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*items, strict=True)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)  # (B, 3, S, S) uint8, (B,)

    with ThreadPoolExecutor(threads, thread_name_prefix="tune-attn-decode") as pool:
        ahead = None
        for rows in batches:
            upcoming = pool.map(dataset.__getitem__, rows)  # started now, read after this batch is trained on
            if ahead is not None:
                yield collate(ahead)
            ahead = upcoming
        if ahead is not None:
            yield collate(ahead)


def split_indices(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / validation split of ``range(len(labels))``, stratified by label.

    Each class gives ``round(n_c * val_fraction)`` of its ``n_c`` samples to validation, at least one when it
    has two or more and never all of them, so every class that can be is validated, in its own proportion."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(members) * val_fraction))
        n_val = min(max(n_val, 1 if val_fraction > 0 else 0), len(members) - 1)
        val.append(members[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


class Subset(AttnDataset):
    """The samples ``indices`` of a lazily loaded set, masks included."""

    def __init__(self, parent: AttnDataset, indices: Sequence[int]) -> None:
        self.parent = parent
        self.indices = [int(i) for i in indices]
        self.part_names = parent.part_names
        self.has_object_masks = parent.has_object_masks

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.parent[self.indices[i]]

    def masks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.parent.masks(self.indices[i])

    def is_decoded(self, i: int) -> bool:
        return self.parent.is_decoded(self.indices[i])


def subset(dataset: AttnDataset, indices: np.ndarray) -> AttnDataset:
    """Rows ``indices`` of a set; in-memory sets stay in memory (fast batching)."""
    if isinstance(dataset, TensorImages):
        return TensorImages(
            dataset.images.permute(0, 2, 3, 1)[indices].numpy(),
            dataset.labels[indices].numpy(),
            dataset.objects[indices] if dataset.objects is not None else None,
            dataset.parts[indices] if dataset.parts is not None else None,
            dataset.part_names,
        )
    return Subset(dataset, indices.tolist())
