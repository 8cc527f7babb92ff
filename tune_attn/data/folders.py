"""Real data sets from local folders, never downloaded: Oxford-IIIT Pet, CIFAR-10 and any ImageFolder tree."""

from __future__ import annotations

import pickle
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from tune_attn.data.base import AttnDataset, DatasetError, TensorImages

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
"""Image files by name (any case), as torchvision's ``ImageFolder`` takes them and ``.gif`` too (its first frame;
scraped photo sets hold some, and a class folder's GIFs left out unsaid would shrink the class)."""

PETS_LAYOUT = """expected the Oxford-IIIT Pet layout of torchvision:
  ROOT/oxford-iiit-pet/images/<Breed_Name>_<n>.jpg
  ROOT/oxford-iiit-pet/annotations/trainval.txt   (lines: <image id> <class id 1..37> <species> <breed id>)
  ROOT/oxford-iiit-pet/annotations/trimaps/<image id>.png   (1 = pet, 2 = background, 3 = border)
(ROOT may also be the oxford-iiit-pet folder itself)"""

CIFAR_LAYOUT = """expected the CIFAR-10 python layout:
  ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5 and batches.meta   (pickled dicts)
(ROOT may also be the cifar-10-batches-py folder itself)"""

IMAGEFOLDER_LAYOUT = (
    """expected an ImageFolder tree: ROOT/<class name>/<image file>, one sub-folder per class,
image files ending in """
    + ", ".join(IMAGE_SUFFIXES)
    + " (hidden files and folders, named .*, are left out); or split in folders, ROOT/train/<class name>/<image file>"
    " and ROOT/val/<class name>/<image file> (val also valid or validation; a test folder is read only by tune-attn evaluate --test)"
)

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
"""Folder names (any case) of an ImageFolder tree split in folders -> the split they hold."""


_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the turn that shows the stored pixels upright (as ``PIL.ImageOps.exif_transpose``)."""


def orientation(im: Image.Image) -> int:
    """The EXIF orientation of an open image: 1 upright, 2-8 turned or mirrored (a phone's photo held sideways)."""
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) else 1


def upright(im: Image.Image, turn: int) -> Image.Image:
    """``im`` turned as EXIF orientation ``turn`` says; turned after the resize to a square, it
    is the same (to within a unit of rounding) as turned before, at a fraction of the cost for a large photo."""
    method = _UPRIGHT.get(turn)
    return im if method is None else im.transpose(method)


