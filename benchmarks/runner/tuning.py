"""Tune an objective's knobs with Optuna: each trial is a full objbench run of its own config.

The search space is the ``search_space`` of the objective's yaml; every other override of the command line is
shared by all trials. Trials train with optuna-integration's Lightning pruning callback on val/nll. The study
lives in a storage (SQLite by default) and continues when the command is run again. Outputs, in the study
directory: best_overrides.yaml (for ``run.py --overrides-file``), trials.csv, plots, and one run directory per
trial (TensorBoard). hydra-optuna-sweeper is not used: it pins optuna < 3 and gives trials no handle for pruning.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmarks.evaluation.names import metric_names
from benchmarks.runner.config import Plan, compose, container, plan
from benchmarks.runner.job import run
from lit_modules.core.configs import is_int, require
from lit_modules.core.errors import ConfigError
from lit_modules.core.files import atomic_write
from objectives.base import objective_knobs

SPACE_TYPES = ("float", "int", "categorical")
SAMPLERS = ("auto", "tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "threshold", "none")


@dataclass
class TuneConfig:
    """configs/tune.yaml's ``tune`` group (its comments say what each setting does)."""

    n_trials: int = 20
    metrics: list[str] = field(default_factory=lambda: ["val/nll"])
    directions: list[str] | None = None
    sampler: str = "auto"
    pruner: str = "median"
    prune_above: float | None = None
    prune_warmup_steps: int | None = None
    n_startup_trials: int = 5
    seed: int | None = None
    storage: str | None = None
    study_name: str | None = None
    timeout: float | None = None
    heartbeat_interval: int = 60
    max_retry: int = 2

    def __post_init__(self) -> None:
        require("tune.n_trials", self.n_trials, is_int(self.n_trials) and self.n_trials >= 1, "use a positive integer")
        require(
            "tune.metrics",
            self.metrics,
            isinstance(self.metrics, list) and len(self.metrics) > 0,
            "give at least one metric name, e.g. [val/nll]",
        )
        directions = self.directions or ["minimize"] * len(self.metrics)
        ok = len(directions) == len(self.metrics) and all(d in ("minimize", "maximize") for d in directions)
        require("tune.directions", directions, ok, f"list minimize/maximize once per metric ({len(self.metrics)})")
        self.directions = list(directions)
        require("tune.sampler", self.sampler, self.sampler in SAMPLERS, f"choose one of {', '.join(SAMPLERS)}")
        require("tune.pruner", self.pruner, self.pruner in PRUNERS, f"choose one of {', '.join(PRUNERS)}")
        if self.pruner == "threshold" and self.prune_above is None:
            raise ConfigError("tune.pruner=threshold needs tune.prune_above (prune trials whose metric exceeds it)")
        warmup = self.prune_warmup_steps
        require(
            "tune.prune_warmup_steps",
            warmup,
            warmup is None or (is_int(warmup) and warmup >= 0),
            "use null or an integer >= 0",
        )


@dataclass
class Tuning:
    """A checked tuning command: the run every trial shares (checked at the yaml's knobs), the tuner's settings,
    the search space, and the command line's run overrides that every trial repeats."""

    run: Plan
    tune: TuneConfig
    space: dict[str, dict]
    overrides: list[str]

    @property
    def single(self) -> bool:
        return len(self.tune.metrics) == 1


def prepare(cfg: DictConfig, objective_name: str, overrides: list[str]) -> Tuning:
    """Check a tuning config (configs/tune.yaml: the run's config and ``tune``): a ``Tuning``, or one line."""
    from lit_modules.core.configs import typed

    settings = typed(TuneConfig, container(cfg.tune), "tune")
    run_plan = plan(cfg, objective_name)
    raw_space = cfg.objective.get("search_space")
    space = parse_space(OmegaConf.to_container(raw_space) if raw_space is not None else {}, cfg.objective)
    check_metrics(settings.metrics, run_plan)
    return Tuning(run_plan, settings, space, overrides)


