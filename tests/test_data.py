from __future__ import annotations

import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tune_attn.config import DataConfig
from tune_attn.data import (
    DatasetError,
    build_data,
    find_test_split,
    held_out,
    iterate_batches,
    split_indices,
    synthetic,
)
from tune_attn.data.base import AttnDataset
from tune_attn.data.folders import load_cifar10, load_imagefolder, load_pets, load_rgb, pets_breed_name


# ---- the embedded synthetic set -----------------------------------------------------------------------
def test_synthetic_is_deterministic_per_seed() -> None:
    a, b, c = (
        synthetic.generate(40, 32, seed=3),
        synthetic.generate(40, 32, seed=3),
        synthetic.generate(40, 32, 4),
    )
    for f in ("images", "labels", "objects", "parts"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_synthetic_shapes_and_masks(size: int) -> None:
    arr = synthetic.generate(64, size, seed=0)
    assert arr.images.shape == (64, size, size, 3) and arr.images.dtype == np.uint8
    assert arr.parts.shape == (64, len(synthetic.PART_NAMES), size, size)
    assert arr.labels.min() >= 0 and arr.labels.max() < len(synthetic.CLASS_NAMES)
    # Every part lies inside the object, every part is drawn in every image, and the object is a small
    # share of the image (so attention has something to find).
    assert np.all(arr.parts <= arr.objects[:, None])
    assert (arr.parts.sum(axis=(2, 3)) > 0).all()
    area = arr.objects.mean(axis=(1, 2))
    assert 0.02 < area.mean() < 0.2
    # The background is cluttered: the pixels outside the object are not one colour.
    bg = arr.images[0][arr.objects[0] == 0]
    assert bg.std() > 10


def test_synthetic_classes_are_part_combinations() -> None:
    assert len(synthetic.CLASS_NAMES) == 18
    ear, pat, tail = np.meshgrid(np.arange(3), np.arange(3), np.arange(2), indexing="ij")
    ids = synthetic.class_index(ear.ravel(), pat.ravel(), tail.ravel())
    assert sorted(ids.tolist()) == list(range(18))
    assert synthetic.CLASS_NAMES[int(synthetic.class_index(np.array(2), np.array(1), np.array(0)))] == (
        "floppy-striped-long"
    )
    labels = synthetic.generate(900, 32, seed=1).labels
    counts = np.bincount(labels, minlength=18)
    assert counts.min() > 20  # every class is drawn


def test_synthetic_parts_differ_by_class() -> None:
    """Ear area depends on the ear kind, tail area on the tail kind: the attributes are really drawn."""
    arr = synthetic.generate(600, 64, seed=2)
    ear_kind = arr.labels // 6
    tail_kind = arr.labels % 2
    ear_area = arr.parts[:, 0].mean(axis=(1, 2)) / arr.objects.mean(axis=(1, 2))
    tail_area = arr.parts[:, 3].mean(axis=(1, 2)) / arr.objects.mean(axis=(1, 2))
    means = [ear_area[ear_kind == k].mean() for k in range(3)]
    assert len({round(m, 3) for m in means}) == 3
    assert tail_area[tail_kind == 0].mean() != pytest.approx(tail_area[tail_kind == 1].mean(), rel=0.05)


def test_synthetic_cache_is_reused(tmp_path: Path) -> None:
    first = synthetic.load_or_generate(20, 32, 0, tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = synthetic.load_or_generate(20, 32, 0, tmp_path)
    np.testing.assert_array_equal(first.images, again.images)
    assert files[0].stat().st_mtime_ns == mtime
    files[0].write_bytes(b"broken")  # a corrupt cache file is regenerated, not trusted
    np.testing.assert_array_equal(synthetic.load_or_generate(20, 32, 0, tmp_path).images, first.images)


def test_synthetic_bad_sizes() -> None:
    with pytest.raises(ValueError, match="32 to 128"):
        synthetic.generate(4, 16)
    with pytest.raises(ValueError, match="at least one"):
        synthetic.generate(0, 32)


def test_build_synthetic_split_and_batches() -> None:
    splits = build_data(DataConfig(num_train=50, num_val=20, image_size=32, seed=5))
    assert len(splits.train) == 50 and len(splits.val) == 20 and splits.num_classes == 18
    assert splits.val.part_names == synthetic.PART_NAMES and splits.val.has_object_masks
    obj, parts = splits.val.masks(0)
    assert obj.shape == (32, 32) and parts.shape == (4, 32, 32)
    # The validation set does not change with the training-set size.
    other = build_data(DataConfig(num_train=80, num_val=20, image_size=32, seed=5))
    torch.testing.assert_close(splits.val[3][0], other.val[3][0])
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(splits.train, 16, shuffle=True, generator=g))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape == (16, 3, 32, 32)
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(splits.train.labels.tolist())


def test_split_indices_is_seeded_and_disjoint() -> None:
    labels = np.arange(100) % 4
    tr, va = split_indices(labels, 0.2, seed=1)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    assert sorted([*tr, *va]) == list(range(100))
    tr2, va2 = split_indices(labels, 0.2, seed=1)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, split_indices(labels, 0.2, seed=2)[1])
    assert len(split_indices([0, 0, 0], 0.01, 0)[1]) == 1  # never an empty validation set


