"""Attention classifier models; every model returns ``(logits, masks)``."""

from tune_attn.models.attention import ACTIVATIONS, ChannelAttention, SpatialAttention
from tune_attn.models.backbones import BACKBONES, build_backbone
from tune_attn.models.classifier import AttentionClassifier, build_model

__all__ = [
    "ACTIVATIONS",
    "BACKBONES",
    "AttentionClassifier",
    "ChannelAttention",
    "SpatialAttention",
    "build_backbone",
    "build_model",
]
