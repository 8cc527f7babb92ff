from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tune_attn import panels


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(float)


def test_mask_panel_draws_each_head_where_it_looks(tmp_path: Path) -> None:
    imgs = np.full((2, 32, 32, 3), 128, np.uint8)
    masks = np.zeros((2, 2, 4, 4))
    masks[:, 0, 0, 0] = 1.0  # head 0: top-left
    masks[:, 1, 3, 3] = 1.0  # head 1: bottom-right
    out = panels.mask_panel(imgs, masks, tmp_path / "p" / "epoch_001.png", "epoch 1 | val acc 0.5")
    assert out.is_file()
    pic = _load(out)
    assert pic.shape[0] > 150 and pic.shape[1] > 200
    # The picture differs between the two heads' columns: moving head 1's mask changes the image.
    masks2 = masks.copy()
    masks2[:, 1] = masks[:, 0]
    pic2 = _load(panels.mask_panel(imgs, masks2, tmp_path / "q.png", "epoch 1 | val acc 0.5"))
    assert np.abs(pic - pic2).mean() > 0.5
    assert not list(tmp_path.glob("p/.*tmp*"))  # no temporary file left
    # Colours run from 0 to each mask's highest value, so a shallow mask looks like a sharp one: the tile's
    # caption, its lowest and highest value, tells them apart.
    shallow = 0.74 + 0.11 * masks  # (2, 2, 4, 4): a sigmoid mask at 0.74 to 0.85
    pic3 = _load(panels.mask_panel(imgs, shallow, tmp_path / "r.png", "epoch 1 | val acc 0.5"))
    assert pic3.shape == pic.shape and np.abs(pic - pic3).mean() > 0.1  # the captions differ
    assert [panels.value_range(m) for m in shallow[0]] == ["0.74\u20130.85", "0.74\u20130.85"]
    assert panels.value_range(np.array([1.2e-3, 0.031])) == "0.0012\u20130.031"
    assert panels.value_range(np.array([5.8e-14, 0.15])) == "0\u20130.15"  # a softmax's lowest
    assert panels.value_range(np.zeros(3)) == "0\u20130"  # a dead mask


def test_timeline_and_curves(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    m = np.random.default_rng(1).random((3, 2, 4, 4))
    out = panels.timeline(img, m, [1, 2, 3], tmp_path / "timeline.png", "sample 0")
    w3 = _load(out).shape[1]
    out = panels.timeline(img, np.concatenate([m, m]), [1, 2, 3, 4, 5, 6], tmp_path / "timeline.png")
    w6 = _load(out).shape[1]
    assert w6 > w3  # one column per epoch
    # past max_columns the picture keeps its width: 6 epochs shown as 4 columns, as wide as 4 epochs
    out = panels.timeline(img, np.concatenate([m, m]), [1, 2, 3, 4, 5, 6], tmp_path / "t4.png", max_columns=4)
    w4 = _load(panels.timeline(img, np.concatenate([m, m[:1]]), [1, 2, 3, 4], tmp_path / "e4.png")).shape[1]
    assert _load(out).shape[1] == w4 < w6
    with pytest.raises(ValueError, match="max_columns: 1; expected at least 2"):
        panels.timeline(img, m, [1, 2, 3], tmp_path / "x.png", max_columns=1)
    hist = [
        {"epoch": e, "train_loss": 2 / e, "val_loss": 2.1 / e, "val_accuracy": 0.1 * e, "mask.entropy": 0.5}
        for e in (1, 2, 3)
    ]
    assert panels.curves(hist, tmp_path / "curves.png").is_file()


def test_timeline_columns_keep_the_first_and_latest_epoch_evenly_spread() -> None:
    assert panels.timeline_columns(3, 16) == [0, 1, 2]
    assert panels.timeline_columns(16, 16) == list(range(16))
    assert panels.timeline_columns(6, 4) == [0, 2, 3, 5]
    assert panels.timeline_columns(30, 16) == [0, 2, 4, 6, 8, 10, 12, 14, 15, 17, 19, 21, 23, 25, 27, 29]
    for n in range(2, 80):
        cols = panels.timeline_columns(n, 16)
        assert len(cols) == min(n, 16) and cols[0] == 0 and cols[-1] == n - 1 and cols == sorted(set(cols))


def test_large_images_are_shrunk_to_the_tile_before_drawing() -> None:
    big = np.random.default_rng(0).random((2, 224, 224, 3))
    small = panels._fit(big, panels.PANEL_CELL)
    side = round(panels.PANEL_CELL * panels.DPI)
    assert small.shape == (2, side, side, 3) and small.min() >= 0 and small.max() <= 1
    assert abs(small.mean() - big.mean()) < 0.01  # an average of the pixels, not a crop
    wide = panels._fit(np.ones((1, 100, 200, 3)), panels.TIMELINE_CELL)
    assert wide.shape == (1, 45, round(panels.TIMELINE_CELL * panels.DPI), 3)  # aspect kept
    tiny = np.zeros((1, 32, 32, 3))
    assert panels._fit(tiny, panels.PANEL_CELL) is tiny


def test_panel_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="to match the images"):
        panels.mask_panel(np.zeros((2, 8, 8, 3)), np.zeros((3, 1, 4, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="one per epoch"):
        panels.timeline(np.zeros((8, 8, 3)), np.zeros((2, 1, 4, 4)), [1, 2, 3], tmp_path / "x.png")
    # channels-first images are accepted
    assert panels.mask_panel(np.zeros((1, 3, 8, 8)), np.ones((1, 1, 2, 2)), tmp_path / "cf.png").is_file()
