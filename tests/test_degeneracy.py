from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tune_attn.config import DetectorConfig
from tune_attn.degeneracy import KINDS, DegeneracyMonitor, diagnose, make_config

RNG = np.random.default_rng(0)


def blobs(n: int = 32, heads: int = 1, size: int = 8, softmax: bool = True, seed: int = 0) -> np.ndarray:
    """Healthy-looking masks: a Gaussian blob at a random interior place per sample and head."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, heads, size, size))
    for i in range(n):
        for k in range(heads):
            cy, cx = rng.uniform(1.5, size - 2.5, 2)
            g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.3**2))
            out[i, k] = g / g.sum() if softmax else 0.05 + 0.9 * g
    return out


def corners(n: int = 32, heads: int = 1, size: int = 8) -> np.ndarray:
    m = np.full((n, heads, size, size), 0.01) + RNG.random((n, heads, size, size)) * 0.01
    k = size // 4
    for rows in (slice(0, k), slice(size - k, size)):
        for cols in (slice(0, k), slice(size - k, size)):
            m[:, :, rows, cols] = 0.9
    return m


def border(n: int = 32) -> np.ndarray:
    m = np.full((n, 1, 8, 8), 0.02) + RNG.random((n, 1, 8, 8)) * 0.01
    m[:, :, 0, 2:6] = m[:, :, -1, 2:6] = m[:, :, 2:6, 0] = m[:, :, 2:6, -1] = 0.95  # edges, not corners
    return m


def points(n: int = 32) -> np.ndarray:
    m = np.full((n, 1, 8, 8), 1e-3)
    for i in range(n):
        m[i, 0, RNG.integers(1, 7), RNG.integers(1, 7)] = 1.0  # a different spot per image: not static
    return m / m.sum(axis=(2, 3), keepdims=True)


def test_each_kind_is_named_with_its_figure() -> None:
    cases = {
        "healthy": blobs(),
        "corner": corners(),
        "border": border(),
        "point": points(),
        "flat": 0.5 + 0.05 * RNG.random((32, 1, 8, 8)),
        "dead": np.zeros((32, 1, 8, 8)),
        "static": np.repeat(blobs(1), 32, axis=0),
        "redundant": np.repeat(blobs(32, 1), 3, axis=1),
    }
    for kind, masks in cases.items():
        d = diagnose(masks)
        assert d.kind == kind, (kind, d.reasons)
        assert d.degenerate == (kind != "healthy")
        if d.degenerate:
            assert d.reason.startswith(f"{kind}:") or f"{kind}:" in d.reason
            assert any(ch.isdigit() for ch in d.reason)  # the figure that fired
        assert all(np.isfinite(v) for v in d.stats.values())
    assert set(cases) | {"nonfinite"} == set(KINDS)


def test_example_reason_text() -> None:
    d = diagnose(corners())
    assert d.reason.startswith("corner: 0.9") and "of mass in corner cells (uniform 0.25)" in d.reason


def test_healthy_in_every_activation_scale() -> None:
    assert not diagnose(blobs(softmax=True)).degenerate
    assert not diagnose(blobs(softmax=False)).degenerate  # sigmoid-like, 0.05 .. 0.95
    assert not diagnose(7.0 * blobs(softmax=False)).degenerate  # ReLU-like, any scale
    assert not diagnose(torch.from_numpy(blobs())).degenerate  # torch input


def test_most_specific_kind_wins_and_the_rest_are_reasons() -> None:
    # Stuck in the corners for every input: corner, border and static all apply; corner names the kind.
    m = np.repeat(corners(1), 16, axis=0)
    d = diagnose(m)
    assert d.kind == "corner"
    kinds = [r.split(":")[0] for r in d.reasons]
    assert kinds[0] == "corner" and "border" in kinds and "static" in kinds


def test_one_corner_and_its_edges_is_border_not_corner() -> None:
    m = np.full((16, 1, 8, 8), 0.01)
    m[:, 0, 0, :] = 0.3  # the top row ...
    m[:, 0, :, -1] = 0.3  # ... and the right column
    m[:, 0, :2, -2:] = 1.0  # densest in the top-right corner block
    d = diagnose(m)
    assert d.stats["corner_mass"] >= 0.5 and d.stats["corners_used"] == 1.0
    assert d.kind == "border"
    assert diagnose(m, corner_min_blocks=1).kind == "corner"


def test_nonfinite_masks_are_degenerate() -> None:
    m = blobs()
    m[3, 0, 2, 2] = np.nan
    m[4, 0, 1, 1] = np.inf
    d = diagnose(m)
    assert d.degenerate and d.kind == "nonfinite" and "2 of 2048 mask values are NaN or Inf" in d.reason


def test_softmax_masks_are_never_dead_by_scale() -> None:
    flat_softmax = np.full((8, 1, 8, 8), 1 / 64)
    assert diagnose(flat_softmax).kind == "flat"  # not "dead", though every value is 0.016


def test_heads_quorum() -> None:
    good = blobs(32, 2, seed=1)
    mixed = good.copy()
    mixed[:, 1] = corners(32, 1)[:, 0]
    d = diagnose(mixed)
    assert not d.degenerate and d.kind == "healthy"
    assert any(r.startswith("head 1 corner:") for r in d.reasons)  # told, not pruned
    d = diagnose(mixed, head_quorum=0.5)
    assert d.degenerate and d.kind == "corner"
    # The reason says how many heads failed, so that "head 1 corner" is not read as that head alone.
    assert d.reason.startswith("1 of 2 heads corner; head 1 corner: 0.9"), d.reason
    assert diagnose(corners(32, 3)).reason.startswith("all 3 heads corner; head 0 corner:")
    two_ways = corners(32, 3)
    two_ways[:, 2] = 1.0  # the third head flat
    d = diagnose(two_ways)
    assert d.kind == "corner" and d.reason.startswith(
        "all 3 heads degenerate (2 corner, 1 flat); head 0 corner:"
    )
    assert not diagnose(corners(32, 1)).reason.startswith("all")  # one head: its reason alone


def test_thresholds_are_arguments_and_bad_ones_raise() -> None:
    m = corners()
    assert diagnose(m).kind == "corner"
    assert diagnose(m, corner_ratio=3.6).kind == "corner"  # 0.95 >= 3.6 * 0.25
    assert diagnose(m, corner_ratio=4.0, border_ratio=3.0).kind != "corner"
    with pytest.raises(ValueError, match="detector.corner_ratio: 0.5 is out of range"):
        diagnose(m, corner_ratio=0.5)
    with pytest.raises(ValueError, match="unknown detector argument.*cornr_ratio.*valid: grace_epochs"):
        diagnose(m, cornr_ratio=2)
    with pytest.raises(ValueError, match="detector.head_quorum: 0.0 is out of range"):
        make_config(head_quorum=0.0)
    with pytest.raises(ValueError, match=r"expected \(N, heads, h, w\)"):
        diagnose(np.ones((8, 8)))
    with pytest.raises(ValueError, match="too small to diagnose"):
        diagnose(np.ones((2, 1, 3, 3)))
    with pytest.raises(ValueError, match="must be non-negative"):
        diagnose(-np.ones((2, 1, 8, 8)))


def test_monitor_grace_patience_and_reason_step_by_step() -> None:
    mon = DegeneracyMonitor(grace_epochs=2, patience=3)
    bad, good = corners(), blobs()
    # grace: degenerate, but ignored
    v = mon.update(1, bad)
    assert (v.prune, v.kind, v.streak) == (False, "corner", 0)
    v = mon.update(2, bad)
    assert (v.prune, v.streak) == (False, 0)
    v = mon.update(3, bad)
    assert (v.prune, v.streak) == (False, 1) and v.reason.endswith("for 1 epoch")
    v = mon.update(4, good)  # a healthy check resets the streak
    assert (v.prune, v.kind, v.streak) == (False, "healthy", 0)
    v = mon.update(5, bad)
    assert (v.prune, v.streak) == (False, 1)
    v = mon.update(6, bad)
    assert (v.prune, v.streak) == (False, 2)
    v = mon.update(7, bad)
    assert v.prune and v.streak == 3 and v.kind == "corner"
    assert v.reason.startswith("corner: 0.9") and v.reason.endswith("(uniform 0.25) for 3 epochs")


def test_monitor_observe_counts_recorded_diagnoses_step_by_step() -> None:
    # The rule alone, on recorded diagnoses (what benchmarks/patience.py replays): grace 1, patience 2.
    mon = DegeneracyMonitor(grace_epochs=1, patience=2)
    assert (mon.observe(1, True), mon.streak) == (False, 0)  # in the grace period
    assert (mon.observe(2, True), mon.streak) == (False, 1)
    assert (mon.observe(3, False), mon.streak) == (False, 0)  # a healthy epoch resets the streak
    assert (mon.observe(4, True), mon.streak) == (False, 1)
    assert (mon.observe(5, True), mon.streak) == (True, 2)
    assert mon.history == []  # no masks were diagnosed
    with pytest.raises(ValueError, match="epoch: 5 after epoch 5"):
        mon.observe(5, True)


def test_monitor_state_survives_a_checkpoint_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mon = DegeneracyMonitor(DetectorConfig(grace_epochs=0, patience=2))
    assert not mon.update(1, points()).prune
    state = json.loads(json.dumps(mon.state_dict()))  # plain data
    torch.save(mon.state_dict(), tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    for st in (state, loaded):
        again = DegeneracyMonitor(DetectorConfig(grace_epochs=0, patience=2))
        again.load_state_dict(st)
        v = again.update(2, points())
        assert v.prune and v.reason.endswith("for 2 epochs")
        assert again.history == [(1, "point"), (2, "point")]
    with pytest.raises(ValueError, match="epochs must increase"):
        mon.update(1, points())


def test_detector_module_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import tune_attn.degeneracy; "
        "bad = [m for m in ('torch', 'ray', 'wandb') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
