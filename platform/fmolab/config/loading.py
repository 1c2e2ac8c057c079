"""Loading the config tree: defaults <- YAML files (presets, job specs) <- ``section.key=value``
overrides, every key and type checked against the dataclasses, then every section's ``check()``.
The tree is frozen from then on (``derive`` makes a changed, re-checked copy). The whole tree is saved
with every run (``to_dict``) and rebuilt exactly (``config_from_dict``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from fmolab.config.tree import Config, ConfigError
from fmolab.registry import parse_value
PRESET_DIR = Path(__file__).resolve().parents[1] / "presets"


def preset_names() -> list[str]:
    """The ready configurations shipped in ``presets/`` (one YAML file each)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def scale_names() -> list[str]:
    """The scale layers shipped in ``presets/scales/``: image size, model and data sizes, batch and
    rate under which a variant learns on a given machine; any preset takes one (``--scale``)."""
    return sorted(p.stem for p in (PRESET_DIR / "scales").glob("*.yaml"))


def preset_path(name: str) -> Path:
    """A preset's file, or a scale layer's (``preset: [double_blur, small]`` builds on both)."""
    for path in (PRESET_DIR / f"{name}.yaml", PRESET_DIR / "scales" / f"{name}.yaml"):
        if path.is_file():
            return path
    raise ConfigError(f"unknown preset {name!r}; known: {', '.join(preset_names())}; scales: "
                      f"{', '.join(scale_names())}")



def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(d: dict, prefix: str = "", cls: type | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: sections (dataclasses of the tree) are opened, values
    such as the ``render.blurs`` table stay whole."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        sub = hints.get(k)
        if isinstance(v, dict) and sub is not None and dataclasses.is_dataclass(sub):
            out.update(flatten(v, key + ".", sub))
        else:
            out[key] = v
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only lossless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping) for {_type_name(tp)}, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r}: must be one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key} = {value!r}: matches none of {tp} ({'; '.join(errors)})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: expected a list of {_type_name(item)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} = {value!r}: expected a mapping of {_type_name(kt)} -> {_type_name(vt)}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, bool, str) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key} = {value!r}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = prefix or "the top level"
            raise ConfigError(f"unknown key {full!r}{hint}; allowed in {where}: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    default = cls()
    for name in names:
        if name in kwargs and dataclasses.is_dataclass(hints[name]):
            continue
        if name not in kwargs:
            kwargs[name] = getattr(default, name)
    return cls(**kwargs)


def _check_all(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_all(value)
    if hasattr(obj, "check"):
        obj.check()


def set_dotted(tree: dict, dotted: str, value: Any, create: bool = False) -> None:
    """``tree["a"]["b"] = value`` for ``dotted = "a.b"``; missing sections are made when ``create``,
    else an error names the key (a search space must only set keys the tree has)."""
    import copy

    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if create and part not in node:
            node[part] = {}
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            where = ".".join(parts[:i + 1])
            raise ConfigError(f"override {dotted!r}: {where!r} is a value, not a section" if create else
                              f"unknown key {dotted!r}: {where!r} is not a section")
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


def _merge(base: dict, update: dict, cls: type | None = None) -> dict:
    """Merge ``update`` into ``base`` section by section; plain values (also dicts such as the blur
    table) are replaced whole, or a user could never drop a default blur span."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for k, v in update.items():
        sub = hints.get(k)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and sub is not None and dataclasses.is_dataclass(sub):
            out[k] = _merge(out[k], v, sub)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ConfigError(f"override {text!r} is not of the form section.key=value (e.g. train.lr=1e-4)")
    try:
        # ("" is in every string: test the first character only when there is one; key= means "")
        parsed = yaml.safe_load(value) if value.strip()[:1] and value.strip()[0] in "[{" else parse_value(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse value: {exc}") from exc
    return key.strip(), parsed


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, got {type(data).__name__}")
    return data


def _layers(path, seen: tuple = ()) -> list[tuple[str, dict]]:
    """A YAML file's config, after that of the preset(s) it names with ``preset: NAME`` or ``preset:
    [NAME, ...]`` (it builds on them in that order, e.g. the background+blur demo on the demo, or a
    variant at a scale: ``preset: [double_blur, small]``)."""
    data = read_yaml(path)
    data = (data.get("config") or {}) if "entrypoint" in data else dict(data)  # job specs embed a config
    bases = data.pop("preset", None)
    if bases is None:
        return [(str(path), data)]
    layers = []
    for base in bases if isinstance(bases, list) else [bases]:
        if base in seen:
            raise ConfigError(f"{path}: preset {base!r} builds on itself ({' -> '.join(seen + (base,))})")
        layers += _layers(preset_path(str(base)), (*seen, str(base)))
    return [*layers, (str(path), data)]


def load_config(files: list[str | os.PathLike] = (), overrides: list[str] = (), base: dict | None = None) -> Config:
    """Defaults <- ``base`` <- each YAML file <- each override, then validate the whole tree."""
    tree = to_dict(Config())
    if base:
        tree = _merge(tree, base)
    for f in files:
        for name, data in _layers(f):
            try:
                _build(Config, data)  # report unknown keys against the file, before merging
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
            tree = _merge(tree, data)
    for o in overrides:
        key, value = parse_override(o)
        patch: dict = {}
        set_dotted(patch, key, value, create=True)
        try:
            _build(Config, patch)
        except ConfigError as exc:
            raise ConfigError(f"override {o!r}: {exc}") from exc
        tree = _merge(tree, patch)
    cfg = _build(Config, tree)
    _check_all(cfg)
    return cfg


def config_from_dict(data: dict) -> Config:
    """Rebuild a saved tree (checkpoint, MLflow) exactly, with validation."""
    cfg = _build(Config, data)
    _check_all(cfg)
    return cfg


def derive(cfg: Config, changes: dict[str, Any]) -> Config:
    """``cfg`` with ``{"section.key": value}`` changed, checked like a loaded tree: the tree is frozen
    once checked, so a stage that needs another value (a run's name, a trial's seed) makes a new one."""
    tree = to_dict(cfg)
    for key, value in changes.items():
        set_dotted(tree, key, value)
    try:
        return config_from_dict(tree)
    except ConfigError as exc:
        raise ConfigError(f"{', '.join(changes)}: {exc}") from exc


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
