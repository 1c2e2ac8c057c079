"""Renderers (thesis 2.2): latent + time -> RGBA frame, for all requested times in one batched pass.

``defmo``: conv(latent ++ t) to ``width`` channels (1024 for the 2048-channel resnet50 latent), then
four PixelShuffle(2) upsamplings: two ResNet bottlenecks (mid channels 64 and 16 at width 1024, as in
the thesis) after the first two, a conv to 4x4 channels at 1/2 resolution that the fourth shuffle
spreads to full-resolution RGBA (sub-pixel conv), and a sigmoid. No full-resolution conv and no
4-channel conv (whose backward is pathologically slow on CPU, oneDNN); features keep >= 16 channels.
``defmo_atrous`` adds parallel dilated residual blocks (seed 003) after the first upsampling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmolab.models.common import RENDERERS, check_norm, make_norm
from fmolab.models.encoder import Bottleneck


def renderer_groups(channels: int) -> int:
    """Thesis 4.1: 32 groups, but 8 and 4 for the 64- and 16-channel bottleneck layers."""
    return 32 if channels >= 128 else 8 if channels >= 32 else 4


class AtrousBlock(nn.Module):
    """Parallel 3x3 convs with dilation 1..4, summed, projected, added to the input (seed 003)."""

    def __init__(self, channels: int, norm: str, rates: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        mid = max(channels // 2, 4)
        self.branches = nn.ModuleList(nn.Conv2d(channels, mid, 3, padding=r, dilation=r, bias=False) for r in rates)
        self.norm1 = make_norm(norm, mid, renderer_groups(mid))
        self.proj = nn.Conv2d(mid, channels, 1, bias=False)
        self.norm2 = make_norm(norm, channels, renderer_groups(channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branches[0](x)
        for branch in self.branches[1:]:
            y = y + branch(x)
        y = self.norm2(self.proj(self.relu(self.norm1(y))))
        return self.relu(x + y)


def _refine(c: int, norm: str) -> nn.Module:
    """Residual bottleneck (c -> c/4 -> c) where there are channels to squeeze, else conv-norm-relu."""
    if c >= 64:
        return Bottleneck(c, c // 4, 1, norm, renderer_groups(c // 4), 4, out_groups=renderer_groups(c))
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), make_norm(norm, c, renderer_groups(c)),
                         nn.ReLU(inplace=True))


def _shuffle_to(cin: int, cout: int) -> list[nn.Module]:
    """PixelShuffle(2) to ``cout`` channels, with a 1x1 conv first when ``cin != 4 * cout``."""
    return ([] if cin == 4 * cout else [nn.Conv2d(cin, 4 * cout, 1, bias=False)]) + [nn.PixelShuffle(2)]


class DeFMORenderer(nn.Module):
    """``time_stages``: fmolab's own option, the time also added (a learned vector per channel, times t)
    to the features entering each of the three upsampling stages, not only to the stem at 1/16: the
    renders can follow the object from the first steps instead of after a long static phase.
    ``time_init``: the time channel's initial stem weights scaled by this (thesis 4.6, "weighted
    initialization"); 1 = the default initialization."""

    def __init__(self, latent_channels: int, norm: str = "group", width: int = 0, atrous: int = 0,
                 time_stages: bool = False, time_init: float = 1.0):
        super().__init__()
        check_norm(norm)
        # 2048 -> 1024 as in the paper; small latents keep at least 256 so four shuffles still have channels.
        width = width or max(latent_channels // 2, 256)
        self.latent_channels, self.width = latent_channels, width
        self.stem = nn.Conv2d(latent_channels + 1, width, 3, padding=1, bias=False)
        self.stem_norm = make_norm(norm, width, renderer_groups(width))
        self.relu = nn.ReLU(inplace=True)
        stages, c, stage_inputs = [], width, []
        for i in range(3):  # 1/8, 1/4, 1/2 resolution
            stage_inputs.append(c)
            target = max(width // 4 ** (i + 1), 16)
            stage = _shuffle_to(c, target)
            if i == 0:
                stage += [AtrousBlock(target, norm) for _ in range(atrous)]
            if i < 2:  # the two bottlenecks of the thesis; at 1/2 resolution the head conv follows
                stage.append(_refine(target, norm))
            stages.append(nn.Sequential(*stage))
            c = target
        self.up = nn.Sequential(*stages)
        # per stage: [C] vectors v, the stage's input += t * v (1/16, 1/8, 1/4 resolution); zero at first, so a
        # fresh model is static as the thesis' is and its animation point is measured, not given by init
        self.time_vectors = nn.ParameterList(
            nn.Parameter(torch.zeros(cin)) for cin in stage_inputs) if time_stages else None
        if time_init != 1.0:
            with torch.no_grad():
                self.stem.weight[:, -1:] *= float(time_init)
        self.head = nn.Conv2d(c, 4 * 4, 3, padding=1)  # 4 sub-pixels x RGBA
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, latent: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """latent ``[B,L,h,w]``, times ``[B,T]`` -> RGBA ``[B,T,4,16h,16w]`` (T folded into the batch)."""
        b, t = times.shape
        w = self.stem.weight
        # conv(latent ++ t*1) = conv(latent) + t * conv(1): the latent part is computed once per
        # sample instead of once per time (the largest conv in the renderer), with identical result.
        base = F.conv2d(latent, w[:, :-1], padding=1)
        ones = latent.new_ones(1, 1, *latent.shape[-2:])
        tmap = F.conv2d(ones, w[:, -1:], padding=1)
        x = base[:, None] + times.to(base.dtype)[:, :, None, None, None] * tmap[:, None]
        x = self.relu(self.stem_norm(x.flatten(0, 1)))
        if self.time_vectors is None:
            x = self.up(x)
        else:
            tt = times.to(x.dtype).reshape(-1, 1, 1, 1)
            for stage, v in zip(self.up, self.time_vectors):
                x = stage(x + tt * v[:, None, None])
        x = torch.sigmoid(self.shuffle(self.head(x)))
        return x.unflatten(0, (b, t))


@RENDERERS.register("defmo")
def defmo(latent_channels: int, norm: str = "group", width: int = 0, atrous: int = 0, time_stages: bool = False,
          time_init: float = 1.0) -> DeFMORenderer:
    return DeFMORenderer(latent_channels, norm, width, atrous, time_stages, time_init)


@RENDERERS.register("defmo_atrous")
def defmo_atrous(latent_channels: int, norm: str = "group", width: int = 0, atrous: int = 1,
                 time_stages: bool = False, time_init: float = 1.0) -> DeFMORenderer:
    return DeFMORenderer(latent_channels, norm, width, atrous, time_stages, time_init)
