"""Attention layers (timm style: ``channels`` first). Masks are returned in the activation's own scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def _spatial_softmax(logits: torch.Tensor) -> torch.Tensor:
    b, h, hh, ww = logits.shape
    return logits.flatten(2).softmax(dim=-1).view(b, h, hh, ww)  # sums to 1 over H x W per head


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "softmax": _spatial_softmax,
}


PaddingMode = Literal["zeros", "reflect", "replicate"]
PADDINGS: tuple[PaddingMode, ...] = ("zeros", "reflect", "replicate")


def check_padding(name: str) -> PaddingMode:
    """Check a conv padding mode by name."""
    for mode in PADDINGS:
        if name == mode:
            return mode
    raise ValueError(f"padding: {name!r} is not valid; choose one of {', '.join(PADDINGS)}")


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: {name!r} is not valid; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class SpatialAttention(nn.Module):
    """Spatial attention with one or more heads: a conv on the feature map, then the activation.

    Each head's mask has the map's height and width. ``pool`` turns the masked map into one feature
    vector per head: a mask-weighted average for ``softmax`` (the mask sums to 1), and the mean over
    H x W of the masked map for ``sigmoid`` and ``relu`` (a low mask lowers the feature, as in the seed).
    """

    def __init__(
        self,
        channels: int,
        heads: int = 1,
        activation: str = "sigmoid",
        kernel_size: int = 1,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels: {channels}; must be >= 1")
        if heads < 1:
            raise ValueError(f"heads: {heads}; must be >= 1")
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size: {kernel_size} is not valid; choose 1 or 3")
        self.act = get_activation(activation)
        self.activation = activation
        self.heads = heads
        self.conv = nn.Conv2d(
            channels, heads, kernel_size, padding=kernel_size // 2, padding_mode=check_padding(padding_mode)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))  # (B, heads, H, W)

    def pool(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Pool the feature map x (B, C, H, W) under each head's mask -> (B, heads * C)."""
        b, c, h, w = x.shape
        pooled = torch.einsum("bchw,bkhw->bkc", x, masks)  # (B, heads, C)
        if self.activation != "softmax":
            pooled = pooled / (h * w)
        return pooled.reshape(b, self.heads * c)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool, two FC layers, a sigmoid mask per channel."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels={channels}, reduction={reduction}: both must be >= 1")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # (B, C)
        return x * gate[:, :, None, None]
