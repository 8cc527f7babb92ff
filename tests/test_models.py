from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tune_attn.config import ModelConfig
from tune_attn.models import (
    ACTIVATIONS,
    AttentionClassifier,
    ChannelAttention,
    SpatialAttention,
    build_backbone,
    build_model,
)

COMBOS = list(itertools.product(sorted(ACTIVATIONS), [1, 3], [1, 3], [False, True]))


def _check_masks(masks: torch.Tensor, activation: str) -> None:
    assert torch.isfinite(masks).all()
    if activation == "softmax":
        torch.testing.assert_close(masks.sum(dim=(2, 3)), torch.ones(masks.shape[:2]))
    elif activation == "sigmoid":
        assert masks.min() >= 0 and masks.max() <= 1
    else:
        assert masks.min() >= 0


@pytest.mark.parametrize(("activation", "heads", "kernel", "se"), COMBOS)
def test_small_cnn_classifier_shapes_finite_and_all_params_learn(
    activation: str, heads: int, kernel: int, se: bool
) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(activation=activation, heads=heads, mask_kernel=kernel, channel_attention=se, width=8)
    model = build_model(cfg, num_classes=5)
    x = torch.rand(4, 3, 32, 32)
    logits, masks = model(x)
    assert logits.shape == (4, 5)
    assert masks.shape == (4, heads, 4, 4)  # small_cnn: stride 8
    assert torch.isfinite(logits).all()
    _check_masks(masks, activation)
    # A loss that touches logits and masks, so that no parameter is left out.
    (logits.square().mean() + masks.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_resnet18_classifier(activation: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", activation=activation, heads=2), num_classes=3)
    logits, masks = model(torch.rand(2, 3, 128, 128))
    assert logits.shape == (2, 3) and masks.shape == (2, 2, 4, 4)
    _check_masks(masks, activation)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet18_loads_a_local_torchvision_state_dict(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet18", pretrained_path=str(path))
    torch.testing.assert_close(net.body[0].weight, ref.conv1.weight)
    torch.testing.assert_close(net.body[7][1].conv2.weight, ref.layer4[1].conv2.weight)


def test_bad_weights_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a file"):
        build_backbone("resnet18", pretrained_path=str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable weights file"):
        build_backbone("resnet18", pretrained_path=str(junk))
    wrong = tmp_path / "wrong.pt"
    torch.save({"encoder.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="expected a torchvision resnet18 state dict"):
        build_backbone("resnet18", pretrained_path=str(wrong))
    small = tmp_path / "small.pt"
    torch.save(build_backbone("small_cnn", width=8).state_dict(), small)
    with pytest.raises(ValueError, match="does not fit small_cnn"):
        build_backbone("small_cnn", width=16, pretrained_path=str(small))
    # The same file fits a backbone of the same width.
    assert build_backbone("small_cnn", width=8, pretrained_path=str(small)) is not None
    # What does not fit is named by its first keys or shapes, in a line, not torch's list of every one.
    with pytest.raises(ValueError) as caught:
        build_backbone("small_cnn", width=16, pretrained_path=str(small))
    assert str(caught.value) == (
        f"model.pretrained_path: {small} does not fit small_cnn: size mismatch for features.0.0.weight: copying a "
        "param with shape torch.Size([8, 3, 3, 3]) from checkpoint, the shape in current model is "
        "torch.Size([16, 3, 3, 3]). (and 14 more)"
    )
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(1), **build_backbone("small_cnn", width=8).state_dict()}, other)
    with pytest.raises(
        ValueError, match=r"does not fit small_cnn: 0 of its keys missing \(\), 1 unexpected "
    ):
        build_backbone("small_cnn", width=8, pretrained_path=str(other))


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
def test_a_backbone_starts_from_a_tune_attn_models_weights(tmp_path: Path, backbone: str) -> None:
    """A bundle's weights.pt or a run's checkpoint.pt: the whole classifier's; its backbone part is taken."""
    from tune_attn.config import ModelConfig
    from tune_attn.models import build_model

    torch.manual_seed(2)
    trained = build_model(ModelConfig(backbone=backbone, width=8, heads=2), num_classes=3)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    torch.save({"model": trained.state_dict(), "config": {}, "epoch": 2}, tmp_path / "checkpoint.pt")
    for name in ("weights.pt", "checkpoint.pt"):
        net = build_backbone(backbone, width=8, pretrained_path=str(tmp_path / name))
        assert net.state_dict().keys() == trained.backbone.state_dict().keys()
        for key, value in net.state_dict().items():
            torch.testing.assert_close(value, trained.backbone.state_dict()[key])


def test_unknown_names_and_bad_sizes_list_valid_choices() -> None:
    with pytest.raises(
        ValueError, match="activation: 'tanh' is not valid; choose one of sigmoid, relu, softmax"
    ):
        SpatialAttention(8, activation="tanh")
    with pytest.raises(ValueError, match="backbone: 'vit' is not valid; choose one of small_cnn, resnet18"):
        build_backbone("vit")
    with pytest.raises(ValueError, match="kernel_size: 5"):
        SpatialAttention(8, kernel_size=5)
    with pytest.raises(ValueError, match="heads: 0"):
        SpatialAttention(8, heads=0)
    with pytest.raises(ValueError, match="num_classes: 1"):
        AttentionClassifier(build_backbone("small_cnn", width=8), num_classes=1)
    with pytest.raises(ValueError, match="reduction=0"):
        ChannelAttention(8, reduction=0)


def test_softmax_pool_is_the_mask_weighted_average() -> None:
    att = SpatialAttention(2, heads=1, activation="softmax")
    feat = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(2, 2, 2, 2)
    mask = torch.zeros(2, 1, 2, 2)
    mask[:, 0, 1, 1] = 1.0  # all weight on one cell
    pooled = att.pool(feat, mask)
    torch.testing.assert_close(pooled, feat[:, :, 1, 1])
    sig = SpatialAttention(2, heads=1, activation="sigmoid")
    torch.testing.assert_close(sig.pool(feat, torch.ones(2, 1, 2, 2)), feat.mean(dim=(2, 3)))


def test_heads_are_pooled_separately_and_concatenated() -> None:
    att = SpatialAttention(3, heads=2, activation="softmax")
    feat = torch.rand(1, 3, 4, 4)
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, 0, 0] = 1.0
    masks[0, 1, 3, 3] = 1.0
    pooled = att.pool(feat, masks)  # (1, 2 * 3)
    torch.testing.assert_close(pooled[0, :3], feat[0, :, 0, 0])
    torch.testing.assert_close(pooled[0, 3:], feat[0, :, 3, 3])


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate"])
def test_padding_modes_reach_every_conv(padding: str) -> None:
    model = build_model(ModelConfig(padding=padding, mask_kernel=3, width=8), num_classes=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.padding_mode == padding for c in convs)
    logits, masks = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 3) and masks.shape == (2, 1, 4, 4)
    with pytest.raises(
        ValueError, match="padding: 'circle' is not valid; choose one of zeros, reflect, replicate"
    ):
        SpatialAttention(8, padding_mode="circle")
