"""What the ranks of one run agree on. Every rank must call the same collectives in the same order, or
DDP hangs: a NaN on one rank, a time limit seen by one, a rank without validation items."""
from __future__ import annotations

import torch


class Collective:
    def __init__(self, world: int):
        self.world = world

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (small dicts; ranks may differ in keys: no tensor shape to agree on)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per key, the mean over the ranks that have it."""
        parts = self.gather(values)
        keys = sorted(set().union(*parts))
        return {k: sum(p[k] for p in parts if k in p) / sum(k in p for p in parts) for k in keys}

    def weighted_mean(self, sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
        """Per key, the sum over ranks divided by the count over ranks (a rank may have none)."""
        total: dict[str, float] = {}
        n: dict[str, int] = {}
        for part_sums, part_counts in self.gather((sums, counts)):
            for k, v in part_sums.items():
                total[k] = total.get(k, 0.0) + v
                n[k] = n.get(k, 0) + part_counts[k]
        return {k: v / n[k] for k, v in total.items()}

    def all(self, flag: bool) -> bool:
        return self._reduce(flag, "MIN")

    def any(self, flag: bool) -> bool:
        return self._reduce(flag, "MAX")

    def _reduce(self, flag: bool, op: str) -> bool:
        if self.world == 1:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([float(flag)])
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t.item() > 0
