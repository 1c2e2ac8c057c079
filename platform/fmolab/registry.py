"""Registries: parts (encoders, renderers, losses, input formats, metrics) looked up by name.

A part is addressed by a spec string ``"Name:k=v,k2=v2"``; the keyword values are parsed as YAML
scalars (numbers, booleans, null, strings). Adding a part is adding one decorated class.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, TypeVar

import yaml

T = TypeVar("T")


class SpecError(ValueError):
    """A spec string names an unknown part or gives arguments the part does not take."""


def parse_value(text: str) -> Any:
    """Parse one scalar the way YAML does ("1e-3" -> 0.001, "true" -> True, "a" -> "a")."""
    text = text.strip()
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-3" as a string; numbers with exponents are meant as floats here.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"AlphaDice:weight=0.5,eps=1e-6"`` -> ``("AlphaDice", {"weight": 0.5, "eps": 1e-06})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty spec {spec!r}: expected 'Name' or 'Name:key=value,key2=value2'")
    name, _, args = spec.strip().partition(":")
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"in spec {spec!r}: argument {part!r} is not of the form key=value")
        kwargs[key.strip()] = parse_value(value)
    return name.strip(), kwargs


class Registry(Generic[T]):
    """A name -> class (or factory) table for one kind of part."""

    def __init__(self, kind: str):
        self.kind = kind
        self._parts: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(obj: Callable[..., T]) -> Callable[..., T]:
            key = name or obj.__name__
            if key in self._parts and self._parts[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._parts[key] = obj
            return obj

        return add

    def names(self) -> list[str]:
        return sorted(self._parts)

    def __contains__(self, name: str) -> bool:
        return name in self._parts

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._parts:
            close = difflib.get_close_matches(name, self._parts, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}")
        return self._parts[name]

    def build(self, spec: str, **extra: Any) -> T:
        """Build a part from a spec string; ``extra`` are keyword arguments the caller supplies."""
        name, kwargs = parse_spec(spec)
        return self.make(name, {**extra, **kwargs}, spec)

    def make(self, name: str, kwargs: dict[str, Any], spec: str = "") -> T:
        """Build ``name`` with ``kwargs`` (already parsed; ``spec`` names them in errors)."""
        factory = self.get(name)
        check_kwargs(self.kind, name, factory, kwargs, spec or name)
        return factory(**kwargs)


def check_kwargs(kind: str, name: str, factory: Callable, kwargs: dict, spec: str) -> None:
    """Name the bad keyword before the constructor fails with a less helpful TypeError."""
    sig = inspect.signature(factory)
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            raise SpecError(
                f"{kind} {name!r} (from {spec!r}) takes no argument {key!r}; it takes: "
                f"{', '.join(accepted) or 'nothing'}"
            )