@pytest.mark.parametrize("seed", range(8))
def test_split_indices_validates_every_class_in_its_proportion(seed: int) -> None:
    # 30 cats, 30 dogs, 6 rabbits at 10 %: an unstratified split left the rabbits out of validation for
    # half of these seeds, so no accuracy said whether the model could tell a rabbit.
    labels = np.array([0] * 30 + [1] * 30 + [2] * 6)
    tr, va = split_indices(labels, 0.1, seed)
    assert np.bincount(labels[va]).tolist() == [3, 3, 1]
    assert np.bincount(labels[tr]).tolist() == [27, 27, 5]
    # a class of one image stays in training (it cannot be on both sides); one of two gives one
    tr, va = split_indices([0] * 10 + [1] + [2] * 2, 0.1, seed)
    assert va.tolist().count(10) == 0 and len(va) == 2 and {11, 12} & set(va.tolist())


# ---- real sets from local folders (tiny fake copies in the real layouts) -------------------------------
def _jpg(path: Path, colour: tuple[int, int, int], size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 6), colour).save(path)


def make_fake_pets(root: Path, per_class: int = 3, test_per_class: int = 0) -> Path:
    base = root / "oxford-iiit-pet"
    lines: list[str] = []
    tests: list[str] = []
    for cls, breed in enumerate(["Abyssinian", "american_bulldog", "great_pyrenees"], 1):
        for i in range(1, per_class + test_per_class + 1):
            image_id = f"{breed}_{i}"
            _jpg(base / "images" / f"{image_id}.jpg", (40 * cls, 20, 200))
            tri = np.full((46, 40), 2, np.uint8)
            tri[10:30, 10:30] = 1
            tri[9, 10:30] = 3
            (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
            Image.fromarray(tri).save(base / "annotations" / "trimaps" / f"{image_id}.png")
            (lines if i <= per_class else tests).append(f"{image_id} {cls} {1 + (cls > 1)} {i}")
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    if tests:
        (base / "annotations" / "test.txt").write_text("\n".join(tests) + "\n")
    return root


def test_pets_loader_reads_images_labels_and_trimaps(tmp_path: Path) -> None:
    root = make_fake_pets(tmp_path)
    ds, names = load_pets(root, 32)
    assert names == ("Abyssinian", "American Bulldog", "Great Pyrenees")
    assert len(ds) == 9 and sorted(set(ds.labels)) == [0, 1, 2]
    img, label = ds[4]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and label == 1
    obj, parts = ds.masks(0)
    assert obj.shape == (32, 32) and parts.shape[0] == 0
    assert 0.15 < obj.mean() < 0.4  # the 20 x 20 square (+ border) of 40 x 46
    # Through build_data, with the seeded split, pointing at the inner folder works too.
    splits = build_data(
        DataConfig(name="pets", root=str(root / "oxford-iiit-pet"), image_size=32, val_fraction=0.3)
    )
    assert len(splits.train) + len(splits.val) == 9 and len(splits.val) == 3
    assert splits.val.has_object_masks and splits.val.masks(0)[0].shape == (32, 32)
    assert pets_breed_name("american_pit_bull_terrier_12") == "American Pit Bull Terrier"


def _sideways(path: Path, upright: np.ndarray, turn: int = 6) -> None:
    """Save ``upright`` (H, W, 3) as a phone does when it is held sideways: the pixels as the sensor has them
    (turned a quarter), and an EXIF orientation that tells viewers to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = turn  # 6: turn the stored pixels 90 degrees clockwise to show them
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)


def test_photos_load_as_viewers_show_them_upright_16_bit_grey_too_and_trimaps_turn_alike(
    tmp_path: Path,
) -> None:
    # A red top half over a blue bottom half, stored sideways with EXIF orientation 6.
    photo = np.zeros((48, 36, 3), np.uint8)
    photo[:24] = (255, 0, 0)
    photo[24:] = (0, 0, 255)
    root = make_fake_pets(tmp_path, per_class=1)
    image = root / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg"
    _sideways(image, photo)
    # Its trimap lies over the stored (sideways) pixels: the pet is the stored left half, the shown top half.
    tri = np.full((36, 48), 2, np.uint8)
    tri[:, :24] = 1
    Image.fromarray(tri).save(root / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_1.png")
    ds, _ = load_pets(root, 16)
    i = [f.name for f in ds.files].index("Abyssinian_1.jpg")
    img = ds[i][0].permute(1, 2, 0).numpy().astype(int)  # (16, 16, 3)
    assert (img[:6, :, 0] > 200).all() and (img[:6, :, 2] < 60).all()  # red on top, as shown
    assert (img[-6:, :, 2] > 200).all() and (img[-6:, :, 0] < 60).all()  # blue at the bottom
    obj = ds.masks(i)[0]
    assert obj[:8].mean() == 1.0 and obj[8:].mean() == 0.0  # the pet's mask on the top half with it
    # All eight orientations: as PIL's exif_transpose shows them (to within a unit of rounding).
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (30, 20, 3), dtype=np.uint8))
    for turn in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = turn
        pixels.save(tmp_path / f"o{turn}.png", exif=exif.tobytes())
        with Image.open(tmp_path / f"o{turn}.png") as im:
            shown = ImageOps.exif_transpose(im).resize((12, 12), Image.Resampling.BILINEAR)
        got = load_rgb(tmp_path / f"o{turn}.png", 12).permute(1, 2, 0).numpy().astype(int)
        assert np.abs(got - np.asarray(shown, dtype=int)).max() <= 1, turn
    # A large JPEG photo is decoded at a fraction of its scale (draft): the same picture, to a unit or two.
    smooth = Image.fromarray(np.random.default_rng(1).integers(0, 255, (15, 20, 3), dtype=np.uint8))
    smooth.resize((2000, 1500), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=90)
    with Image.open(tmp_path / "big.jpg") as im:
        full = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=int)
    drafted = load_rgb(tmp_path / "big.jpg", 64).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(drafted - full).mean() < 3 and np.abs(drafted - full).max() < 32  # 1.4 and 11 here (of 255)
    # A 16-bit grey PNG reads as its 8-bit grey, not clipped to white.
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    grey = load_rgb(tmp_path / "grey16.png", 8).numpy().astype(int)  # (3, 8, 8)
    assert grey[0, 0, 0] < 30 and grey[0, -1, -1] > 225 and 100 < grey.mean() < 155  # (clipped: all 255)
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()
    # A transparent background reads as white, as viewers show it, whatever colour its pixels hold (here red).
    cutout = np.zeros((16, 16, 4), np.uint8)
    cutout[..., 0] = 255  # every pixel red ...
    cutout[4:12, 4:12] = (0, 0, 255, 255)  # ... an opaque blue square, the rest transparent
    cutout[0, 0, 3] = 128  # a half-transparent red corner pixel: red over white
    Image.fromarray(cutout, "RGBA").save(tmp_path / "cutout.png")
    palette = Image.fromarray((cutout[..., 2] > 0).astype(np.uint8), "P")  # index 0 red, 1 blue (the square)
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.save(tmp_path / "palette.png", transparency=0)  # index 0 transparent
    rgb = load_rgb(tmp_path / "cutout.png", 16).permute(1, 2, 0).numpy()  # (16, 16, 3)
    assert (rgb[6, 6] == (0, 0, 255)).all() and (rgb[15, 15] == (255, 255, 255)).all()  # PIL alone: red
    assert rgb[0, 0].tolist() == [255, 127, 127]
    rgb = (
        load_rgb(tmp_path / "palette.png", 16).permute(1, 2, 0).numpy()
    )  # a palette with a transparent colour
    assert (rgb[6, 6] == (0, 0, 255)).all() and (rgb[15, 15] == (255, 255, 255)).all()


def test_image_files_are_decoded_once_while_they_fit_the_memory_cache(tmp_path: Path) -> None:
    root = make_fake_pets(tmp_path)
    images = root / "oxford-iiit-pet" / "images"
    first, second = images / "Abyssinian_1.jpg", images / "Abyssinian_2.jpg"
    one_image = 3 * 32 * 32

    def repaint() -> None:  # new pixels on disk: a read that decodes again sees them
        for path in (first, second):
            Image.new("RGB", (40, 46), (255, 255, 255)).save(path)

    ds, _ = load_pets(root, 32)
    assert ds.cache_bytes == 0  # the loader alone keeps nothing
    before = ds[0][0].clone()
    repaint()
    assert not torch.equal(ds[0][0], before)

    make_fake_pets(tmp_path)  # the original pixels back
    ds, _ = load_pets(root, 32)
    ds.keep_decoded(one_image)  # room for one image: the first one read
    kept, decoded = ds[0][0].clone(), ds[1][0].clone()
    repaint()
    assert torch.equal(ds[0][0], kept)  # from memory
    assert not torch.equal(ds[1][0], decoded)  # over the limit: decoded again
    ds.keep_decoded(0)
    assert not torch.equal(ds[0][0], kept)

    make_fake_pets(tmp_path)
    splits = build_data(DataConfig(name="pets", root=str(root), image_size=32, memory_cache_mb=1))
    train = [splits.train[i][0].clone() for i in range(len(splits.train))]
    repaint()
    assert all(torch.equal(splits.train[i][0], x) for i, x in enumerate(train))  # 1 MiB holds all nine
    with pytest.raises(ValueError, match=r"data.memory_cache_mb: -1 is out of range"):
        DataConfig(name="pets", root=str(root), memory_cache_mb=-1)


def test_the_next_data_set_of_the_same_files_starts_with_the_images_kept(tmp_path: Path) -> None:
    """A sweep's next trial in a reused process (same files, unchanged on disk, same size) reads the images
    the trial before decoded; other sizes, or files changed on disk, are decoded again."""
    import os

    files = []
    for k, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for stem in "ab":
            files.append(tmp_path / name / f"{stem}.bmp")  # a BMP's byte size does not depend on its pixels
            Image.new("RGB", (40, 40), (10 + k, 20, 30)).save(files[-1])

    def repaint(grey: int, keep_stamp: bool) -> None:  # new pixels, the same byte size on disk
        for path in files:
            st = path.stat()
            Image.new("RGB", (40, 40), (grey, grey, grey)).save(path)
            assert path.stat().st_size == st.st_size
            later = 0 if keep_stamp else 10**9  # the same mtime, or one second later (an edit)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + later))

    def read(size: int, cache_mb: int = 1) -> list[torch.Tensor]:
        cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=size, memory_cache_mb=cache_mb)
        splits = build_data(cfg)
        return [ds[i][0] for ds in (splits.train, splits.val) for i in range(len(ds))]

    first = read(32)
    repaint(200, keep_stamp=True)
    assert all(torch.equal(a, b) for a, b in zip(read(32), first, strict=True))  # kept: not decoded again
    assert all(int(x[0, 0, 0]) == 200 for x in read(16))  # another size: decoded, the new pixels
    assert all(int(x[0, 0, 0]) == 200 for x in read(32, cache_mb=0))  # nothing kept: decoded
    assert all(int(x[0, 0, 0]) == 200 for x in read(32))  # kept now
    repaint(90, keep_stamp=False)
    assert all(int(x[0, 0, 0]) == 90 for x in read(32))  # changed on disk: decoded again


class _Reads(AttnDataset):
    """A data set read through: which threads read its images."""

    def __init__(self, inner: AttnDataset) -> None:
        self.inner, self.threads = inner, set()

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.threads.add(threading.current_thread().name.split("_")[0])
        return self.inner[i]

    def is_decoded(self, i: int) -> bool:
        return self.inner.is_decoded(i)


def test_a_run_with_several_cpus_decodes_its_image_files_in_as_many_threads_to_the_same_batches(
    tmp_path: Path,
) -> None:
    # A trial given several CPUs (--cpus-per-trial, torch's threads) decodes a batch's files in as many threads,
    # the next batch while it trains on this one: the same images, labels and order as one thread reads.
    rng = np.random.default_rng(0)
    for k in range(23):
        path = tmp_path / f"class{k % 3}" / f"{k}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30 + k, 40, 3), dtype=np.uint8)).save(path)
    ds, _, _ = load_imagefolder(tmp_path, 20)
    expected = [ds[i] for i in range(len(ds))]
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            reads = _Reads(ds)
            gen = torch.Generator().manual_seed(5)
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(5)).tolist()
            batches = list(iterate_batches(reads, 4, shuffle=True, generator=gen))
            assert [len(y) for _, y in batches] == [4, 4, 4, 4, 4, 3]
            images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
            assert images.dtype == torch.uint8 and labels.dtype == torch.int64
            assert all(torch.equal(images[j], expected[i][0]) for j, i in enumerate(order))
            assert labels.tolist() == [expected[i][1] for i in order]
            assert reads.threads == ({"MainThread"} if n == 1 else {"tune-attn-decode"}), reads.threads

        # With a memory limit the threads keep exactly what fits, and a set all in memory is read in this
        # thread (no pool to start: nothing to decode).
        ds.keep_decoded(5 * 3 * 20 * 20)
        list(iterate_batches(ds, 4, shuffle=False))
        assert sum(ds.is_decoded(i) for i in range(len(ds))) == 5
        ds.keep_decoded(2**20)
        list(iterate_batches(ds, 4, shuffle=False))
        reads = _Reads(ds)
        again = list(iterate_batches(reads, 4, shuffle=False))
        assert reads.threads == {"MainThread"}
        assert all(torch.equal(x, expected[i][0]) for i, x in enumerate(torch.cat([x for x, _ in again])))
    finally:
        torch.set_num_threads(threads)


def test_pets_errors_say_what_layout_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="(?s)is not a folder.*trainval.txt"):
        load_pets(tmp_path / "nowhere", 32)
    with pytest.raises(DatasetError, match="holds no oxford-iiit-pet/annotations/trainval.txt"):
        load_pets(tmp_path, 32)
    root = make_fake_pets(tmp_path / "p")
    (root / "oxford-iiit-pet" / "images" / "american_bulldog_2.jpg").unlink()
    with pytest.raises(DatasetError, match=r"trainval.txt:5: .*american_bulldog_2.jpg is missing"):
        load_pets(root, 32)
    listing = tmp_path / "q" / "oxford-iiit-pet" / "annotations" / "trainval.txt"
    make_fake_pets(tmp_path / "q")
    listing.write_text("Abyssinian_1 one 1 1\n")
    with pytest.raises(DatasetError, match="trainval.txt:1: cannot parse"):
        load_pets(tmp_path / "q", 32)
    # A trimap that is no image (a truncated copy left it empty) is refused at once, named.
    root = make_fake_pets(tmp_path / "r")
    (root / "oxford-iiit-pet" / "annotations" / "trimaps" / "great_pyrenees_3.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"1 of 18 files are not readable images: .*great_pyrenees_3\.png"):
        load_pets(root, 32)


def make_fake_cifar(root: Path, per_batch: int = 4) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [
        n.encode()
        for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    ]
    with (base / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, fh)
    for i in range(1, 6):
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"batch_label": b"fake",
        }
        with (base / f"data_batch_{i}").open("wb") as fh:
            pickle.dump(batch, fh)
    test = {
        b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
        b"labels": [3, 5, 3, 0][:per_batch],
    }
    with (base / "test_batch").open("wb") as fh:
        pickle.dump(test, fh)
    return root


def test_cifar10_loader(tmp_path: Path) -> None:
    root = make_fake_cifar(tmp_path)
    ds, names = load_cifar10(root, 32)
    assert names[0] == "airplane" and len(names) == 10 and len(ds) == 20
    with (root / "cifar-10-batches-py" / "data_batch_1").open("rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    img, label = ds[0]
    # The python layout is planar: R plane, G plane, B plane of 32 x 32.
    np.testing.assert_array_equal(img.numpy(), raw[b"data"][0].reshape(3, 32, 32))
    assert label == raw[b"labels"][0]
    big, _ = load_cifar10(root / "cifar-10-batches-py", 64)
    assert big[0][0].shape == (3, 64, 64)
    splits = build_data(DataConfig(name="cifar10", root=str(root), image_size=32, val_fraction=0.25))
    assert len(splits.train) + len(splits.val) == 20 and not splits.val.has_object_masks
    counts = np.bincount(ds.labels.numpy(), minlength=10)
    val_labels = {splits.val[i][1] for i in range(len(splits.val))}
    assert val_labels == {c for c in range(10) if counts[c] >= 2}  # every class that can be is validated


def test_the_test_splits_of_pets_and_cifar10_are_read_for_evaluation_only(tmp_path: Path) -> None:
    pets = make_fake_pets(tmp_path / "pets", test_per_class=2)
    cfg = DataConfig(name="pets", root=str(pets), image_size=32)
    trained = build_data(cfg)
    assert find_test_split(cfg) == str(pets / "oxford-iiit-pet" / "annotations" / "test.txt")
    splits, where = held_out(cfg, trained.class_names)
    assert where == find_test_split(cfg) and len(splits.val) == 6 and splits.val.has_object_masks
    test_files = {p.name for p in splits.val.files}  # type: ignore[attr-defined]
    assert test_files == {
        f"{b}_{i}.jpg" for b in ("Abyssinian", "american_bulldog", "great_pyrenees") for i in (4, 5)
    }
    seen = {trained.train.parent.files[i].name for i in trained.train.indices + trained.val.indices}  # type: ignore[attr-defined]
    assert len(seen) == 9 and not seen & test_files  # never in training nor validation
    assert [splits.val[i][1] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DatasetError, match=r"test.txt: its classes \(Abyssinian, .*\) are not the model's"):
        held_out(cfg, trained.class_names[::-1])
    cifar = make_fake_cifar(tmp_path / "c")
    ccfg = DataConfig(name="cifar10", root=str(cifar), image_size=32)
    splits, where = held_out(ccfg, build_data(ccfg).class_names)
    assert where == str(cifar / "cifar-10-batches-py" / "test_batch")
    with (cifar / "cifar-10-batches-py" / "test_batch").open("rb") as fh:
        raw = pickle.load(fh)
    assert [splits.val[i][1] for i in range(4)] == raw[b"labels"]
    np.testing.assert_array_equal(splits.val[1][0].numpy(), raw[b"data"][1].reshape(3, 32, 32))
    # Without a test split: None, and evaluating on one says what is missing and what to do
    bare = DataConfig(name="pets", root=str(make_fake_pets(tmp_path / "bare")), image_size=32)
    assert find_test_split(bare) is None
    with pytest.raises(
        DatasetError, match=r"no test split here .*; name a folder of labelled images with --on"
    ):
        held_out(bare, trained.class_names)


def test_cifar10_refuses_code_in_pickles_and_bad_layouts(tmp_path: Path) -> None:
    root = make_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (eval, ("print('pwned')",))  # not print: an in-process Ray swaps builtins.print

    with (root / "cifar-10-batches-py" / "data_batch_2").open("wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(DatasetError, match="refusing to load builtins.eval"):
        load_cifar10(root, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no cifar-10-batches-py/batches.meta"):
        load_cifar10(tmp_path / "empty", 32)
    with pytest.raises(DatasetError, match="is not a folder"):
        load_cifar10(tmp_path / "missing", 32)


def test_imagefolder_loader(tmp_path: Path) -> None:
    for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 200, 0))):
        for i in range(3):
            _jpg(tmp_path / cls / f"{i}.png", colour)
    (tmp_path / "notes.txt").write_text("ignored")
    # Hidden files are no data: a Mac's AppleDouble file beside each photo copied from it (no image, but
    # named .jpg), a notebook's checkpoints folder, a hidden class folder.
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    _jpg(tmp_path / "dog" / ".ipynb_checkpoints" / "0-checkpoint.png", (0, 0, 0))
    _jpg(tmp_path / ".trash" / "0.png", (0, 0, 0))
    # Nor are the overlays `tune-attn predict` writes beside each image it was given (a folder of the set).
    _jpg(tmp_path / "cat" / "0.attention.png", (0, 0, 200))
    # A GIF (a palette image, here animated) is an image too: its first frame, green for a dog.
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((0, 200, 0), (200, 0, 200))]
    frames[0].save(tmp_path / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    ds, names, val_idx = load_imagefolder(tmp_path, 32)
    assert names == ("cat", "dog") and len(ds) == 7 and val_idx is None
    gif = [f.name for f in ds.files].index("anim.gif")
    first = ds[gif][0].float().mean(dim=(1, 2))  # (3,)
    assert ds[gif][1] == 1 and first[1] > 150 and first[0] < 50 and first[2] < 50
    img, label = ds[6]
    assert label == 1 and img.shape == (3, 32, 32) and int(img[1].float().mean()) > 150
    splits = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=32, val_fraction=0.34))
    xb, yb = next(iterate_batches(splits.train, 8, shuffle=False))
    assert xb.shape == (5, 3, 32, 32)  # 7 images, one of each class validated


def test_an_imagefolder_tree_split_in_folders_validates_on_its_val_folder(tmp_path: Path) -> None:
    # The layout most photo sets come in: ROOT/train/<class>/..., ROOT/val/<class>/... (read as a tree of
    # classes, its classes were "train" and "val"). Any case; val also valid or validation; test is not read.
    colours = {"bird": (0, 0, 200), "cat": (200, 0, 0), "dog": (0, 200, 0)}
    for split, n in (("Train", 4), ("valid", 2), ("test", 3)):
        for cls, colour in colours.items():
            if split == "valid" and cls == "bird":
                continue  # a class the validation folder lacks is fine
            for i in range(n):
                _jpg(tmp_path / split / cls / f"{i}.png", colour)
    ds, names, val_idx = load_imagefolder(tmp_path, 32)
    assert names == ("bird", "cat", "dog") and len(ds) == 12 + 4
    assert val_idx is not None and val_idx.tolist() == list(range(12, 16))
    assert [f.parent.parent.name for f in ds.files] == ["Train"] * 12 + ["valid"] * 4
    assert [ds.labels[i] for i in val_idx] == [1, 1, 2, 2]
    splits = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=32, val_fraction=0.5))
    assert (len(splits.train), len(splits.val), splits.info["val"]) == (12, 4, "its val folder")
    # told (tune-attn train prints it): its accuracy is never measured
    assert splits.info["unvalidated"] == "bird"
    val_labels = [splits.val[i][1] for i in range(len(splits.val))]
    assert val_labels == [1, 1, 2, 2] and int(splits.val[2][0][1].float().mean()) > 150  # dog: green
    # Without a val folder, the validation images are a val_fraction share of train's; test stays unread.
    shutil.rmtree(tmp_path / "valid")
    ds, _, val_idx = load_imagefolder(tmp_path, 32)
    assert val_idx is None and len(ds) == 12 and {f.parent.parent.name for f in ds.files} == {"Train"}
    splits = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=32, val_fraction=0.25))
    assert (len(splits.train), len(splits.val), "val" in splits.info) == (9, 3, False)
    assert "unvalidated" not in splits.info  # every class gives one of its 4
    # A validation class that train does not have, or two validation folders, are refused, named.
    _jpg(tmp_path / "val" / "fish" / "0.png", (9, 9, 9))
    with pytest.raises(
        DatasetError,
        match=r"val has class folders that .*Train does not have: fish; the classes are: bird, cat, dog",
    ):
        load_imagefolder(tmp_path, 32)
    (tmp_path / "val" / "fish" / "0.png").rename(tmp_path / "val" / "fish.png")
    (tmp_path / "val" / "fish").rmdir()
    _jpg(tmp_path / "validation" / "cat" / "0.png", (200, 0, 0))
    with pytest.raises(DatasetError, match="holds two val folders, val and validation; keep one"):
        load_imagefolder(tmp_path, 32)
    # A folder that is no split name beside train: a tree of classes, "Train" one of them.
    shutil.rmtree(tmp_path / "validation")
    shutil.rmtree(tmp_path / "val")
    _jpg(tmp_path / "cat" / "0.png", (200, 0, 0))
    _, names, val_idx = load_imagefolder(tmp_path, 32)
    assert names == ("Train", "cat", "test") and val_idx is None


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="(?s)holds no class folders with images.*ROOT/<class name>"):
        load_imagefolder(tmp_path, 32)
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    _jpg(tmp_path / "cat" / "a.jpg", (1, 2, 3))
    with pytest.raises(DatasetError, match="class folders without images: dog"):
        load_imagefolder(tmp_path, 32)
    # Files that are no images (a web page saved as .jpg, an empty file) are refused at once, all named.
    (tmp_path / "dog" / "b.jpg").write_bytes(b"<html>not found</html>")
    (tmp_path / "dog" / "c.png").write_bytes(b"")
    with pytest.raises(
        DatasetError,
        match=r"2 of 3 files are not readable images: .*dog/b\.jpg \(not an image\); .*dog/c\.png",
    ):
        load_imagefolder(tmp_path, 32)
    # An image damaged after its header is found when it is read, named as well.
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "dog" / "b.jpg")
    (tmp_path / "dog" / "c.png").unlink()
    whole = (tmp_path / "dog" / "b.jpg").read_bytes()
    (tmp_path / "dog" / "b.jpg").write_bytes(whole[: len(whole) // 2])
    ds, _, _ = load_imagefolder(tmp_path, 32)
    with pytest.raises(DatasetError, match=r"b\.jpg: cannot read the image"):
        ds[1]
