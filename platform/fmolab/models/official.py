"""The official DeFMO network (Rozumnyi et al., CVPR 2021), as published and as ``kornia.feature.DeFMO``
holds it, and its two weight files (``encoder_best.pt``, ``rendering_best.pt``).

The encoder is fmolab's ``resnet50`` with BatchNorm (no stem max-pool, stride 16): only its tensor names
differ. The renderer (``defmo_official``) is the published one: the time as channel 0 of the stem conv,
BatchNorm, a Bottleneck(1024, 256) at 1/16 before the first pixel shuffle, a bias-free 16->16 conv at
1/2 and a conv4-ReLU-conv4 tail at full resolution, a sigmoid. It takes any input size: its strided
convolutions round the size up, so it renders a multiple of 16, which :class:`fmolab.models.defmo.DeFMO`
crops back. The published weights render N sub-frames at ``t = linspace(0, 1, N)``: a model imported
from them has ``model.time_convention=endpoints``.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from fmolab.models.common import RENDERERS
from fmolab.models.encoder import Bottleneck

STRUCTURE = {"encoder": "resnet50", "renderer": "defmo_official", "norm": "batch", "in_channels": 6}


class OfficialRenderer(nn.Module):
    any_size = True

    def __init__(self, latent_channels: int = 2048, norm: str = "batch"):
        super().__init__()
        if latent_channels != 2048 or norm != "batch":
            raise ValueError(f"defmo_official is the published renderer: a 2048-channel latent (resnet50) and "
                             f"BatchNorm; got {latent_channels} channels and norm {norm!r}")
        self.net = nn.Sequential(
            nn.Conv2d(2049, 1024, 3, 1, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU(inplace=True),
            Bottleneck(1024, 256, 1, "batch", 1), nn.PixelShuffle(2),
            Bottleneck(256, 64, 1, "batch", 1), nn.PixelShuffle(2),
            Bottleneck(64, 16, 1, "batch", 1), nn.PixelShuffle(2),
            nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.PixelShuffle(2),
            nn.Conv2d(4, 4, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, 1, 1),
        )

    def forward(self, latent: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """latent ``[B,2048,h,w]``, times ``[B,T]`` -> RGBA ``[B,T,4,16h,16w]``, every time in one pass."""
        b, t = times.shape
        w = self.net[0].weight
        # conv(t ++ latent) = t * conv(1) + conv(latent): the latent part once per sample, not per time
        base = F.conv2d(latent, w[:, 1:], padding=1)
        tmap = F.conv2d(latent.new_ones(1, 1, *latent.shape[-2:]), w[:, :1], padding=1)
        x = base[:, None] + times.to(base.dtype)[:, :, None, None, None] * tmap[:, None]
        if self.training:
            # The official code renders one time step per call, so in training BatchNorm normalizes each
            # time step over the batch alone (and updates its running statistics once per step);
            # folding time into the batch would mix the time steps' statistics (thesis 4.1, finding F1).
            return torch.stack([torch.sigmoid(self.net[1:](x[:, i])) for i in range(t)], 1)
        return torch.sigmoid(self.net[1:](x.flatten(0, 1))).unflatten(0, (b, t))


@RENDERERS.register("defmo_official")
def defmo_official(latent_channels: int = 2048, norm: str = "batch") -> OfficialRenderer:
    return OfficialRenderer(latent_channels, norm)


# ---------------------------------------------------------------- the two official files

_ENCODER = [(re.compile(r"^net\.0\.0\."), "conv1."), (re.compile(r"^net\.0\.1\."), "bn1.")] + [
    (re.compile(rf"^net\.1\.{i}\."), f"layer{i + 1}.") for i in range(4)]


def check_structure(model) -> None:
    """Official weights go only into the official structure: GroupNorm would load the BatchNorm affine
    tensors silently and compute something else."""
    wrong = {k: model.hparams.get(k) for k, v in STRUCTURE.items() if model.hparams.get(k) != v}
    if wrong:
        raise ValueError(f"the official DeFMO weights need model.encoder=resnet50 model.renderer=defmo_official "
                         f"model.norm=batch and 6 input channels (background + blur: the `defmo` preset); this "
                         f"model has {wrong}")


def _rename(state: dict, rules, source: str) -> dict:
    out = {}
    for k, v in state.items():
        for pattern, repl in rules:
            if pattern.match(k):
                out[pattern.sub(repl, k, count=1)] = v
                break
        else:
            raise ValueError(f"{source}: tensor {k!r} is not part of the official DeFMO encoder")
    return out


def load_official(model, encoder_state: dict, rendering_state: dict, source: str = "official files") -> None:
    """Load the official state dicts into ``model`` strictly: a missing or extra tensor, or one of another
    shape, is an error naming it."""
    check_structure(model)
    for part, state in ((model.encoder, _rename(encoder_state, _ENCODER, source)),
                        (model.renderer, rendering_state)):
        want = part.state_dict()
        missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
        if missing or extra:
            raise ValueError(f"{source}: {'missing tensors ' + ', '.join(missing[:5]) if missing else ''}"
                             f"{'; ' if missing and extra else ''}{'unexpected tensors ' + ', '.join(extra[:5]) if extra else ''}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(want[k].shape):
                raise ValueError(f"{source}: tensor {k!r} has shape {tuple(v.shape)}, the official network "
                                 f"has {tuple(want[k].shape)}")
        part.load_state_dict(state, strict=True)


def official_state_dicts(model) -> tuple[dict, dict]:
    """``(encoder_best.pt, rendering_best.pt)`` contents: the official names, so the weights run in the
    official code and in kornia."""
    check_structure(model)
    inverse = [(re.compile("^" + re.escape(repl)), pattern.pattern[1:].replace("\\.", "."))
               for pattern, repl in _ENCODER]
    encoder = {}
    for k, v in model.encoder.state_dict().items():
        for pattern, official in inverse:
            if pattern.match(k):
                encoder[pattern.sub(official, k, count=1)] = v.detach().clone()
                break
    return encoder, {k: v.detach().clone() for k, v in model.renderer.state_dict().items()}
