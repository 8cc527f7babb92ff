"""The attention classifier: backbone -> (channel attention) -> spatial attention -> pooled heads -> FC."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tune_attn.config import ModelConfig
from tune_attn.models.attention import ChannelAttention, SpatialAttention
from tune_attn.models.backbones import build_backbone


class AttentionClassifier(nn.Module):
    """Takes images in [0, 1], shape (B, 3, S, S); returns ``(logits (B, K), masks (B, heads, h, w))``.

    The input normalisation (mean / std) lives inside the model, so a saved model needs no other
    preprocessing than scaling pixels to [0, 1].
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        heads: int = 1,
        activation: str = "sigmoid",
        mask_kernel: int = 1,
        channel_attention: bool = False,
        se_reduction: int = 8,
        padding_mode: str = "zeros",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: {num_classes}; need at least 2")
        channels = int(backbone.out_channels)  # type: ignore[arg-type]
        self.backbone = backbone
        self.channel_attention = ChannelAttention(channels, se_reduction) if channel_attention else None
        self.attention = SpatialAttention(channels, heads, activation, mask_kernel, padding_mode)
        self.fc = nn.Linear(heads * channels, num_classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std  # type: ignore[operator]
        feat = self.backbone(x)  # (B, C, h, w)
        if self.channel_attention is not None:
            feat = self.channel_attention(feat)
        masks = self.attention(feat)  # (B, heads, h, w)
        pooled = self.attention.pool(feat, masks)  # (B, heads * C)
        return self.fc(pooled), masks


def build_model(
    cfg: ModelConfig,
    num_classes: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    pretrained: bool = True,
) -> AttentionClassifier:
    """The classifier described by a ModelConfig. ``pretrained`` False leaves out ``model.pretrained_path``, for a
    model whose weights come from a checkpoint or bundle next: the file it started from need not be there then
    (a bundle deployed on another machine, a trial resumed on another node)."""
    path = cfg.pretrained_path if pretrained else None
    backbone = build_backbone(cfg.backbone, cfg.width, path, cfg.padding)
    return AttentionClassifier(
        backbone,
        num_classes,
        heads=cfg.heads,
        activation=cfg.activation,
        mask_kernel=cfg.mask_kernel,
        channel_attention=cfg.channel_attention,
        se_reduction=cfg.se_reduction,
        padding_mode=cfg.padding,
        mean=mean,
        std=std,
    )
