"""What a run carries from checkpoint to checkpoint, and what decides its best checkpoint."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass
class TrainState:
    step: int = 0
    best_metric: float = math.inf  # of the run's monitor (-inf to start with when higher is better)
    best_step: int = -1
    best_animated: bool = False  # whether the best checkpoint's renders followed the object
    animation_step: int = -1  # first validation whose renders follow the object (thesis: "animation point")
    nan_skipped: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


ANIMATED = 0.5  # val/animation_ratio above which a validation counts as animated (the animation point)


def animated(val: dict) -> bool:
    """Whether a validation's renders move with the object: their temporal spread is more than half
    the ground truth's (``val/animation_ratio``)."""
    return float(val.get("val/animation_ratio", 0.0)) > ANIMATED


def first_animated(ratios: list[tuple[int, float]]) -> int:
    """The animation point of a ``(step, val/animation_ratio)`` history: its first animated step, or -1."""
    return next((step for step, ratio in ratios if float(ratio) > ANIMATED), -1)


class Monitor:
    """``train.monitor``: the validation metric (and whether lower or higher is better) that picks the
    best checkpoint, hence the weights a run registers and a search compares. With ``animated_first``
    a validation that has not reached the animation point never beats one that has: before it every
    instant gets the same render, a model that does not do the task whatever its loss (a static blob
    scores a lower ``val/loss`` than the first moving renders, measured in docs/studies.md)."""

    def __init__(self, metric: str = "val/tiou", mode: str = "max", animated_first: bool = True):
        self.metric, self.mode, self.animated_first = metric, mode, animated_first

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, value: float | None, best: float, is_animated: bool = False, best_animated: bool = False) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.animated_first and is_animated != best_animated:
            return is_animated
        return value < best if self.mode == "min" else value > best

    def best_of(self, history: list[tuple[int, float, float]]) -> tuple[int, float, bool] | None:
        """``(step, value, animated)`` of the best of ``(step, value, animation ratio)`` validations by
        this rule (a search ranks its trials with it, as each trial chose its checkpoint)."""
        best = None
        for step, value, ratio in history:
            moving = ratio > ANIMATED
            if self.improved(value, best[1] if best else self.worst, moving, bool(best and best[2])):
                best = (step, value, moving)
        return best

    def __repr__(self) -> str:
        return f"{self.metric} ({self.mode}{', animated first' if self.animated_first else ''})"
