"""ResNet encoders (thesis 2.1): one configurable class, presets as small factories (timm style).

Pooling and the classifier are removed; the latent has output stride 16. Like DeFMO we drop the stem
max-pool (``pool_stem=False``: layer1 runs at 1/2 resolution, more spatial detail). ``pool_stem=True``
keeps the max-pool and instead gives the last stage stride 1 (cheaper, also stride 16).
Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1`` ...) so ImageNet weights map
one to one; ``bn*`` hold whatever ``make_norm`` returns.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fmolab.models.common import ENCODERS, check_norm, make_norm


class BasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, norm: str, groups: int, expansion: int = 1):
        super().__init__()
        cout = planes * expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, planes, groups)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, cout, groups)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + skip)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand, residual."""

    def __init__(self, cin: int, planes: int, stride: int, norm: str, groups: int, expansion: int = 4,
                 out_groups: int | None = None):
        super().__init__()
        cout = planes * expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = make_norm(norm, planes, groups)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = make_norm(norm, planes, groups)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = make_norm(norm, cout, out_groups or groups)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + skip)


def _shortcut(cin: int, cout: int, stride: int, norm: str, groups: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout, groups))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet trunk without pooling/fc; ``out_channels = widths[-1] * expansion``, stride 16."""

    def __init__(
        self,
        in_channels: int,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        expansion: int = 4,
        stem_width: int = 64,
        norm: str = "group",
        groups: int = 32,
        pool_stem: bool = False,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of: {', '.join(BLOCKS)}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"layers and widths need 4 stages, got {list(layers)} and {list(widths)}")
        check_norm(norm)
        self.in_channels = in_channels
        self.out_channels = widths[-1] * expansion
        self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
        self.bn1 = make_norm(norm, stem_width, groups)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if pool_stem else nn.Identity()
        strides = (1, 2, 2, 1 if pool_stem else 2)
        cin = stem_width
        for i, (n, w, s) in enumerate(zip(layers, widths, strides), start=1):
            blocks = []
            for j in range(n):
                blocks.append(BLOCKS[block](cin, w, s if j == 0 else 1, norm, groups, expansion))
                cin = w * expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@ENCODERS.register("resnet50")
def resnet50(in_channels: int, norm: str = "group", groups: int = 32, pool_stem: bool = False) -> ResNet:
    """The paper's encoder: bottlenecks [3,4,6,3], latent 2048."""
    return ResNet(in_channels, "bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 4, 64, norm, groups, pool_stem)


@ENCODERS.register("resnet34")
def resnet34(in_channels: int, norm: str = "group", groups: int = 32, pool_stem: bool = False) -> ResNet:
    return ResNet(in_channels, "basic", (3, 4, 6, 3), (64, 128, 256, 512), 1, 64, norm, groups, pool_stem)


@ENCODERS.register("resnet18")
def resnet18(in_channels: int, norm: str = "group", groups: int = 32, pool_stem: bool = False) -> ResNet:
    """Basic blocks [2,2,2,2], latent 512."""
    return ResNet(in_channels, "basic", (2, 2, 2, 2), (64, 128, 256, 512), 1, 64, norm, groups, pool_stem)


@ENCODERS.register("tiny")
def tiny(in_channels: int, norm: str = "group", width: int = 16, depth: int = 1, groups: int = 8,
         pool_stem: bool = True) -> ResNet:
    """CPU-sized: bottlenecks with expansion 2, widths w..8w, latent 16w (256 for w=16)."""
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ResNet(in_channels, "bottleneck", (depth,) * 4, widths, 2, width, norm, groups, pool_stem)
