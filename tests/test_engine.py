from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from tune_attn.config import load_config
from tune_attn.engine import Trainer, TrainingDiverged, per_class, random_hflip, use_deterministic_kernels
from tune_attn.run import load_checkpoint, panel_title, train_run


def _cfg(*extra: str):  # type: ignore[no-untyped-def]
    return load_config(None, [*TINY, *extra])


def test_epochs_yield_metrics_masks_and_stats() -> None:
    cfg = _cfg("model.heads=2", "model.activation=softmax")
    trainer = Trainer(cfg)
    results = list(trainer.epochs())
    assert [r.epoch for r in results] == [1, 2]
    r = results[-1]
    assert r.masks.shape == (24, 2, 4, 4)  # stats_samples, heads, 32 px / 8
    np.testing.assert_allclose(r.masks.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    assert r.panel_images.shape == (3, 32, 32, 3) and r.panel_images.dtype == np.uint8
    for key in (
        "train_loss",
        "val_loss",
        "val_accuracy",
        "mask.entropy",
        "mask.corner_mass",
        "mask.object_mass",
        "mask.coverage.h1.ears",
        "train_images_per_second",
    ):
        assert np.isfinite(r.metrics[key]), key
    assert 0.0 <= r.metrics["val_accuracy"] <= 1.0
    assert trainer.history[-1] is r.metrics
    # The panel's title names what it shows as the config and the metrics do (one name for one thing).
    title = panel_title(cfg, r)
    assert f"epoch 2/2 | val_accuracy {r.metrics['val_accuracy']:.3f} | softmax x2, weight_decay" in title
    assert f"entropy {r.stats.summary['entropy']:.2f}" in title


def test_evaluate_counts_each_validation_image_once_in_its_true_and_predicted_class() -> None:
    trainer = Trainer(_cfg())
    last = list(trainer.epochs())[-1]
    loss, accuracy, masks, confusion = trainer.evaluate()
    val = trainer.data.val
    n = trainer.data.num_classes
    assert confusion.shape == (n, n) and confusion.dtype == np.int64
    assert (
        confusion.sum(1).tolist() == np.bincount([val[i][1] for i in range(len(val))], minlength=n).tolist()
    )
    with torch.no_grad():  # the predictions, one image at a time
        trainer.model.eval()
        predicted = [
            int(trainer.model(trainer._prepare(val[i][0][None]))[0].argmax()) for i in range(len(val))
        ]
    assert confusion.sum(0).tolist() == np.bincount(predicted, minlength=n).tolist()
    assert accuracy == last.metrics["val_accuracy"] == np.trace(confusion) / len(val)
    assert (loss, masks.shape) == (last.metrics["val_loss"], last.masks.shape)


def test_per_class_puts_the_least_accurate_first_with_what_it_is_taken_for() -> None:
    confusion = np.array(
        [[5, 0, 0, 0], [3, 1, 0, 0], [0, 0, 0, 0], [1, 2, 0, 1]]
    )  # rows true, columns predicted
    assert per_class(confusion, ("cat", "dog", "rabbit", "fox")) == [
        ("dog", 1, 4, "cat"),
        ("fox", 1, 4, "dog"),  # the same accuracy: by name
        ("cat", 5, 5, None),  # never wrong; the rabbit has no validation image and is left out
    ]


def test_same_seed_same_results_and_other_seed_differs() -> None:
    a = [r.metrics["train_loss"] for r in Trainer(_cfg()).epochs()]
    b = [r.metrics["train_loss"] for r in Trainer(_cfg()).epochs()]
    c = [r.metrics["train_loss"] for r in Trainer(_cfg("train.seed=1")).epochs()]
    assert a == b
    assert a != c


def test_random_hflip_mirrors_about_half_the_images_as_its_seed_says() -> None:
    x = torch.rand(1000, 3, 4, 5)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)]  # i: (C, H, W)
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True)) and 450 < sum(mirrored) < 550
    assert torch.equal(random_hflip(x, torch.Generator().manual_seed(0)), out)
    assert not torch.equal(random_hflip(x, torch.Generator().manual_seed(1)), out)


def test_hflip_changes_training_and_keeps_it_reproducible() -> None:
    plain = [r.metrics["train_loss"] for r in Trainer(_cfg()).epochs()]
    flipped = [r.metrics["train_loss"] for r in Trainer(_cfg("train.hflip=true")).epochs()]
    assert flipped != plain
    assert [r.metrics["train_loss"] for r in Trainer(_cfg("train.hflip=true")).epochs()] == flipped


