"""Registries for model parts and the one place that decides which normalization layer is used."""
from __future__ import annotations

import logging

import torch
from torch import nn

from fmolab.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")
RENDERERS: Registry[nn.Module] = Registry("renderer")

log = logging.getLogger("fmolab.models")

NORMS = ("batch", "syncbatch", "group", "instance", "layer", "none")
_WARNED: list[bool] = []  # the syncbatch fallback is said once per process, not once per layer


def _divisor_at_most(channels: int, cap: int) -> int:
    """Largest divisor of ``channels`` that is <= ``cap`` (GroupNorm needs groups | channels)."""
    for g in range(min(cap, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def make_norm(kind: str, channels: int, groups: int = 32) -> nn.Module:
    """Normalization layer by name; ``groups`` caps the GroupNorm groups (thesis 4.1: 32, 8, 4).

    Instance and layer norm are GroupNorm with ``channels`` and 1 groups: same maths, and their
    affine weights keep the shape ``[channels]`` so ImageNet BatchNorm weights still load.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "syncbatch":
        if not torch.cuda.is_available():
            # torch syncs batch statistics only on GPU (DDP refuses SyncBatchNorm on CPU); the
            # state dict is the same, so a checkpoint moves freely between the two.
            if not _WARNED:
                _WARNED.append(True)
                log.warning("norm 'syncbatch' needs CUDA: using per-process BatchNorm on this CPU machine")
            return nn.BatchNorm2d(channels)
        return nn.SyncBatchNorm(channels)
    if kind == "group":
        return nn.GroupNorm(_divisor_at_most(channels, groups), channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of: {', '.join(NORMS)}")


def check_norm(kind: str) -> str:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of: {', '.join(NORMS)}")
    return kind