def _rgb(im: Image.Image) -> Image.Image:
    """An open image in RGB; 16-bit grey (a 16-bit PNG or TIFF) scaled to 8 bits, where PIL's own conversion
    clips every value above 255 and leaves the image white; a transparent one over white, as a viewer shows
    it (PIL's conversion keeps whatever colour the transparent pixels hold: often black, or leftovers)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.asarray(im, dtype=np.float64).clip(0, 65535) / 257.0  # (H, W) in [0, 255]
        im = Image.fromarray(np.rint(grey).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: Path, size: int) -> torch.Tensor:
    """Read an image file as uint8 (3, size, size), upright as an image viewer shows it (its EXIF orientation)."""
    try:
        with Image.open(path) as im:
            # A large JPEG decodes at 1/2, 1/4 or 1/8 scale where both sides stay at least twice `size`: a
            # 4000 x 3000 photo in a quarter of the time, within 0.5 of 255 on average of the full decode; an
            # image under twice `size` (Pets' 500 x 375 at 224 px) decodes whole as before (benchmarks/decode.py).
            im.draft("RGB", (2 * size, 2 * size))
            square = _rgb(im).resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(upright(square, orientation(im)), dtype=np.uint8)  # (size, size, 3)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: cannot read the image ({exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


OVERLAY = ".attention.png"
"""The end of the name of an overlay ``tune-attn predict`` writes next to each image (``cat.attention.png``)."""


def is_image_file(path: Path, folder: Path) -> bool:
    """Whether a file found in ``folder`` is one of its images: an image suffix, and not hidden, nor in a hidden
    folder (a Mac's ``._photo.jpg`` beside each photo copied from it, a notebook's ``.ipynb_checkpoints/``), nor
    an overlay ``predict`` wrote beside an image (:data:`OVERLAY`: a data set predicted on keeps its classes)."""
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    ours = path.name.endswith(OVERLAY)
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and not ours and path.is_file()


def check_headers(paths: Sequence[Path]) -> None:
    """Refuse (:class:`DatasetError`, naming them) files that are no images at all: an empty file, a web page
    saved as ``.jpg``. Only each file's header is read (about 0.1 ms a file), so a data set is refused before
    training, not when an epoch reaches such a file; an image damaged after its header is found when read."""
    bad = []
    for path in paths:
        try:
            with Image.open(path):
                pass
        except UnidentifiedImageError:
            bad.append(f"{path} (not an image)")
        except OSError as exc:
            bad.append(f"{path} ({exc.strerror or exc})")
    if bad:
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DatasetError(
            f"{len(bad)} of {len(paths)} files are not readable images: {'; '.join(bad[:5])}{more}; replace or "
            "remove them"
        )


_kept: tuple[tuple[Any, ...], dict[int, torch.Tensor]] | None = None
"""The decoded images of the last :class:`FileImages` that kept any, by its size and files (with their mtime
and size on disk); see :meth:`FileImages.keep_decoded`."""
_keeping = threading.Lock()  # a decoded image is kept under it (threads decode a batch at once)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:  # missing: reading it will say so
        return (0, -1)
    return (st.st_mtime_ns, st.st_size)


class FileImages(AttnDataset):
    """Images read lazily from files, resized to ``size``; optional trimap files give object masks."""

    def __init__(
        self, files: Sequence[Path], labels: Sequence[int], size: int, trimaps: Sequence[Path] | None = None
    ) -> None:
        self.files = list(files)
        self.labels = list(labels)
        self.size = size
        self.trimaps = list(trimaps) if trimaps is not None else None
        self.has_object_masks = self.trimaps is not None
        self.cache_bytes = 0  # see keep_decoded
        self._decoded: dict[int, torch.Tensor] = {}  # index -> (3, size, size) uint8

    def keep_decoded(self, limit_bytes: int) -> None:
        """Keep decoded, resized images in memory, up to ``limit_bytes`` in all (0: decode on every read).

        Each image reads the same every epoch (no augmentation), and decoding JPEGs on the trial's CPU is
        slower than a GPU trains on them; images beyond the limit are decoded on every read. The next data
        set of the same files (unchanged on disk) and size in this process starts with the images kept here:
        a sweep's next trial in a reused process does not decode them again."""
        global _kept
        self.cache_bytes = limit_bytes
        if not limit_bytes:
            self._decoded = {}
            return
        key = (self.size, tuple((str(f), *_stamp(f)) for f in self.files))
        if _kept is not None and _kept[0] == key and len(_kept[1]) * 3 * self.size**2 <= limit_bytes:
            self._decoded = _kept[1]
        else:
            _kept = (key, self._decoded)  # one set at a time: memory stays within one limit

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self._decoded.get(i)
        if image is None:
            image = load_rgb(self.files[i], self.size)  # (3, size, size) uint8
            with _keeping:  # the limit holds with threads decoding (iterate_batches)
                if (len(self._decoded) + 1) * image.numel() <= self.cache_bytes:
                    self._decoded[i] = image
        return image, self.labels[i]

    def is_decoded(self, i: int) -> bool:
        return i in self._decoded

    def masks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.trimaps is None:
            return super().masks(i)
        path = self.trimaps[i]
        try:
            # The trimap lies over the image's stored pixels: it turns upright with them.
            with Image.open(self.files[i]) as image:
                turn = orientation(image)
            with Image.open(path) as im:
                tri = np.asarray(upright(im.resize((self.size, self.size), Image.Resampling.NEAREST), turn))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"{path}: cannot read the trimap ({exc})") from None
        obj = (tri != 2).astype(np.float32)  # 1 = pet, 3 = its border, 2 = background
        return obj, np.zeros((0, self.size, self.size), np.float32)


def _find(root: Path, inner: str, marker: str, layout: str, name: str) -> Path:
    if not root.is_dir():
        raise DatasetError(f"data.root: {root} is not a folder; {name}: {layout}")
    for base in (root / inner, root):
        if (base / marker).exists():
            return base
    raise DatasetError(f"data.root: {root} holds no {inner}/{marker}; {name}: {layout}")