@pytest.mark.parametrize("extra", [[], ["train.hflip=true"]], ids=["plain", "hflip"])
def test_resume_from_checkpoint_is_exact(tmp_path: Path, extra: list[str]) -> None:
    straight = train_run(_cfg("train.epochs=3", *extra), tmp_path / "straight")
    # Stop after epoch 2, then resume with a fresh process-like Trainer to epoch 3.
    train_run(_cfg("train.epochs=2", *extra), tmp_path / "split")
    resumed = train_run(_cfg("train.epochs=3", *extra), tmp_path / "split", resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.history[-1]["val_accuracy"] == straight.history[-1]["val_accuracy"]
    # the best accuracy so far counts the epochs before the resume too
    best = [max(h["val_accuracy"] for h in straight.history[: k + 1]) for k in range(3)]
    assert [h["best_val_accuracy"] for h in resumed.history] == best
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    state = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert state["epoch"] == 3 and len(state["timeline"]) == 3


def test_run_folder_contents(tmp_path: Path) -> None:
    train_run(_cfg(), tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "curves.png",
        "checkpoint.pt",
        "panels/epoch_001.png",
        "panels/epoch_002.png",
        "panels/timeline.png",
    ):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == _cfg()
    with pytest.raises(FileExistsError, match="holds a run already"):
        train_run(_cfg(), run)


def test_resume_with_another_config_is_refused_naming_what_differs(tmp_path: Path) -> None:
    train_run(_cfg(), tmp_path / "run")
    with pytest.raises(
        ValueError,
        match=r"differs from this run's in model.heads: 1 -> 2; train.lr: 0.002 -> 0.01; only train.epochs, train.device",
    ):
        train_run(_cfg("model.heads=2", "train.lr=0.01"), tmp_path / "run", resume=True)
    # Where it trains, how long, what it keeps in memory may change: a GPU run goes on on a CPU.
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    state["config"]["train"]["device"] = "cuda"
    del state["config"]["train"]["hflip"]  # a checkpoint of a version without train.hflip: its default
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    trainer = train_run(
        _cfg("train.epochs=3", "train.device=cpu", "data.memory_cache_mb=0"), tmp_path / "run", resume=True
    )
    assert trainer.epoch == 3


def test_nan_loss_stops_with_a_reason() -> None:
    trainer = Trainer(_cfg("train.lr=10", "train.optimizer=sgd", "train.momentum=0"))
    with torch.no_grad():
        trainer.model.fc.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 1: loss is nan"):
        trainer.step()


def test_broken_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable tune-attn checkpoint"):
        load_checkpoint(bad)
    torch.save({"model": {}}, bad)
    with pytest.raises(ValueError, match="needs keys model, config, epoch"):
        load_checkpoint(bad)


def test_monitor_verdicts_are_recorded_and_prune_stops_the_run(tmp_path: Path) -> None:
    # Thresholds that call every mask flat (contrast is always < 1): a verdict that surely fires.
    cfg = _cfg(
        "train.epochs=4", "detector.grace_epochs=1", "detector.patience=2", "detector.flat_contrast=1.0"
    )
    trainer = train_run(cfg, tmp_path / "run", prune=True)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # grace 1, then 2 in a row -> stops after epoch 3
    assert [r["detector.kind"] for r in rows] == ["flat"] * 3
    assert [r["detector.streak"] for r in rows] == [0, 1, 2]
    assert rows[-1]["detector.prune"] == 1.0 and rows[-1]["detector.reason"].endswith("for 2 epochs")
    assert trainer.epoch == 3
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["monitor"]["streak"] == 2 and state["monitor"]["history"][-1] == [3, "flat"]
    # Without prune the same run goes on to the end, the verdicts still recorded.
    train_run(cfg, tmp_path / "all")
    rows = [json.loads(x) for x in (tmp_path / "all" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["detector.prune"] == 1.0


def test_head_notes_name_the_object_share_and_main_part() -> None:
    from tune_attn.masks import mask_statistics
    from tune_attn.run import head_notes

    obj = np.zeros((2, 4, 4))
    obj[:, :2, :2] = 1.0
    parts = np.zeros((2, 2, 4, 4))
    parts[:, 0, 0, 0] = 1.0
    parts[:, 1, 1, 1] = 1.0
    m = np.zeros((2, 2, 4, 4))
    m[:, 0, 0, 0] = 1.0  # head 0: all on the ears
    m[:, 1, 1, 1] = 1.0  # head 1: half on the body ...
    m[:, 1, 3, 3] = 1.0  # ... half on the background
    notes = head_notes(mask_statistics(m, obj, parts, ("ears", "body")))
    assert notes == ["on object 100%\nears 100% of it", "on object 50%\nbody 100% of it"]
    assert head_notes(mask_statistics(m)) is None  # no ground truth, no notes


def test_train_deterministic_sets_the_kernels_both_ways() -> None:
    """On CUDA, ``train.deterministic`` asks for deterministic kernels; off, for cuDNN's timed choice of the
    fastest (``cudnn.benchmark``). Process-wide flags: set here without a GPU, put back afterwards."""
    before = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
    )
    try:
        use_deterministic_kernels(True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        use_deterministic_kernels(False)
        assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[:2]
        torch.use_deterministic_algorithms(before[2])
