"""The DeFMO network (thesis ch. 2): encoder(stacked inputs) -> latent; renderer(latent, t) -> RGBA."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fmolab.config import ModelConfig
from fmolab.models.common import ENCODERS, RENDERERS, check_norm
from fmolab.models.pretrained import load_pretrained

STRIDE = 16
TIME_CONVENTIONS = ("centers", "endpoints")


def check_size(h: int, w: int) -> None:
    """The latent is at 1/16; other sizes would silently crop or misalign renders."""
    bad = [(n, v) for n, v in (("height", h), ("width", w)) if v % STRIDE]
    if bad:
        near = "; ".join(f"{n} {v} -> {max(v // STRIDE * STRIDE, STRIDE)} or {(v // STRIDE + 1) * STRIDE}"
                         for n, v in bad)
        raise ValueError(f"input size {h}x{w} (HxW) must be divisible by {STRIDE}; nearest valid sizes: {near}")


class DeFMO(nn.Module):
    """``forward(inputs [B,C,H,W], times [B,T] or [T], contrast_inputs=None)`` -> dict of outputs.

    ``self.hparams`` holds every constructor argument: ``DeFMO(**model.hparams)`` rebuilds the net.
    """

    def __init__(self, in_channels: int, encoder: str = "resnet50", renderer: str = "defmo", norm: str = "group",
                 time_convention: str = "centers"):
        super().__init__()
        check_norm(norm)
        if time_convention not in TIME_CONVENTIONS:
            raise ValueError(f"time convention {time_convention!r}: one of {', '.join(TIME_CONVENTIONS)}")
        self.hparams: dict[str, Any] = {"in_channels": in_channels, "encoder": encoder, "renderer": renderer,
                                        "norm": norm, "time_convention": time_convention}
        self.encoder = ENCODERS.build(encoder, in_channels=in_channels, norm=norm)
        self.latent_channels = self.encoder.out_channels
        self.renderer = RENDERERS.build(renderer, latent_channels=self.latent_channels, norm=norm)
        # Where N sub-frames of an exposure are rendered: "centers" (sub-frame i at (i + 0.5) / N, how
        # fmolab's data is made) or "endpoints" (k / (N - 1), how the published DeFMO weights were trained).
        self.time_convention = time_convention
        self.any_size = getattr(self.renderer, "any_size", False)

    def times(self, n: int) -> torch.Tensor:
        """The ``n`` equally spaced times this model renders an exposure at (its own convention)."""
        if self.time_convention == "endpoints":
            return torch.linspace(0, 1, n) if n > 1 else torch.tensor([0.5])
        return (torch.arange(n, dtype=torch.float32) + 0.5) / n

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, in_channels: int) -> "DeFMO":
        model = cls(in_channels, model_cfg.encoder, model_cfg.renderer, model_cfg.norm, model_cfg.time_convention)
        load_pretrained(model.encoder, model_cfg.pretrained)
        return model

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.any_size:
            check_size(*inputs.shape[-2:])
        if inputs.shape[1] != self.hparams["in_channels"]:
            raise ValueError(f"inputs have {inputs.shape[1]} channels, the model was built for "
                             f"{self.hparams['in_channels']}")
        return self.encoder(inputs)

    def render(self, latent: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """latent ``[B,L,h,w]``, times ``[B,T]`` or ``[T]`` -> renders ``[B,T,4,16h,16w]``."""
        if times.ndim == 1:
            times = times.expand(latent.shape[0], -1)
        return self.renderer(latent, times.to(latent.device))

    def forward(self, inputs: torch.Tensor, times: torch.Tensor,
                contrast_inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h, w = inputs.shape[-2:]  # a renderer that takes any size renders a multiple of 16: cropped back
        if contrast_inputs is None:
            latent = self.encode(inputs)
            return {"renders": self.render(latent, times)[..., :h, :w], "latent": latent}
        both = self.encode(torch.cat([inputs, contrast_inputs]))  # one encoder pass for both
        latent, contrast = both.chunk(2)
        return {"renders": self.render(latent, times)[..., :h, :w], "latent": latent, "contrast_latent": contrast}


def build_model(model_cfg: ModelConfig, in_channels: int) -> DeFMO:
    """Encoder/renderer/norm from the config; ImageNet weights when ``model_cfg.pretrained`` is set."""
    return DeFMO.from_config(model_cfg, in_channels)
