"""How a search runs (``fmolab tune``'s flags), a typed object checked once when made, in the config
tree's style (one line: the option, its value, what is allowed; exit 2), before Ray starts. Frozen, and
saved with the search, so ``--resume`` runs on exactly the options it started with."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from fmolab.config.rules import ConfigError, require


@dataclass(frozen=True)
class SearchOptions:
    trials: int = 8  # trials sampled by Optuna (TPE)
    max_concurrent: int = 0  # trials at a time; 0 = one core per Train worker (always capped to what fits)
    study_storage: str = ""  # Optuna RDB URL (e.g. sqlite:///optuna.db) to keep the study; "" = in memory
    seed: int = 0  # the sampler's seed
    grace_steps: int = 0  # ASHA's grace period in training steps; 0 = train.val_every
    reduction_factor: int = 2  # ASHA keeps 1/reduction_factor of the trials at each rung

    def __post_init__(self):
        require(self.trials >= 1, "--trials", self.trials, "must be >= 1")
        require(self.max_concurrent >= 0, "--max-concurrent", self.max_concurrent, "must be >= 0 (0: as many as fit)")
        require(self.grace_steps >= 0, "--grace-steps", self.grace_steps, "must be >= 0 (0: train.val_every)")
        require(self.reduction_factor >= 2, "--reduction-factor", self.reduction_factor, "must be >= 2")
        require(not self.study_storage or "://" in self.study_storage, "--study-storage", self.study_storage,
                "must be a database URL such as sqlite:///optuna.db")

    def grace(self, val_every: int) -> int:
        return self.grace_steps or val_every

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> SearchOptions:
        """The options a search saved (unknown keys are an error: the file is not one fmolab wrote)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(saved) - names)
        if unknown:
            raise ConfigError(f"saved search options: unknown {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**saved)
