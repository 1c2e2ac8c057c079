"""What a run carries from checkpoint to checkpoint, and what decides its best checkpoint."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass
class TrainState:
    step: int = 0
    best_metric: float = math.inf  # of the run's monitor (-inf to start with when higher is better)
    best_step: int = -1
    animation_step: int = -1  # first validation whose renders follow the object (thesis: "animation point")
    nan_skipped: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class Monitor:
    """``train.monitor``: the validation metric (and whether lower or higher is better) that picks the
    best checkpoint, hence the weights a run registers and a search compares."""

    def __init__(self, metric: str = "val/loss", mode: str = "min"):
        self.metric, self.mode = metric, mode

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def improved(self, value: float | None, best: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value < best if self.mode == "min" else value > best

    def __repr__(self) -> str:
        return f"{self.metric} ({self.mode})"
