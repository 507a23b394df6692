"""Typed config groups: a dataclass per group checks its own fields; unknown keys are one line too."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from lit_modules.core.errors import ConfigError

T = TypeVar("T")


def typed(cls: type[T], values: Mapping[str, Any], group: str) -> T:
    """``cls(**values)`` for a config dataclass; a key it does not have is a ConfigError naming it and the
    group's settings. The dataclass's ``__post_init__`` checks the values (``group.key=value`` errors)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in values:
        if key not in names:
            raise ConfigError(f"{group}.{key} is not a setting of {group}; its settings: {', '.join(names)}")
    return cls(**values)


def is_number(value: Any) -> bool:
    """A finite int or float (bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require(key: str, value: Any, ok: bool, allowed: str) -> None:
    """A ConfigError ``key=value is not allowed; allowed`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed; {allowed}")


def positive_int(key: str, value: Any) -> None:
    require(key, value, is_int(value) and value > 0, "use a positive integer")


def config_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf where two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = dict.fromkeys([*a, *b])
        return [d for k in keys for d in config_differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)]
    return [] if a == b else [(prefix, a, b)]
