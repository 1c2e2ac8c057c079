"""The one error of a config or an option, and the rule that raises it."""
from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config file, override or option is wrong; the message says where, what, and what is allowed."""


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise a ConfigError ``key = value: rule`` unless ``ok`` (a section's ``check()`` rules)."""
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {rule}")
