"""Feature extractors: a registry name -> builder; each builder returns (module, out_channels, stride)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tune_attn.models.attention import check_padding


def _block(cin: int, cout: int, padding_mode: str = "zeros") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False, padding_mode=check_padding(padding_mode)),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """Three conv3x3-BN-ReLU-maxpool blocks (width, 2 width, 2 width channels); feature map = image / 8."""

    stride = 8

    def __init__(self, width: int = 32, padding: str = "zeros") -> None:
        super().__init__()
        self.out_channels = 2 * width
        self.features = nn.Sequential(
            _block(3, width, padding),
            _block(width, 2 * width, padding),
            _block(2 * width, 2 * width, padding),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 2 width, S/8, S/8)


class ResNet18Features(nn.Module):
    """torchvision's ResNet-18 up to layer4 (no pooling, no fc); feature map = image / 32."""

    stride = 32
    out_channels = 512

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)  # never downloads
        self.body = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, 512, S/32, S/32)

    def load_torchvision_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a torchvision ``resnet18`` state dict (the ``fc.*`` keys are ignored)."""
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        mapped = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head == "fc":
                continue
            if head not in names:
                raise ValueError(
                    f"{source}: unexpected key {key!r}; expected a torchvision resnet18 state dict"
                )
            mapped[f"body.{names.index(head)}.{rest}"] = value
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{source}: not a torchvision resnet18 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": ResNet18Features,
}


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, loaded safely (``weights_only=True``): the file's own, or the one under
    its ``state_dict`` key, or its ``model`` key (a tune-attn ``checkpoint.pt``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model.pretrained_path: {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise ValueError(f"model.pretrained_path: {path} is not a loadable weights file ({exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"model.pretrained_path: {path} holds a {type(state).__name__}, not a state dict")
    return state


def _fit(net: nn.Module, state: dict[str, torch.Tensor], path: str, name: str) -> None:
    """Load ``state`` into ``net`` whole, or fail naming the first keys or shapes that differ (not all of them)."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs: torch names each, one line apiece
        lines = [line.strip() for line in str(exc).splitlines() if line.strip().startswith("size mismatch")]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise ValueError(
            f"model.pretrained_path: {path} does not fit {name}: {lines[0] if lines else exc}{more}"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"model.pretrained_path: {path} does not fit {name}: {len(missing)} of its keys missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"
        )


def build_backbone(
    name: str, width: int = 32, pretrained_path: str | None = None, padding: str = "zeros"
) -> nn.Module:
    """A backbone by registry name, optionally initialised from a local weights file: the backbone's state dict
    (for ``resnet18``, torchvision's), or a tune-attn model's weights (a bundle's ``weights.pt``, a run's
    ``checkpoint.pt``), whose backbone part it takes."""
    if name not in BACKBONES:
        raise ValueError(f"backbone: {name!r} is not valid; choose one of {', '.join(BACKBONES)}")
    net = SmallCNN(width, padding) if name == "small_cnn" else BACKBONES[name]()
    if pretrained_path:
        state = load_weights_file(pretrained_path)
        # A tune-attn model's weights (a bundle's weights.pt, a run's checkpoint.pt): its backbone's part.
        own = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        if isinstance(net, ResNet18Features) and not own:
            net.load_torchvision_state(state, pretrained_path)
        else:
            _fit(net, own or state, pretrained_path, name)
    return net
