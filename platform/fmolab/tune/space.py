"""Search spaces for ``fmolab tune``: YAML files in ``search_spaces/``, validated, sampled define-by-run.

A space file (format documented in ``search_spaces/README.md``)::

    description: what is searched and why
    preset: double_blur                       # optional default preset (``--preset`` wins)
    overrides: {train.steps: 2000}            # fixed config values for every trial
    params:                                   # in order; a name with a dot is a config key
      train.lr: {loguniform: [1.0e-4, 3.0e-3]}
      w_alpha: {uniform: [0.2, 2.0]}
      model.norm: {choice: [group, batch]}
      groups: {choice: [4, 8, 16], when: {model.norm: group}, default: 8}
    templates:                                # config values built from sampled params
      loss.train: ["AlphaDice:weight={w_alpha}", "RGBL1:weight=1.0,mode=gt"]
      model.encoder: "resnet50:groups={groups}"
    points_to_evaluate: [{train.lr: 1.0e-3, w_alpha: 1.0, model.norm: group, groups: 8}]

Files are read and checked by :mod:`fmolab.tune.space_file`. Sampling is Optuna's define-by-run API (:meth:`SearchSpace.sample`, a picklable callable handed to
``OptunaSearch(space=...)``): a parameter with ``when`` is only asked for when the parameters it
names took one of the given values, so TPE never models a value that had no effect.
"""
from __future__ import annotations

import copy
import math
import string
from dataclasses import dataclass, field
from typing import Any

from fmolab.config import Config, config_from_dict, load_config, set_dotted, to_dict

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
PARAM_OPTIONS = ("step", "when", "default")
TOP_KEYS = ("description", "preset", "metric", "mode", "overrides", "params", "templates", "points_to_evaluate")


@dataclass
class Param:
    """One searched value: ``dist`` in DISTRIBUTIONS, ``low``/``high`` or ``choices``."""

    name: str
    dist: str
    low: float | int | None = None
    high: float | int | None = None
    choices: list | None = None
    step: float | int | None = None
    when: dict[str, list] = field(default_factory=dict)
    default: Any = None
    has_default: bool = False

    @property
    def is_config_key(self) -> bool:
        return "." in self.name

    def active(self, values: dict[str, Any]) -> bool:
        """True when every ``when`` condition holds for the values sampled so far."""
        return all(name in values and values[name] in allowed for name, allowed in self.when.items())

    def suggest(self, trial) -> Any:
        if self.dist == "choice":
            return trial.suggest_categorical(self.name, self.choices)
        if self.dist == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        if self.dist == "loguniform":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step)

    def midpoint(self) -> Any:
        if self.dist == "choice":
            return self.choices[0]
        if self.dist == "loguniform":
            return math.sqrt(self.low * self.high)
        if self.dist == "int":
            step = int(self.step or 1)
            return int(self.low) + (int(self.high) - int(self.low)) // (2 * step) * step
        return (self.low + self.high) / 2

    def corners(self) -> list:
        """Values worth validating against the config tree: every choice, or both bounds."""
        return list(self.choices) if self.dist == "choice" else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.dist == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.dist == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.dist == "choice":
            return f"choice {self.choices}"
        return f"{self.dist} [{self.low}, {self.high}]" + (f" step {self.step}" if self.step else "")


@dataclass
class SearchSpace:
    path: str
    params: list[Param]
    templates: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    points_to_evaluate: list[dict] = field(default_factory=list)
    preset: str = ""
    description: str = ""
    text: str = ""  # the file as read (saved with the search, logged to MLflow)
    # What trials are ranked by. A space that changes the losses or their weights must not rank by
    # val/loss (each trial's own weighted sum): it names a metric every trial computes alike.
    metric: str = "val/loss"
    mode: str = "min"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    # ---- Optuna define-by-run: the object itself is the ``space`` callable (picklable for Tune)
    def __call__(self, trial) -> None:
        self.sample(trial)
        return None

    def sample(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return values

    # ---- from sampled values to config values
    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        """Sampled values (+ defaults of inactive parameters) -> ``{config.key: value}``."""
        full = dict(values)
        for p in self.params:
            if p.name not in full and p.has_default:
                full[p.name] = p.default
        out = {p.name: full[p.name] for p in self.params if p.is_config_key and p.name in full}
        for key, template in self.templates.items():
            out[key] = fill_template(template, full)
        return out

    def with_overrides(self, base: Config, extra: list[str] = ()) -> Config:
        """The search's base config: ``base`` <- the space's fixed overrides <- ``extra`` ``key=value``
        overrides (the command line's win over the space's)."""
        tree = to_dict(base)
        for key, value in self.overrides.items():
            set_dotted(tree, key, value)
        return load_config([], list(extra), base=tree)

    def config_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """Everything a trial sets: the fixed overrides, then the sampled/filled values."""
        return {**self.overrides, **self.fill(values)}

    def build_config(self, base: Config | dict, values: dict[str, Any], overrides: bool = True) -> Config:
        """The trial's config: ``base`` with the space's fixed overrides (unless already applied to
        ``base``: ``overrides=False``) and the sampled values applied."""
        tree = copy.deepcopy(base if isinstance(base, dict) else to_dict(base))
        for key, value in (self.config_values(values) if overrides else self.fill(values)).items():
            set_dotted(tree, key, value)
        return config_from_dict(tree)

    def describe(self) -> str:
        """What ``fmolab tune --print-space`` shows: the ranking metric, every parameter, every template."""
        lines = [f"ranked by {self.metric} ({self.mode})"]
        lines += [f"{p.name:28} {p.describe()}" + (f"  when {p.when}" if p.when else "") for p in self.params]
        lines += [f"{k:28} = {t}" for k, t in self.templates.items()]
        return "\n".join(lines)

    def midpoints(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.midpoint()
        return values


# ---------------------------------------------------------------- templates


def placeholders(template: Any) -> list[str]:
    items = template if isinstance(template, list) else [template]
    names = []
    for item in items:
        if isinstance(item, str):
            names += [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(item) if f]
    return names


def fill_template(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, list):
        filled = [fill_template(t, values) for t in template]
        return [f for f in filled if f != ""]  # an item that fills to "" drops out (optional losses)
    if isinstance(template, str):
        return template.format_map(values)
    return template