def pets_breed_name(image_id: str) -> str:
    """``american_pit_bull_terrier_12`` -> ``American Pit Bull Terrier`` (torchvision's naming)."""
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def load_pets(root: str | Path, size: int, split: str = "trainval") -> tuple[FileImages, tuple[str, ...]]:
    """Oxford-IIIT Pet (the ``trainval`` list, or ``test``) with trimaps as object masks; 37 breeds."""
    base = _find(Path(root), "oxford-iiit-pet", "annotations/trainval.txt", PETS_LAYOUT, "pets")
    listing = base / "annotations" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"data.root: {root} holds no annotations/{split}.txt; {PETS_LAYOUT}")
    files: list[Path] = []
    labels: list[int] = []
    trimaps: list[Path] = []
    names: dict[int, str] = {}
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        try:
            image_id, class_id = fields[0], int(fields[1]) - 1
        except (IndexError, ValueError):
            raise DatasetError(f"{listing}:{lineno}: cannot parse {line!r}; {PETS_LAYOUT}") from None
        image, trimap = (
            base / "images" / f"{image_id}.jpg",
            base / "annotations" / "trimaps" / f"{image_id}.png",
        )
        for path in (image, trimap):
            if not path.is_file():
                raise DatasetError(f"{listing}:{lineno}: {path} is missing; {PETS_LAYOUT}")
        files.append(image)
        trimaps.append(trimap)
        labels.append(class_id)
        names.setdefault(class_id, pets_breed_name(image_id))
    if not files:
        raise DatasetError(f"{listing}: lists no images; {PETS_LAYOUT}")
    if sorted(names) != list(range(len(names))):
        raise DatasetError(
            f"{listing}: class ids must run 1..K without gaps, found {sorted(k + 1 for k in names)}"
        )
    class_names = tuple(names[k] for k in range(len(names)))
    check_headers(files + trimaps)
    return FileImages(files, labels, size, trimaps), class_names


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: plain containers and numpy arrays only, never arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc}); {CIFAR_LAYOUT}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (a {type(obj).__name__}); {CIFAR_LAYOUT}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_cifar10(root: str | Path, size: int, split: str = "train") -> tuple[TensorImages, tuple[str, ...]]:
    """CIFAR-10's training batches (python-pickle layout; ``split="test"``: its test batch), resized to
    ``size``; no masks."""
    base = _find(Path(root), "cifar-10-batches-py", "batches.meta", CIFAR_LAYOUT, "cifar10")
    meta = _unpickle(base / "batches.meta")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", []))
    pattern = "data_batch_*" if split == "train" else "test_batch"
    batches = sorted(base.glob(pattern))
    if not batches:
        raise DatasetError(f"{base}: no {pattern} files; {CIFAR_LAYOUT}")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for path in batches:
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise DatasetError(f"{path}: a batch needs keys 'data' and 'labels', found {sorted(batch)}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch["labels"]) != len(data):
            raise DatasetError(f"{path}: 'data' must be (N, 3072) uint8 with N labels, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(int(v) for v in batch["labels"])
    arr = np.concatenate(images)  # (N, 32, 32, 3)
    if not names:
        names = tuple(str(i) for i in range(max(labels) + 1))
    if max(labels) >= len(names) or min(labels) < 0:
        raise DatasetError(
            f"{base}: labels run {min(labels)}..{max(labels)} but batches.meta names {len(names)}"
        )
    if size != 32:
        t = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        arr = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return TensorImages(arr, np.asarray(labels)), names


def split_folders(root: Path) -> dict[str, Path] | None:
    """The split folders of an ImageFolder tree laid out ``ROOT/train/<class>/...``, ``ROOT/val/<class>/...``
    (by split: ``train``, ``val``, ``test``), or None for a ``ROOT/<class>/...`` tree. A tree is split when its
    folders are all split names (:data:`SPLIT_FOLDERS`, any case) and one of them is ``train``."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    kinds = [SPLIT_FOLDERS.get(p.name.lower()) for p in folders]
    if "train" not in kinds or None in kinds:
        return None
    found: dict[str, Path] = {}
    for folder, kind in zip(folders, kinds, strict=True):
        assert kind is not None
        if kind in found:
            raise DatasetError(
                f"data.root: {root} holds two {kind} folders, {found[kind].name} and {folder.name}; keep one"
            )
        found[kind] = folder
    return found


def class_key(name: str) -> str:
    """A class name as :func:`load_labelled_folder` matches folders to it: case, ``_`` and ``-`` aside
    (``american_pit_bull_terrier`` is Pets' ``American Pit Bull Terrier``)."""
    return " ".join(re.split(r"[\s_-]+", name.casefold())).strip()


def _class_tree(
    root: Path,
    known: tuple[str, tuple[str, ...]] | None = None,
    what: str = "data.root",
    key: Callable[[str], str] = str,
) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files of ``ROOT/<class>/...``, their labels and the sorted class names; with ``known`` (who
    has the classes: the train folder of a tree split in folders, a trained model; and its classes), labels
    follow those classes, a class folder being the one whose name has the class's ``key``, and a class folder
    they do not have is refused. ``what`` names ``root`` in errors."""
    if not root.is_dir():
        raise DatasetError(f"{what}: {root} is not a folder; {IMAGEFOLDER_LAYOUT}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = tuple(found) if known is None else known[1]
    folder_of: dict[str, str] = {}
    for folder in found:
        if key(folder) in folder_of:
            raise DatasetError(
                f"{what}: {root}: folders {folder_of[key(folder)]} and {folder} name one class"
            )
        folder_of[key(folder)] = folder
    keys = {key(n) for n in names}
    unknown = [c for c in found if key(c) not in keys]
    if known is not None and unknown:
        raise DatasetError(
            f"{what}: {root} has class folders that {known[0]} does not have: {', '.join(unknown)}; "
            f"the classes are: {', '.join(names)}"
        )
    files: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(names):
        if key(name) not in folder_of:
            continue
        base = root / folder_of[key(name)]
        images = sorted(p for p in base.rglob("*") if is_image_file(p, base))
        files.extend(images)
        labels.extend([k] * len(images))
    if not found or not files:
        raise DatasetError(
            f"{what}: {root} holds no class folders with images; imagefolder: {IMAGEFOLDER_LAYOUT}"
        )
    counts = np.bincount(labels, minlength=len(names))
    empty = [folder_of[key(c)] for k, c in enumerate(names) if key(c) in folder_of and counts[k] == 0]
    if empty:
        raise DatasetError(
            f"{what}: {root}: class folders without images: {', '.join(empty)}; {IMAGEFOLDER_LAYOUT}"
        )
    return files, labels, names


def load_imagefolder(root: str | Path, size: int) -> tuple[FileImages, tuple[str, ...], np.ndarray | None]:
    """Any ``ROOT/<class>/<image>`` tree, class ids following the sorted folder names; the third value is None
    (the set is split by ``data.val_fraction``). A tree split in folders (:func:`split_folders`) gives its
    ``train`` and ``val`` images, classes from ``train``, and the indices of the ``val`` ones as the third value
    (None where there is no ``val`` folder); its ``test`` folder is not read (:func:`imagefolder_test`)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data.root: {root} is not a folder; imagefolder: {IMAGEFOLDER_LAYOUT}")
    splits = split_folders(root)
    if splits is None:
        files, labels, classes = _class_tree(root)
        val_idx = None
    else:
        files, labels, classes = _class_tree(splits["train"])
        val_idx = None
        if "val" in splits:
            val_files, val_labels, _ = _class_tree(splits["val"], (str(splits["train"]), classes))
            val_idx = np.arange(len(files), len(files) + len(val_files))
            files, labels = files + val_files, labels + val_labels
    check_headers(files)
    return FileImages(files, labels, size), classes, val_idx


def load_labelled_folder(
    folder: str | Path, size: int, classes: tuple[str, ...], what: str, whose: str
) -> FileImages:
    """The images of a ``FOLDER/<class>/<image>`` tree labelled by ``classes`` (``whose`` they are: the model),
    for evaluation; a folder names a class whatever its case, ``_`` or ``-`` (:func:`class_key`); a class folder
    not among them is refused, a class without a folder is fine."""
    files, labels, _ = _class_tree(Path(folder), (whose, classes), what, class_key)
    check_headers(files)
    return FileImages(files, labels, size)


def imagefolder_test(root: str | Path) -> Path | None:
    """The ``test`` folder of an ImageFolder tree split in folders (never read in training), or None."""
    root = Path(root)
    splits = split_folders(root) if root.is_dir() else None
    return splits.get("test") if splits else None
