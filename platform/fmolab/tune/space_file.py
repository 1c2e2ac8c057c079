"""Search-space files (``search_spaces/*.yaml``, format in ``search_spaces/README.md``): parsed and
checked before anything starts, every mistake a ConfigError naming the file and the key."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml

from fmolab.config import Config, ConfigError, config_from_dict, set_dotted, to_dict
from fmolab.tune.space import DISTRIBUTIONS, PARAM_OPTIONS, TOP_KEYS, Param, SearchSpace, placeholders

_SCALARS = (str, int, float, bool, type(None))


def _flat_mapping(data: Any, where: str, path: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where} must be a mapping of config keys to values, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(name: str, spec: Any, path: str, earlier: dict[str, Param]) -> Param:
    where = f"{path}: params.{name}"
    if "/" in name or not name:
        raise ConfigError(f"{where}: a parameter name may not be empty or contain '/'")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{uniform: [0.1, 1.0]}}; "
                          f"distributions: {', '.join(DISTRIBUTIONS)}")
    dists = [k for k in spec if k in DISTRIBUTIONS]
    unknown = [k for k in spec if k not in DISTRIBUTIONS + PARAM_OPTIONS]
    if unknown:
        raise ConfigError(f"{where}: unknown distribution or option {unknown[0]!r}; distributions: "
                          f"{', '.join(DISTRIBUTIONS)}; options: {', '.join(PARAM_OPTIONS)}")
    if len(dists) != 1:
        raise ConfigError(f"{where}: give exactly one distribution ({', '.join(DISTRIBUTIONS)}), got "
                          f"{dists or 'none'}")
    dist = dists[0]
    arg = spec[dist]
    p = Param(name, dist)
    if dist == "choice":
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"{where}: choice needs a non-empty list, e.g. choice: [group, batch]; got {arg!r}")
        bad = [c for c in arg if not isinstance(c, _SCALARS)]
        if bad:
            raise ConfigError(f"{where}: choices must be scalars (str, number, bool, null); got {bad[0]!r} "
                              f"(build lists with a template instead)")
        p.choices = list(arg)
        if "step" in spec:
            raise ConfigError(f"{where}: 'step' is allowed with uniform and int only")
    else:
        if not (isinstance(arg, list) and len(arg) == 2 and all(_number(v) for v in arg)):
            raise ConfigError(f"{where}: {dist} needs [low, high] with two finite numbers, got {arg!r}")
        low, high = arg
        if dist == "int" and not all(float(v).is_integer() for v in arg):
            raise ConfigError(f"{where}: int needs integer bounds, got {arg!r}")
        if not low < high:
            raise ConfigError(f"{where}: {dist} bounds {arg!r}: low must be < high")
        if dist == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: loguniform bounds {arg!r}: low must be > 0")
        p.low, p.high = (int(low), int(high)) if dist == "int" else (float(low), float(high))
        if "step" in spec:
            step = spec["step"]
            if dist == "loguniform":
                raise ConfigError(f"{where}: 'step' is allowed with uniform and int only")
            if not _number(step) or step <= 0 or step > high - low or (dist == "int" and not float(step).is_integer()):
                raise ConfigError(f"{where}: step {step!r} must be a number > 0 and <= high - low"
                                  + (" (an integer for int)" if dist == "int" else ""))
            p.step = int(step) if dist == "int" else float(step)
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, dict) or not when:
            raise ConfigError(f"{where}: when must be a mapping {{parameter: value or [values]}}, got {when!r}")
        for ref, allowed in when.items():
            ref = str(ref)
            if ref not in earlier:
                raise ConfigError(f"{where}: when refers to {ref!r}, which is not a parameter defined before "
                                  f"{name!r}; defined before: {', '.join(earlier) or 'none'}")
            allowed = list(allowed) if isinstance(allowed, list) else [allowed]
            for v in allowed:
                if not earlier[ref].contains(v):
                    raise ConfigError(f"{where}: when {ref} = {v!r} can never hold: {ref} is "
                                      f"{earlier[ref].describe()}")
            p.when[ref] = allowed
    if "default" in spec:
        p.default, p.has_default = spec["default"], True
    return p


def parse_space(data: Any, path: str = "<space>", text: str = "") -> SearchSpace:
    """Validate the structure of a space (not yet against the config tree: see :func:`check_space`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a search space must be a mapping with 'params', got {type(data).__name__}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    raw = data.get("params")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: 'params' must be a non-empty mapping of name -> distribution "
                          f"({', '.join(DISTRIBUTIONS)})")
    params: dict[str, Param] = {}
    for name, spec in raw.items():
        params[str(name)] = _parse_param(str(name), spec, path, dict(params))
    templates = _flat_mapping(data.get("templates"), "templates", path)
    overrides = _flat_mapping(data.get("overrides"), "overrides", path)
    for key in list(templates) + list(overrides):
        if "." not in key:
            raise ConfigError(f"{path}: {key!r} is not a config key (section.key, e.g. loss.train)")
    for key in templates:
        if key in params:
            raise ConfigError(f"{path}: templates.{key}: {key!r} is also a parameter; set it one way only")
        t = templates[key]
        if not (isinstance(t, str) or (isinstance(t, list) and all(isinstance(i, str) for i in t))):
            raise ConfigError(f"{path}: templates.{key}: a template is a string or a list of strings, got {t!r}")
        for ref in placeholders(t):
            if ref not in params:
                raise ConfigError(f"{path}: templates.{key}: placeholder {{{ref}}} names no parameter; "
                                  f"parameters: {', '.join(params)}")
            if params[ref].when and not params[ref].has_default:
                raise ConfigError(f"{path}: templates.{key}: {{{ref}}} is conditional (when: ...) and has no "
                                  f"'default' for trials where it is not sampled; add default: VALUE")
    for key in overrides:
        if key in params or key in templates:
            raise ConfigError(f"{path}: overrides.{key}: also searched; set it one way only")
    points = data.get("points_to_evaluate") or []
    if not isinstance(points, list) or not all(isinstance(pt, dict) for pt in points):
        raise ConfigError(f"{path}: points_to_evaluate must be a list of mappings parameter -> value")
    clean_points = []
    for i, pt in enumerate(points):
        values: dict[str, Any] = {}
        for p in params.values():  # in order, so conditions see the values before them
            if p.name not in pt:
                continue
            if not p.active(values):
                raise ConfigError(f"{path}: points_to_evaluate[{i}].{p.name}: given, but its condition "
                                  f"{p.when} does not hold in this point")
            if not p.contains(pt[p.name]):
                raise ConfigError(f"{path}: points_to_evaluate[{i}].{p.name} = {pt[p.name]!r}: outside "
                                  f"{p.describe()}")
            values[p.name] = pt[p.name]
        extra = [k for k in pt if k not in params]
        if extra:
            raise ConfigError(f"{path}: points_to_evaluate[{i}]: {extra[0]!r} is not a parameter; "
                              f"parameters: {', '.join(params)}")
        missing = [p.name for p in params.values() if p.active(values) and p.name not in values]
        if missing:
            raise ConfigError(f"{path}: points_to_evaluate[{i}]: missing {', '.join(missing)} "
                              f"(a point gives every parameter whose condition holds)")
        clean_points.append({str(k): v for k, v in pt.items()})
    preset = data.get("preset") or ""
    if preset and not isinstance(preset, str):
        raise ConfigError(f"{path}: preset must be a preset name, got {preset!r}")
    metric, mode = data.get("metric", "val/loss"), data.get("mode", "min")
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise ConfigError(f"{path}: metric = {metric!r}: a validation metric, e.g. val/loss, val/crop_psnr, "
                          f"val/tiou, val/DeFMOSupervised")
    if mode not in ("min", "max"):
        raise ConfigError(f"{path}: mode = {mode!r}: must be 'min' or 'max'")
    return SearchSpace(path=path, params=list(params.values()), templates=templates, overrides=overrides,
                       points_to_evaluate=clean_points, preset=preset,
                       description=str(data.get("description") or ""), text=text, metric=metric, mode=mode)


