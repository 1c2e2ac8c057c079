"""Loss bases, the loss registry and helpers shared by the loss families.

A loss is built from ``"Name:weight=w,k=v"``; ``forward(batch, outputs)`` returns the *unweighted*
mean over the batch of ``per_sample(batch, outputs)`` (``[B]``). ``LossSet`` applies the weight.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from fmolab.registry import Registry, SpecError

LOSSES: Registry["BaseLoss"] = Registry("loss")
EPS = 1e-6
ORDERS = ("auto", "forward", "min", "both")

Batch = dict
Outputs = dict


def choice(loss: str, key: str, value, allowed: Sequence) -> None:
    """Bad option values are config errors, reported like bad names (SpecError)."""
    if value not in allowed:
        raise SpecError(f"loss {loss!r}: {key}={value!r} is not one of {', '.join(map(str, allowed))}")


def need(container: dict, key: str, loss: str, what: str) -> torch.Tensor:
    if key not in container:
        raise KeyError(f"loss {loss!r} needs {what}[{key!r}]; it has: {', '.join(sorted(container))}")
    return container[key]


class BaseLoss(nn.Module):
    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)
        self.name = type(self).__name__  # LossSet makes it ``Name:args`` when names repeat

    def per_sample(self, batch: Batch, outputs: Outputs) -> torch.Tensor:  # [B]
        raise NotImplementedError

    def forward(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        return self.per_sample(batch, outputs).mean()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}"


class SupervisedLoss(BaseLoss):
    """Renders vs ground-truth frames, with the time-order ambiguity resolved per sample.

    ``order``: ``forward`` (GT as given), ``min`` (smaller of forward/reversed GT, per sample;
    DeFMO for background+blur), ``both`` (mean of the two: the naive symmetric baseline), ``auto``
    (``min`` when each item has one input image, ``forward`` when consecutive images fix the direction).
    """

    def __init__(self, weight: float = 1.0, order: str = "auto"):
        super().__init__(weight)
        choice(type(self).__name__, "order", order, ORDERS)
        self.order = order

    def compare(self, renders: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``[B,T,4,H,W]`` x2 -> ``[B]``; the family's actual formula."""
        raise NotImplementedError

    def per_sample(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        renders = need(outputs, "renders", self.name, "outputs")
        frames = need(batch, "frames", self.name, "batch")
        return resolve_order(self.compare, renders, frames, self.order, batch)


def resolve_order(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], renders: torch.Tensor,
                  frames: torch.Tensor, order: str, batch: Batch | None = None) -> torch.Tensor:
    """Per-sample ``fn(renders, frames)`` for the chosen order policy (see ``SupervisedLoss``)."""
    if order == "auto":
        single = batch is None or "images" not in batch or batch["images"].shape[1] == 1
        order = "min" if single else "forward"
    forward = fn(renders, frames)
    if order == "forward":
        return forward
    backward = fn(renders, frames.flip(1))
    if order == "both":
        return (forward + backward) / 2
    return torch.minimum(forward, backward)


def masked_mean(values: torch.Tensor, weights: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Weighted mean over ``dims``; 0 where the weights vanish (e.g. an object out of view)."""
    return (values * weights).sum(dims) / weights.sum(dims).clamp_min(EPS)


def charbonnier(diff: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """sqrt(d^2 + eps^2) - eps: L1-like, smooth at 0, and exactly 0 for a perfect prediction."""
    return torch.sqrt(diff * diff + eps * eps) - eps


def penalty(kind: str, eps: float = 1e-3) -> Callable[[torch.Tensor], torch.Tensor]:
    return {"l1": torch.abs, "l2": torch.square, "charbonnier": lambda d: charbonnier(d, eps)}[kind]


class _BinarizeST(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha: torch.Tensor, threshold: float) -> torch.Tensor:
        return (alpha > threshold).to(alpha.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def binarize_st(alpha: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Round alpha to {0,1} forward, identity backward (straight-through, thesis 4.5)."""
    return _BinarizeST.apply(alpha, threshold)


class ReconstructionLoss(BaseLoss):
    """Family base: compares something made from the renders with the *inputs* (no GT frames)."""


class RegularizerLoss(BaseLoss):
    """Family base: a prior on the outputs alone (sharpness, smoothness, contiguity ...)."""
