"""Optimizers and learning-rate schedules by name (``train.optimizer``, ``train.scheduler`` specs)."""
from __future__ import annotations

import math

import torch

from fmolab.registry import Registry, parse_spec

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULERS: Registry = Registry("scheduler")

# Every optimizer of torch.optim under its own name: "Adam", "AdamW:weight_decay=0.01", "SGD:momentum=0.9".
for _name in dir(torch.optim):
    _cls = getattr(torch.optim, _name)
    if isinstance(_cls, type) and issubclass(_cls, torch.optim.Optimizer) and _cls is not torch.optim.Optimizer:
        OPTIMIZERS.register(_name)(_cls)


@SCHEDULERS.register("none")
def constant(optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULERS.register("cosine")
def cosine(optimizer, total_steps: int, warmup: int = 0, min_factor: float = 0.0):
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 down to ``min_factor`` at the last step."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("cosine_restarts")
def cosine_restarts(optimizer, total_steps: int, period: int = 1000, mult: float = 1.0, min_factor: float = 0.0):
    """Cosine annealing with warm restarts (SGDR; seed 004, eq. 4.9): eta = eta_min + (eta_max - eta_min)
    (1 + cos(pi T_cur / T_i)) / 2, restarting at eta_max every ``period`` steps, each period ``mult``
    times the one before; eta_min = ``min_factor`` x lr."""
    if period < 1 or mult < 1:
        raise ValueError(f"cosine_restarts: period {period} must be >= 1 and mult {mult} >= 1")

    def factor(step: int) -> float:
        length, cur = float(period), float(step)
        while cur >= length:
            cur, length = cur - length, length * mult
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * cur / length))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("step")
def step_decay(optimizer, total_steps: int, step_size: int = 1000, gamma: float = 0.5):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


# torch's fused kernels: one op a step for every parameter instead of a Python loop over them (2 CPU
# cores, benchmarks/optim.py: a step of the demo's model -9%, of double blur small -6%)
FUSED = {"Adam", "AdamW"}


def build_optimizer(spec: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer of ``spec``; Adam and AdamW fused unless the spec chooses an implementation
    (``fused``, ``foreach`` or ``differentiable``)."""
    name, kwargs = parse_spec(spec)
    fused = name in FUSED and not {"fused", "foreach", "differentiable"} & kwargs.keys()
    return OPTIMIZERS.make(name, {"params": params, "lr": lr, **({"fused": True} if fused else {}), **kwargs}, spec)


def build_scheduler(spec: str, optimizer: torch.optim.Optimizer, total_steps: int):
    return SCHEDULERS.build(spec, optimizer=optimizer, total_steps=total_steps)