def check_space(space: SearchSpace, base: Config | None = None) -> None:
    """Every key a space sets must be in the config tree and every value it can take must validate:
    the midpoint (first choice) assignment, then each parameter at its bounds / each of its choices."""
    base = base or Config()
    path = space.path
    default_tree = to_dict(Config())
    # 1. keys, one by one, against the defaults: names the culprit
    keyed = [(f"overrides.{k}", k, v) for k, v in space.overrides.items()]
    mid = space.midpoints()
    filled = space.fill({**{p.name: p.midpoint() for p in space.params}})
    keyed += [(f"params.{p.name}", p.name, filled.get(p.name, p.midpoint())) for p in space.params if p.is_config_key]
    keyed += [(f"templates.{k}", k, filled[k]) for k in space.templates]
    for where, key, value in keyed:
        tree = copy.deepcopy(default_tree)
        try:
            set_dotted(tree, key, value)
            config_from_dict(tree)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where}: {exc}") from None
    # 2. whole assignments: the midpoint, then one parameter moved at a time
    trials = [("the midpoint of every parameter", mid)]
    for p in space.params:
        for v in p.corners():
            values = dict(mid)
            values[p.name] = v
            values = {q.name: values[q.name] for q in space.params  # re-apply conditions in order
                      if q.name in values and q.active(values)}
            if p.name in values:
                trials.append((f"params.{p.name} = {v!r}", values))
    for what, values in trials:
        try:
            cfg = space.build_config(base, values)
            _check_parts(cfg)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{path}: with {what}: {exc}") from None


def _check_parts(cfg: Config) -> None:
    """Loss and encoder specs are checked by name and arguments, as training would build them."""
    from fmolab.losses import LossSet
    from fmolab.models import ENCODERS, RENDERERS
    from fmolab.registry import check_kwargs, parse_spec

    LossSet(cfg.loss.train, cfg.loss.compare)
    for reg, spec, key in ((ENCODERS, cfg.model.encoder, "model.encoder"), (RENDERERS, cfg.model.renderer, "model.renderer")):
        name, kwargs = parse_spec(spec)
        try:
            check_kwargs(reg.kind, name, reg.get(name), kwargs, spec)
        except ValueError as exc:
            raise ConfigError(f"{key} = {spec!r}: {exc}") from None


def load_space(path: str | Path, base: Config | None = None) -> SearchSpace:
    """Read, parse and check a space file; every mistake is a ConfigError naming file and key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"search space {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {path} is not valid YAML: {exc}") from None
    space = parse_space(data, str(path), text)
    check_space(space, base)
    return space


def space_from_text(text: str, path: str = "<space>", base: Config | None = None) -> SearchSpace:
    """A space from saved text (a resumed search re-reads the copy it saved)."""
    space = parse_space(yaml.safe_load(text), path, text)
    check_space(space, base)
    return space