def parse_space(space, objective_cfg: DictConfig) -> dict[str, dict]:
    """Validate an objective's search space: {knob: {type, low, high[, log]} | {type: categorical, choices}}."""
    if not space:
        raise ConfigError("objective.search_space is empty: this objective has no knob to tune (mle has none)")
    out = {}
    for knob, spec in space.items():
        where = f"objective.search_space.{knob}"
        if knob not in objective_knobs(objective_cfg):
            raise ConfigError(f"{where}: {knob!r} is not a knob of this objective")
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise ConfigError(f"{where}={spec!r} is malformed; use {{type: float|int|categorical, ...}}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"{where}: a categorical knob needs a non-empty list of choices")
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
                raise ConfigError(f"{where}: low={low!r}, high={high!r} is not allowed; use numbers with low < high")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{where}: log=true needs low > 0 (low={low})")
            unknown = set(spec) - {"type", "low", "high", "log", "step"}
            if unknown:
                raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: type, low, high, log, step")
        out[knob] = spec
    return out


def suggest(trial, space: dict[str, dict]) -> dict:
    values = {}
    for knob, spec in space.items():
        if spec["type"] == "float":
            values[knob] = trial.suggest_float(knob, spec["low"], spec["high"], log=bool(spec.get("log")))
        elif spec["type"] == "int":
            values[knob] = trial.suggest_int(knob, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[knob] = trial.suggest_categorical(knob, spec["choices"])
    return values


def check_metrics(metrics: list[str], run_plan: Plan) -> list[str]:
    known = metric_names(run_plan.eval.decodings, run_plan.synthetic)
    names = list(metrics)
    for name in names:
        if name not in known:
            raise ConfigError(
                f"tune.metrics: {name!r} is not a metric of this run; e.g. val/nll, tf/ece, gen/greedy/seq_rep_4, "
                "gt/forward_kl (see docs/metrics.md)"
            )
    return names


def open_storage(spec: str | None, study_dir: Path, heartbeat: int, max_retry: int):
    """A storage from config: SQLite in the study dir by default, a journal file, or an RDB URL."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if spec is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        spec = f"sqlite:///{study_dir / 'study.db'}"
    try:
        if spec.startswith("journal:"):
            path = Path(spec[len("journal:") :]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if "://" not in spec:
            raise ValueError("use sqlite:///path.db, journal:path, or a database URL such as postgresql://...")
        if spec.startswith("sqlite:///"):
            Path(spec[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return with_schema_race_retried(
            lambda: RDBStorage(
                spec,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                # RetryFailedTrialCallback's successor (optuna >= 4.9): a trial whose worker stopped beating is
                # failed and re-queued with the same parameters
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            )
        )
    except Exception as e:  # Optuna's own, SQLAlchemy's (bad URL, unreachable server, missing driver), OSError
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"tune.storage={mask_password(spec)!r} cannot be opened: {mask_password(detail, spec)[:200]}"
        ) from None


def with_schema_race_retried(open_rdb: Callable[[], Any], attempts: int = 5) -> Any:
    """``open_rdb()``, again when it lost the race to create Optuna's tables in a fresh database.

    Workers started together on an empty database each run CREATE TABLE; all but one can fail
    (PostgreSQL: a duplicate key in pg_type; SQLite: "table ... already exists"; optuna/optuna#1092).
    Seen here: 4 of 16 workers started in pairs. The winner's tables are there a moment later, so the
    loser opens them on a retry; any other error (bad URL, no server) is raised at once."""
    import random

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            return open_rdb()
        except (IntegrityError, ProgrammingError, OperationalError) as e:
            lost_race = isinstance(e, IntegrityError) or "already exists" in str(e)
            if not lost_race or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.3 * (attempt + 1))


def mask_password(text: str, url: str | None = None) -> str:
    """``text`` with the password of a database URL (``url``, or the URL that ``text`` is) as ***."""
    import re

    match = re.match(r"^[\w+.-]+://[^:/@]+:([^@]+)@", url if url is not None else text)
    return text.replace(match.group(1), "***") if match else text


def make_sampler(t: TuneConfig, n_metrics: int, seed_offset: int = 0):
    import optuna

    seed = None if t.seed is None else t.seed + seed_offset
    name = t.sampler if t.sampler != "auto" else ("tpe" if n_metrics == 1 else "nsga2")
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=t.n_startup_trials),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    return samplers[name]()


def make_pruner(t: TuneConfig, max_steps: int):
    import optuna

    warmup = max_steps // 3 if t.prune_warmup_steps is None else t.prune_warmup_steps
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=t.n_startup_trials, n_warmup_steps=warmup),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=max(warmup, 1), max_resource=max_steps),
        "threshold": lambda: optuna.pruners.ThresholdPruner(upper=t.prune_above),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    return pruners[t.pruner]()


def step_pruning_callback(trial, monitor: str):
    """optuna-integration's Lightning pruning callback, reporting at the global step.

    The library reports at ``current_epoch``; objbench validates every ``val_check_interval`` steps
    inside one long epoch, so every report would land on step 0 and pruning would never see progress.
    """
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    class StepPruning(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or self.is_ddp_backend:
                return super().on_validation_end(trainer, pl_module)
            score = trainer.callback_metrics.get(self.monitor)
            if score is None:
                warnings.warn(f"pruning: {self.monitor} was not logged", stacklevel=1)
                return None
            self._trial.report(score.item(), step=trainer.global_step)
            if trainer.state.fn == "fit" and self._trial.should_prune():  # not the final validate() of a finished run
                raise optuna.TrialPruned(f"pruned at step {trainer.global_step}")
            return None

    return StepPruning(trial, monitor=monitor)


def base_overrides(argv: list[str]) -> list[str]:
    """The run.py overrides of this command (tune.* and hydra.* are the tuner's own)."""
    return [
        a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith(("tune.", "hydra."))
    ]


def open_study(tuning: Tuning, study_dir: Path):
    """The study of this command: created, or loaded and continued with a fresh sampler seed (else the sampler
    would propose the same points again)."""
    import optuna

    t, n_metrics = tuning.tune, len(tuning.tune.metrics)
    pruner = make_pruner(t, tuning.run.trainer.max_steps) if tuning.single else optuna.pruners.NopPruner()
    study = optuna.create_study(
        study_name=t.study_name or tuning.run.objective_name,
        storage=open_storage(t.storage, study_dir, t.heartbeat_interval, t.max_retry),
        sampler=make_sampler(t, n_metrics),
        pruner=pruner,
        directions=t.directions,
        load_if_exists=True,
    )
    if study.trials:
        study.sampler = make_sampler(t, n_metrics, seed_offset=len(study.trials))
    return study


def trial_function(tuning: Tuning, study, study_dir: Path) -> Callable:
    """Optuna's objective: one run at the trial's knobs, its metrics (a diverged run is pruned)."""
    import optuna

    metrics = tuning.tune.metrics
    needs_evaluation = any(not m.startswith("val/") for m in metrics)

    def objective(trial: optuna.Trial):
        values = suggest(trial, tuning.space)
        trial_overrides = [*tuning.overrides, *(f"objective.{k}={v}" for k, v in values.items())]
        trial.set_user_attr("overrides", trial_overrides)
        trial_plan = plan(compose(trial_overrides), tuning.run.objective_name)
        pruning = tuning.single and metrics[0].startswith("val/")
        callbacks = (step_pruning_callback(trial, metrics[0]),) if pruning else ()
        try:
            results = run(trial_plan, study_dir / f"trial_{trial.number:04d}", callbacks, needs_evaluation)
        except SystemExit:  # SIGTERM: Optuna records Exception and KeyboardInterrupt only; the trial would stay RUNNING
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        out = []
        for name in metrics:
            value = results["metrics"].get(name)
            if value is None or not math.isfinite(value):
                raise optuna.TrialPruned(f"{name} is not finite ({value})")  # e.g. a diverged run
            out.append(value)
        return out[0] if tuning.single else out

    return objective


def tune(tuning: Tuning, study_dir: Path) -> dict:
    """Run ``tune.n_trials`` more trials of the study in ``study_dir``; write its outputs; return its summary."""
    import optuna

    study = open_study(tuning, study_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    objective = trial_function(tuning, study, study_dir)
    study.optimize(
        objective, n_trials=tuning.tune.n_trials, timeout=tuning.tune.timeout, catch=(Exception,), gc_after_trial=True
    )
    wall = time.perf_counter() - t0
    return write_outputs(study, study_dir, tuning.tune.metrics, tuning.overrides, wall)


def write_outputs(study, study_dir: Path, metrics: list[str], overrides: list[str], wall: float) -> dict:
    import optuna

    trials = study.trials
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    frame = study.trials_dataframe()
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    atomic_write(study_dir / "trials.csv", buffer.getvalue())
    summary = {"study": study.study_name, "trials": states, "wall_s_this_invocation": wall}
    best = study.best_trials if len(metrics) > 1 else ([study.best_trial] if states["complete"] else [])
    if best:
        chosen = best[0]
        lines = [
            "# best trial's overrides: python benchmarks/run.py --overrides-file THIS_FILE",
            f"# trial {chosen.number}: "
            + ", ".join(f"{m}={v:.6g}" for m, v in zip(metrics, chosen.values, strict=True)),
        ]
        lines += [f"- {o}" for o in chosen.user_attrs["overrides"]]
        atomic_write(study_dir / "best_overrides.yaml", "\n".join(lines) + "\n")
        summary["best"] = [
            {"number": b.number, "params": b.params, "values": dict(zip(metrics, b.values, strict=True))} for b in best
        ]
    write_plots(study, study_dir, metrics)
    print_summary(summary, metrics, study_dir)
    return summary


def write_plots(study, study_dir: Path, metrics: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    plots = {}
    if len(metrics) == 1:
        plots["history.png"] = lambda: ovm.plot_optimization_history(study, target_name=metrics[0])
        if len(complete) >= 2 and len(complete[0].params) >= 1:
            plots["importances.png"] = lambda: ovm.plot_param_importances(study)
    elif len(metrics) in (2, 3) and complete:
        plots["pareto_front.png"] = lambda: ovm.plot_pareto_front(study, target_names=metrics)
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
            plt.close(fig)
            atomic_write(study_dir / name, buffer.getvalue())
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for this plot
            print(f"tune: skipped {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


def print_summary(summary: dict, metrics: list[str], study_dir: Path) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items() if n)
    print(f"\nstudy {summary['study']}: {counts} ({summary['wall_s_this_invocation']:.0f} s this run)")
    for b in summary.get("best", []):
        values = ", ".join(f"{m}={v:.4f}" for m, v in b["values"].items())
        print(f"  trial {b['number']}: {values}  params {b['params']}")
    print(f"outputs: {study_dir} (best_overrides.yaml, trials.csv, plots)\n")
