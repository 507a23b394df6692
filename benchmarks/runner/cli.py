"""What the entry points share on the command line: one-line errors, checks of the overrides that need no
composed config (group choices, the output directory, suite seeds), ``--overrides-file``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from benchmarks.runner.config import CONFIG_DIR, available, check_seeds, load_option
from lit_modules.core.errors import UserError

GROUPS = ("objective", "model", "data", "trainer", "suite", "debug")
# Hydra's own flags: with one of these (or a multirun), the entry point hands the command line to @hydra.main
HYDRA_FLAGS = (
    "-m",
    "--multirun",
    "--cfg",
    "-c",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--resolve",
    "--package",
    "-p",
    "--shell-completion",
    "-sc",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
)


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def unwrap(error: BaseException) -> BaseException:
    """Hydra wraps errors raised inside ``instantiate``; return the user error inside, if any."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def one_line(error: BaseException) -> str | None:
    """The line a user error is reported as (``None`` for anything else: a bug keeps its traceback)."""
    inner = unwrap(error)
    if isinstance(inner, UserError):
        return str(inner)
    if isinstance(inner, OSError) and inner.filename is not None:  # a read-only or full disk, a bad path
        return f"cannot write or read {inner.filename}: {inner.strerror or type(inner).__name__}"
    return None


def user_errors_as_one_line(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a user error becomes ``error: <message>`` and exit 2 (no traceback)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            line = one_line(e)
            if line is None:
                raise
            fail(line)

    return wrapped


def overrides(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` overrides of a command line."""
    return [a for a in argv if not a.startswith("-") and "=" in a]


def hands_to_hydra(argv: Sequence[str]) -> bool:
    """Whether the command line asks for Hydra's own machinery: a multirun or one of its flags."""
    return any(a.split("=")[0] in HYDRA_FLAGS for a in argv if a.startswith("-"))


def check_group_choices(argv: Sequence[str]) -> None:
    """One line for an override that picks a config that does not exist (``objective=foo``), with the list of
    what exists: Hydra would report it over several lines."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = overrides(argv)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # a malformed override
        fail(f"cannot parse the overrides {' '.join(args)!r}: {str(e).splitlines()[0]}")
    for o in parsed:
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
            if value not in options and value != "null":
                fail(f"{group}={value} is not available; choose one of: {', '.join(options)}")
    check_swept_knobs(parsed)


def check_swept_knobs(parsed: list) -> None:
    """A knob set on the command line (``objective.eps=0.2``) for several objectives at once (``-m
    objective=label_smoothing,z_loss`` or ``glob(*)``) must be a knob of each: one line naming the one that
    lacks it (Hydra would stop the sweep with its composition error)."""
    import fnmatch

    from hydra.core.override_parser.types import Glob

    from objectives.base import objective_knobs

    sweep = next((o for o in parsed if o.key_or_group == "objective" and o.is_sweep_override()), None)
    knobs = [
        o.key_or_group.split(".", 1)[1]
        for o in parsed
        if o.key_or_group.startswith("objective.") and not (o.is_add() or o.is_force_add())  # + and ++: as asked
    ]
    if sweep is None or not knobs:
        return
    value = sweep.value()
    if isinstance(value, Glob):
        names = [n for n in available("objective") if any(fnmatch.fnmatch(n, p) for p in value.include)]
        names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in value.exclude)]
    else:
        names = list(sweep.sweep_string_iterator())
    for name in names:
        own = list(objective_knobs(load_option("objective", name)))
        for knob in knobs:
            if knob.split(".")[0] not in own:
                fail(
                    f"objective.{knob} is not a knob of {name}, one of the swept objectives (its knobs: "
                    f"{', '.join(own) or 'none'}); sweep the objectives that have it, or give it as +objective.{knob}"
                )


def force_swept_knobs(argv: list[str]) -> list[str]:
    """In a sweep over objectives, ``objective.K=v`` becomes ``++objective.K=v``: Hydra composes a multirun's base
    config with the default objective first, which lacks K (each swept objective has it: ``check_swept_knobs``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = overrides(argv)
    parsed = dict(zip(args, OverridesParser.create().parse_overrides(args), strict=True))
    if not any(o.key_or_group == "objective" and o.is_sweep_override() for o in parsed.values()):
        return argv
    return [f"++{a}" if a in parsed and parsed[a].key_or_group.startswith("objective.") and not a.startswith("+") else a
            for a in argv]  # fmt: skip


def check_output_dir(directory: str, key: str) -> None:
    """One line when ``directory`` cannot be made: a read-only disk, no write permission, a file in the way
    (Hydra would fail with a traceback). Checked at its nearest existing ancestor (``os.access`` reports a
    read-only file system even to root)."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{key}: cannot make {directory!r}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{key}: cannot make {directory!r}: {existing} is read-only or not writable by this user")


def check_sweep_dir(argv: Sequence[str], config_name: str) -> None:
    """A multirun's directory, before Hydra makes it: ``hydra.sweep.dir`` as given, else under ``run_root``
    (the part before its first interpolation)."""
    settings = dict(a.lstrip("+").split("=", 1) for a in overrides(argv))
    run_root = settings.get("run_root") or OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml").get("run_root", ".")
    wanted = settings.get("hydra.sweep.dir", str(run_root)).replace("${run_root}", str(run_root)).split("${")[0]
    check_output_dir(wanted or ".", "hydra.sweep.dir")


def suite_seed_overrides(argv: list[str]) -> list[str]:
    """A suite sweeps ``seed`` over ``suite.seeds`` (its ``hydra.sweeper.params``); a ``seed=`` of the command
    line takes that sweep's place rather than multiplying it. ``suite.seeds`` of the command line is checked
    here, before any job (one line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = overrides(argv)
    parsed = dict(zip(args, OverridesParser.create().parse_overrides(args), strict=True))
    suite = next((o.get_value_element_as_str() for o in parsed.values() if o.key_or_group == "suite"), None)
    if suite in (None, "null"):
        return argv
    for o in parsed.values():
        if o.key_or_group == "suite.seeds":
            user_errors_as_one_line(check_seeds)(o.value())
    return [
        f"hydra.sweeper.params.seed={a.split('=', 1)[1]}" if a in parsed and parsed[a].key_or_group == "seed" else a
        for a in argv
    ]


def expand_overrides_file(argv: list[str]) -> list[str]:
    """``--overrides-file F.yaml``: F is a YAML list of Hydra overrides (as tune.py writes for the best trial);
    they are spliced into the command line where the flag stands."""
    if "--overrides-file" not in argv:
        return argv
    i = argv.index("--overrides-file")
    if i + 1 >= len(argv):
        fail("--overrides-file needs a path to a YAML list of overrides")
    path = Path(argv[i + 1])
    try:
        listed = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:
        fail(f"--overrides-file {path}: cannot read it ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if not isinstance(listed, list) or not all(isinstance(o, str) for o in listed):
        fail(f"--overrides-file {path}: expected a YAML list of overrides such as '- objective.eps=0.1'")
    return argv[:i] + listed + argv[i + 2 :]


def quiet_lightning() -> None:
    """Keep the console to the progress bar and the summary: no Lightning tips, no repeated lines."""
    import logging
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # val/nll is a torchmetrics MeanMetric: its compute() already reduces over every DDP process
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")
    # the training batches are a function of the global step (lit_modules.data.StepBatches), so a run resumed inside
    # its one long epoch reads what the uninterrupted run read (tested): Lightning's warning does not apply
    warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")
    # the frozen models some objectives keep (a reference snapshot, selective LM's scorer) stay in eval mode
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
