from __future__ import annotations

import numpy as np
import pytest
import torch

from tune_attn.masks import mask_statistics, pool_to_grid, region_masks


def test_region_masks_8x8() -> None:
    r = region_masks(8, 8)
    assert r["corner"].sum() == 16 and r["corner"][0, 0] and r["corner"][7, 6] and not r["corner"][3, 3]
    assert r["border"].sum() == 28 and not r["border"][1, 1]


def test_flat_mask() -> None:
    s = mask_statistics(np.full((5, 1, 8, 8), 0.6)).summary
    assert s["mean"] == pytest.approx(0.6)
    assert s["contrast"] == pytest.approx(0.0)
    assert s["entropy"] == pytest.approx(1.0)
    assert s["corner_mass"] == pytest.approx(s["corner_uniform"]) == pytest.approx(0.25)
    assert s["border_mass"] == pytest.approx(28 / 64)
    assert s["peak_mass"] == pytest.approx(1 / 64)
    assert s["dead_fraction"] == 0.0
    assert s["input_variation"] == pytest.approx(0.0)


def test_corner_mask_and_point_mask() -> None:
    m = np.zeros((4, 1, 8, 8))
    m[:, :, :2, :2] = m[:, :, -2:, -2:] = m[:, :, :2, -2:] = m[:, :, -2:, :2] = 1.0
    s = mask_statistics(m).summary
    assert s["corner_mass"] == pytest.approx(1.0)
    assert s["corners_used"] == 4.0
    assert s["entropy"] == pytest.approx(np.log(16) / np.log(64))
    p = np.zeros((4, 1, 8, 8))
    p[:, :, 3, 4] = 5.0
    s = mask_statistics(p).summary
    assert s["peak_mass"] == pytest.approx(1.0)
    assert s["contrast"] == pytest.approx(1.0)
    assert s["entropy"] == pytest.approx(0.0, abs=1e-9)
    assert s["corner_mass"] == 0.0


def test_scale_free_across_activations() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 2, 8, 8))
    soft = np.exp(logits) / np.exp(logits).sum(axis=(2, 3), keepdims=True)
    a = mask_statistics(soft).summary
    b = mask_statistics(soft * 37.0).summary  # same shape of mask, another scale
    for key in (
        "contrast",
        "entropy",
        "corner_mass",
        "border_mass",
        "peak_mass",
        "input_variation",
        "head_overlap",
    ):
        assert a[key] == pytest.approx(b[key]), key
    assert b["mean"] == pytest.approx(37 * a["mean"])


def test_dead_static_and_head_overlap() -> None:
    m = np.zeros((3, 2, 4, 4))
    m[0, 0, 1, 1] = 1.0  # one live mask of six
    s = mask_statistics(m).summary
    assert s["dead_fraction"] == pytest.approx(5 / 6)
    same = np.random.default_rng(1).random((1, 2, 4, 4)).repeat(10, axis=0)
    assert mask_statistics(same).summary["input_variation"] == pytest.approx(0.0, abs=1e-12)
    moving = np.zeros((2, 1, 4, 4))
    moving[0, 0, 0, 0] = moving[1, 0, 3, 3] = 1.0
    assert mask_statistics(moving).summary["input_variation"] == pytest.approx(0.5)
    twins = np.random.default_rng(2).random((3, 1, 4, 4)).repeat(2, axis=1)
    assert mask_statistics(twins).summary["head_overlap"] == pytest.approx(1.0)
    apart = np.zeros((3, 2, 4, 4))
    apart[:, 0, 0, 0] = apart[:, 1, 3, 3] = 1.0
    assert mask_statistics(apart).summary["head_overlap"] == pytest.approx(0.0)
    assert mask_statistics(np.ones((2, 1, 4, 4))).summary["head_overlap"] == 0.0


def test_object_mass_and_coverage() -> None:
    n = 2
    obj = np.zeros((n, 4, 4))
    obj[:, :2, :2] = 1.0  # the object is the top-left quarter
    parts = np.zeros((n, 2, 4, 4))
    parts[:, 0, 0, 0] = 1.0  # "ears": one cell
    parts[:, 1, 1, 1] = 1.0  # "body": another cell
    m = np.zeros((n, 2, 4, 4))
    m[:, 0, 0, 0] = 1.0  # head 0 on the ears
    m[:, 1, 1, 1] = 3.0  # head 1 on the body ...
    m[:, 1, 3, 3] = 1.0  # ... and a quarter on the background
    st = mask_statistics(m, obj, parts, ("ears", "body"))
    assert st.summary["object_area"] == pytest.approx(0.25)
    assert st.summary["object_mass"] == pytest.approx((1.0 + 0.75) / 2)
    assert st.summary["object_lift"] == pytest.approx(3.5)
    np.testing.assert_allclose(st.coverage, [[1.0, 0.0], [0.0, 0.75]])
    flat = st.flat()
    assert flat["mask.coverage.h1.body"] == pytest.approx(0.75)
    assert flat["mask.entropy"] == pytest.approx(st.summary["entropy"])
    assert all(isinstance(v, float) for v in flat.values())


def test_torch_input_and_bad_shapes() -> None:
    t = torch.rand(2, 3, 4, 4)
    assert mask_statistics(t).summary["mean"] == pytest.approx(float(t.mean()), rel=1e-6)
    with pytest.raises(ValueError, match=r"expected \(N, heads, h, w\)"):
        mask_statistics(np.ones((4, 4)))


def test_pool_to_grid_area_fraction() -> None:
    pix = np.zeros((1, 64, 64))
    pix[0, :8, :8] = 1.0  # exactly cell (0, 0) of an 8 x 8 grid
    pix[0, 8:12, 8:16] = 1.0  # half of cell (1, 1)
    g = pool_to_grid(pix, 8, 8)
    assert g.shape == (1, 8, 8) and g[0, 0, 0] == 1.0 and g[0, 1, 1] == 0.5 and g.sum() == 1.5
    odd = pool_to_grid(np.ones((2, 3, 100, 100)), 12, 12)  # sizes that do not divide
    assert odd.shape == (2, 3, 12, 12)
    np.testing.assert_allclose(odd, 1.0)
