"""LossSet: the training losses (weighted sum, back-propagated) and the comparison losses (logged)."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch import nn

from fmolab.losses.base import LOSSES, BaseLoss
from fmolab.registry import SpecError, parse_spec


def _spec_name(spec: str) -> str:
    name, kwargs = parse_spec(spec)
    return f"{name}:{','.join(f'{k}={v}' for k, v in sorted(kwargs.items()))}" if kwargs else name


class LossSet(nn.Module):
    """``LossSet(train_specs, compare_specs)(batch, outputs) -> (total, {name: value})``.

    Names are class names, or ``Name:k=v,...`` where a class occurs more than once (``#2`` ...
    for identical specs). Every loss runs in float32 outside autocast: bf16 sums of many pixels
    lose too much precision, and some ops (FFT) have no bf16 kernel.
    """

    def __init__(self, train_specs: Sequence[str], compare_specs: Sequence[str] = ()):
        super().__init__()
        if not train_specs:
            raise ValueError("LossSet needs at least one training loss")
        built = [_build(s) for s in train_specs]
        self.schedules = [schedule for _, schedule in built]
        self.train_losses = nn.ModuleList(loss for loss, _ in built)
        self.compare_losses = nn.ModuleList(LOSSES.build(s) for s in compare_specs)
        specs = list(train_specs) + list(compare_specs)
        losses: list[BaseLoss] = list(self.train_losses) + list(self.compare_losses)
        classes = Counter(loss.name for loss in losses)
        seen: Counter = Counter()
        for loss, spec in zip(losses, specs):
            name = loss.name if classes[loss.name] == 1 else _spec_name(spec)
            seen[name] += 1
            loss.name = name if seen[name] == 1 else f"{name}#{seen[name]}"

    @property
    def names(self) -> list[str]:
        return [loss.name for loss in list(self.train_losses) + list(self.compare_losses)]

    def factor(self, i: int, step: int | None) -> float:
        """The share of training loss ``i``'s weight at ``step`` (1 without a step: full weights)."""
        start, ramp = self.schedules[i]
        if step is None or (not start and not ramp):
            return 1.0
        if step < start:
            return 0.0
        return min(1.0, (step - start + 1) / ramp) if ramp else 1.0

    def forward(self, batch: dict, outputs: dict, step: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in outputs.items()}
        device = next((v.device for v in outputs.values() if torch.is_tensor(v)), torch.device("cpu"))
        values: dict[str, torch.Tensor] = {}
        total = None
        with torch.autocast(device.type, enabled=False):
            for i, loss in enumerate(self.train_losses):
                value = loss(batch, outputs)
                values[loss.name] = value.detach()
                weighted = value * (loss.weight * self.factor(i, step))
                total = weighted if total is None else total + weighted
            with torch.no_grad():
                for loss in self.compare_losses:
                    values[loss.name] = loss(batch, outputs).detach()
        return total, values


def _build(spec: str) -> tuple[BaseLoss, tuple[int, int]]:
    """A training loss and its schedule: any spec may carry ``start=N`` (the loss counts from step N on;
    thesis 4.6, staggered losses) and ``ramp=M`` (its weight then grows linearly over M steps)."""
    name, kwargs = parse_spec(spec)
    start, ramp = kwargs.pop("start", 0), kwargs.pop("ramp", 0)
    for key, value in (("start", start), ("ramp", ramp)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SpecError(f"loss {spec!r}: {key}={value!r} must be a whole number of steps >= 0")
    return LOSSES.make(name, kwargs, spec), (start, ramp)
