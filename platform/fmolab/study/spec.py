"""A study file (``studies/*.yaml``): groups of arms (config overrides on one preset) run with a fixed
sample budget and several seeds, each group stating the claim it tests. Read and checked whole, every
arm's config built, before anything runs.

```yaml
preset: [double_blur, small]   # what every arm builds on: preset(s) and scale, or a YAML file
base: {model.renderer: defmo}  # overrides for every arm
budget_samples: 24000    # every trial trains on this many samples (steps = budget / global batch)
seeds: 2                 # per arm, unless a group says otherwise
groups:
  F1:
    claim: "GroupNorm animates sooner than BatchNorm at batch 4 (thesis 4.1)"
    seeds: 2
    arms:
      group: {model.norm: group}
      batch: {model.norm: batch}
```
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmolab.config import Config, ConfigError, derive, load_config, preset_path, read_yaml

STUDY_TAG, ARM_TAG, SEED_TAG = "fmolab.study", "fmolab.study.arm", "fmolab.study.seed"  # on the MLflow runs
TOP_KEYS = {"preset", "base", "budget_samples", "seeds", "groups", "description", "concurrency"}
GROUP_KEYS = {"claim", "seeds", "arms"}


@dataclass
class Arm:
    group: str
    name: str  # unique in the study: "<group>/<arm>"
    overrides: dict[str, Any]
    seeds: int


@dataclass
class Study:
    name: str
    path: str
    text: str
    preset: str | list[str]
    base: dict[str, Any]
    budget_samples: int
    arms: list[Arm]
    claims: dict[str, str] = field(default_factory=dict)
    description: str = ""
    concurrency: int = 0  # trials at a time; 0 = what fits
    root: str = ""  # the whole study's name, for a part of it (:meth:`subset`); its own name otherwise

    def __post_init__(self) -> None:
        self.root = self.root or self.name

    def part_of_root(self, name: str) -> bool:
        """Whether study name ``name`` (a trial's tag) is this study's root or one of its parts."""
        return name == self.root or name.startswith(self.root + "-")

    def subset(self, groups: list[str] | None = None, seeds: int = 0) -> "Study":
        """Only ``groups`` and at most ``seeds`` seeds per arm, as a study of its own name (its Tune
        experiment resumes apart from the whole study's): ``thesis-F1-F2-s1``. Trials that any part of
        the study already finished with the same config are shared (:func:`fmolab.study.run.run_study`)."""
        if not groups and not seeds:
            return self
        unknown = sorted(set(groups or []) - {a.group for a in self.arms})
        if unknown:
            raise ConfigError(f"{self.path}: no group(s) {unknown}; the study has {sorted({a.group for a in self.arms})}")
        arms = [Arm(a.group, a.name, a.overrides, min(a.seeds, seeds) if seeds else a.seeds)
                for a in self.arms if not groups or a.group in groups]
        name = "-".join([self.name, *(groups or [])] + ([f"s{seeds}"] if seeds else []))
        return Study(name, self.path, self.text, self.preset, self.base, self.budget_samples, arms, self.claims,
                     self.description, self.concurrency, self.root)

    def trials(self) -> list[dict]:
        """Every (arm, seed), in file order: the study's grid."""
        return [{"arm": a.name, "seed": s} for a in self.arms for s in range(a.seeds)]

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def config(self, arm: str, seed: int, extra: dict[str, Any] | None = None) -> Config:
        """The trial's config: preset <- base <- the arm <- ``extra``; its seed; steps from the budget."""
        values = {**self.base, **self.arm(arm).overrides, **(extra or {})}
        overrides = [f"{k}={_yaml_value(v)}" for k, v in values.items()]
        cfg = load_config([preset_file(p) for p in (self.preset if isinstance(self.preset, list) else [self.preset])],
                          overrides)
        # the budget is in samples, never in seconds
        return derive(cfg, {"train.seed": seed, "train.steps": steps_for(cfg, self.budget_samples),
                            "train.time_limit": 0.0})


def samples_per_step(cfg: Config) -> int:
    return cfg.train.batch_size * cfg.train.grad_accum * cfg.train.workers


def steps_for(cfg: Config, budget_samples: int) -> int:
    return max(1, math.ceil(budget_samples / samples_per_step(cfg)))


def preset_file(preset: str) -> Path:
    return Path(preset) if preset.endswith((".yaml", ".yml")) else preset_path(preset)


def _yaml_value(v: Any) -> str:
    """An override's value as the command line would write it (lists and dicts as flow YAML)."""
    import yaml

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip() if not isinstance(v, str) else v


def find_study(name_or_path: str) -> Path:
    """A study file: a path, else ``studies/<name>.yaml`` in this folder."""
    p = Path(name_or_path)
    for candidate in (p, Path("studies") / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(q.stem for q in Path("studies").glob("*.yaml")) if Path("studies").is_dir() else []
    raise FileNotFoundError(f"no study {name_or_path!r}: give a study file or a name of studies/*.yaml"
                            + (f" ({', '.join(known)})" if known else ""))


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {what}")


def load_study(name_or_path: str) -> Study:
    """Read and check a study file; every arm's config is built (and checked) here."""
    path = find_study(name_or_path)
    data, where = read_yaml(path), str(path)
    _need(isinstance(data, dict), where, "must be a mapping with preset, budget_samples and groups")
    unknown = set(data) - TOP_KEYS
    _need(not unknown, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    preset = data.get("preset") or ""
    preset = [str(p) for p in preset] if isinstance(preset, list) else str(preset)
    _need(bool(preset), where, "needs 'preset' (the preset(s) or YAML file every arm builds on, e.g. "
                               "[double_blur, small])")
    budget, seeds = data.get("budget_samples"), data.get("seeds", 1)
    _need(isinstance(budget, int) and budget > 0, f"{where}: budget_samples", f"{budget!r} must be a whole number > 0")
    _need(isinstance(seeds, int) and seeds >= 1, f"{where}: seeds", f"{seeds!r} must be a whole number >= 1")
    base = data.get("base") or {}
    _need(isinstance(base, dict), f"{where}: base", "must be a mapping of config keys to values")
    groups = data.get("groups")
    _need(isinstance(groups, dict) and groups, f"{where}: groups", "must map group names to {claim, arms}")
    arms, claims = [], {}
    for g, spec in groups.items():
        gw = f"{where}: groups.{g}"
        _need(isinstance(spec, dict) and isinstance(spec.get("arms"), dict) and spec["arms"], gw,
              "needs 'arms': a mapping of arm names to config overrides")
        unknown = set(spec) - GROUP_KEYS
        _need(not unknown, gw, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(GROUP_KEYS)}")
        n = spec.get("seeds", seeds)
        _need(isinstance(n, int) and n >= 1, f"{gw}.seeds", f"{n!r} must be a whole number >= 1")
        claims[str(g)] = str(spec.get("claim", ""))
        for a, overrides in spec["arms"].items():
            _need(isinstance(overrides, dict) or overrides is None, f"{gw}.arms.{a}", "must be a mapping of overrides")
            _need("/" not in str(a) and "/" not in str(g), gw, "group and arm names may not contain '/'")
            arms.append(Arm(str(g), f"{g}/{a}", dict(overrides or {}), n))
    study = Study(path.stem, str(path), path.read_text(), preset, dict(base), budget, arms, claims,
                  str(data.get("description", "")), int(data.get("concurrency", 0) or 0))
    for arm in study.arms:  # every arm builds: a typo in the last one fails now, not an hour in
        try:
            study.config(arm.name, 0)
        except ConfigError as exc:
            raise ConfigError(f"{where}: arm {arm.name}: {exc}") from None
    return study
