"""What the entry points share: config location, group-choice checks, one-line user errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from lit_modules.util import ConfigError, UserError
from objectives.base import KnobError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
GROUPS = ("objective", "model", "data", "trainer")
USER_ERRORS = (UserError, KnobError)


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_group_choices(argv: Sequence[str]) -> None:
    """Exit with one line when an override picks a config that does not exist (e.g. objective=foo).

    Hydra would report it over several lines; this names the value and lists what is allowed.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # a malformed override
        fail(f"cannot parse the overrides {' '.join(args)!r}: {str(e).splitlines()[0]}")
    for o in overrides:
        group = o.key_or_group
        if group not in GROUPS or o.package or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        options = available(group)
        for value in values:
            if value not in options:
                fail(f"{group}={value} is not available; choose one of: {', '.join(options)}")


def load_decodings(names: Sequence[str]) -> dict[str, dict]:
    """Decoding presets by name from configs/decoding/ -> {name: settings}."""
    options = available("decoding")
    out = {}
    for name in names:
        if name not in options:
            raise ConfigError(f"eval.decodings: {name!r} is not available; choose from: {', '.join(options)}")
        out[name] = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "decoding" / f"{name}.yaml"))
    return out


def unwrap(error: BaseException) -> BaseException:
    """Hydra wraps errors raised inside ``instantiate``; return the user error inside, if any."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def user_errors_as_one_line(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a user error becomes ``error: <message>`` and exit 2 (no traceback)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            inner = unwrap(e)
            if isinstance(inner, USER_ERRORS):
                fail(str(inner))
            raise

    return wrapped
