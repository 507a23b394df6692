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
GROUPS = ("objective", "model", "data", "trainer", "suite")
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
        options = available(group)
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # glob(...) and other sweeps expand against the options: always valid
                continue
        else:
            values = [o.get_value_element_as_str()]
        for value in values:
            if value not in options and not (group == "suite" and value == "null"):
                fail(f"{group}={value} is not available; choose one of: {', '.join(options)}")


def check_config(argv: Sequence[str], validate: Callable[[Any], None] | None = None, config_name: str = "run") -> None:
    """Compose the config once before Hydra does, so that a bad override is one line naming it
    (not Hydra's multi-line report) and nothing is created on disk. Group choices are checked
    first, with the list of options; then ``validate`` runs on the composed config."""
    check_group_choices(argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    check_output_dir(argv, multirun, config_name)
    if multirun:
        return  # sweeps: each job is checked when it runs
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    overrides = [a for a in argv if not a.startswith("-") and "=" in a and not a.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
    except ConfigCompositionException as e:
        first = str(e).splitlines()[0] if str(e) else ""
        if first.startswith("Could not override"):
            key = first.split("'")[1]
            fail(f"{key} is not a setting of this config; list them with --cfg job, or add one with +{key}=...")
        fail(f"bad override: {first or type(e).__name__}")
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        fail(f"bad override: {'; '.join(lines[:2]) if lines else type(e).__name__}")
    if validate is not None:
        user_errors_as_one_line(validate)(cfg)


def check_output_dir(argv: Sequence[str], multirun: bool, config_name: str = "run") -> None:
    """Exit with one line when the run (or sweep) directory cannot be made: a read-only disk, a directory
    without write permission, a file in the way. Hydra would fail there with a traceback before any of our code.

    The directory is hydra.run.dir / hydra.sweep.dir when given, else under run_root; its part before the first
    interpolation is checked at its nearest existing ancestor (os.access reports a read-only file system even
    to root)."""
    import os

    settings = dict(a.lstrip("+").split("=", 1) for a in argv if not a.startswith("-") and "=" in a)
    run_root = settings.get("run_root") or OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml").get("run_root", ".")
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    wanted = settings.get(key, str(run_root)).replace("${run_root}", str(run_root)).split("${")[0] or "."
    existing = Path(wanted).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{key}: cannot make {wanted!r}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{key}: cannot make {wanted!r}: {existing} is read-only or not writable by this user")


def config_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf where two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = dict.fromkeys([*a, *b])
        return [d for k in keys for d in config_differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)]
    return [] if a == b else [(prefix, a, b)]


def load_decodings(names: Sequence[str]) -> dict[str, dict]:
    """Decoding presets by name from configs/decoding/ -> {name: settings}."""
    options = available("decoding")
    out = {}
    for name in names:
        if name not in options:
            raise ConfigError(f"eval.decodings: {name!r} is not available; choose from: {', '.join(options)}")
        out[name] = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "decoding" / f"{name}.yaml"))
    return out


def aux_terms(aux: Any) -> dict[str, dict]:
    """``aux={name: weight}`` -> {name: the objective config that defines the term, with ``weight``}. A term
    is the ``term`` method of an objective (z_loss, entropy_penalty, label_smoothing), built with its yaml's
    knobs; a one-line ConfigError for anything else."""
    import hydra

    aux = {} if aux is None else OmegaConf.to_container(aux) if OmegaConf.is_config(aux) else aux
    if not isinstance(aux, dict):
        raise ConfigError(f"aux={aux!r} is not allowed; use a mapping of terms to weights, e.g. aux={{z_loss:1e-4}}")
    terms = {}
    for name in available("objective"):
        config = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "objective" / f"{name}.yaml"))
        if callable(getattr(hydra.utils.get_class(config["_target_"]), "term", None)):
            terms[name] = config
    out = {}
    for name, weight in aux.items():
        if name not in terms:
            raise ConfigError(f"aux.{name} is not an auxiliary term; choose from: {', '.join(terms)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"aux.{name}={weight!r} is not allowed; use a weight >= 0")
        out[name] = {**terms[name], "weight": float(weight)}
    return out


def objective_label(objective_name: str, aux: Any) -> str:
    """The run's objective as reports and TensorBoard name it: ``label_smoothing+z_loss(0.0001)`` with terms."""
    from objectives.base import combined_name

    return combined_name(objective_name, {} if aux is None else aux)


# the suite's job directories name the terms too: ${objective_label:${hydra:runtime.choices.objective},${aux}}
OmegaConf.register_new_resolver("objective_label", objective_label, replace=True)


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
            if isinstance(inner, OSError) and inner.filename is not None:  # a read-only or full disk, a bad path
                fail(f"cannot write or read {inner.filename}: {inner.strerror or type(inner).__name__}")
            raise

    return wrapped
