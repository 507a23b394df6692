"""Equal tuning effort: every objective with knobs gets the same Optuna budget, then the suite at its best knobs.

For every objective whose yaml has a ``search_space``: an Optuna study (``benchmarks/runner/tuning.py``) of
``tune.n_trials`` trials on ``val/nll`` at the suite's budget, with the same sampler seed and no pruner for every
objective (a pruned trial has no final value, and the curve below needs every trial's), at the tuning seed (0:
not one of the suite's seeds, so knobs are not chosen on the runs that judge them); then the suite's seeds at
the best knobs. MLE has no knobs: its tuned row is its default row. Writes, in the output directory:
``suite/<objective>/seed_<s>/`` (the tuned runs), ``<objective>/`` (each study), ``tuned_report.md`` (default
knobs beside tuned knobs, paired by seed) and ``expected_best.png``: the expected best validation NLL after n
trials, per objective (Dodge et al. 2019, "Show your work"). Rerunning continues: finished trials and runs are
kept, and only what is missing is done.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.runner.config import compose, container, load_option, plan
from benchmarks.runner.tuning import TuneConfig
from lit_modules.core.configs import typed
from lit_modules.core.errors import ConfigError
from lit_modules.core.files import atomic_write, atomic_write_json

TUNE_DEFAULTS = ["tune.pruner=none", "tune.seed=0", "tune.metrics=[val/nll]"]


def expected_best(values: list[float], n_max: int) -> np.ndarray:
    """E[min of n trials] for n = 1..n_max, n trials drawn with replacement from the observed ones
    (Dodge et al. 2019, eq. 1, for a metric to minimise): Σ_i v_(i) · (P(min ≥ v_(i)) − P(min > v_(i)))."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    N = len(v)
    n = np.arange(1, n_max + 1)[:, None]
    above_or_at = ((N - np.arange(N)) / N)[None, :] ** n  # P(all n draws ≥ v_(i))
    above = ((N - np.arange(1, N + 1)) / N)[None, :] ** n  # P(all n draws > v_(i))
    return ((above_or_at - above) * v[None, :]).sum(1)


def searchable(objective: str) -> bool:
    return bool(load_option("objective", objective).get("search_space"))


def tune_objective(objective: str, overrides: list[str], out: Path, n_trials: int, tune_seed: int) -> dict:
    """The study of one objective, continued up to n_trials finished trials: {best params, values, wall}."""
    import optuna

    from benchmarks.runner.tuning import open_storage, prepare, tune

    study_dir = out / objective
    cfg = compose([f"objective={objective}", *TUNE_DEFAULTS, *overrides, f"seed={tune_seed}"], "tune")
    storage = open_storage(cfg.tune.storage, study_dir, cfg.tune.heartbeat_interval, cfg.tune.max_retry)
    name = cfg.tune.study_name or objective
    try:
        done = [t for t in optuna.load_study(study_name=name, storage=storage).trials if t.state.is_finished()]
    except KeyError:  # no such study yet
        done = []
    t0 = time.perf_counter()
    if len(done) < n_trials:
        cfg.tune.n_trials = n_trials - len(done)
        run_overrides = [o for o in overrides if not o.lstrip("+~").startswith("tune.")]
        trial_overrides = [f"objective={objective}", *run_overrides, f"seed={tune_seed}"]
        tune(prepare(cfg, objective, trial_overrides), study_dir)
    study = optuna.load_study(study_name=name, storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise ConfigError(f"{objective}: no trial of its study finished; see {study_dir}")
    best = min(complete, key=lambda t: t.value)
    return {
        "params": best.params,
        "best_val_nll": best.value,
        "values": [t.value for t in sorted(complete, key=lambda t: t.number)],
        "trials": len(complete),
        "wall_s": time.perf_counter() - t0,
    }


def run_seeds(objective: str, knobs: dict, overrides: list[str], seeds: list[int], out: Path) -> None:
    """The suite's jobs of one objective at ``knobs`` (finished ones are skipped, as in the suite)."""
    from benchmarks.runner.job import run
    from benchmarks.runner.results import finished_results

    for seed in seeds:
        knob_overrides = [f"objective.{k}={v}" for k, v in knobs.items()]
        cfg = compose([f"objective={objective}", "suite=default", *overrides, *knob_overrides, f"seed={seed}"])
        run_dir = out / "suite" / objective / f"seed_{seed}"
        if finished_results(run_dir, cfg) is None:
            run(plan(cfg, objective), run_dir)


def knob_text(knobs: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in knobs.items()) or "–"


def report(default_dir: Path | None, tuned_dir: Path, studies: dict[str, dict], n_trials: int) -> str:
    """Default knobs beside tuned knobs: test NLL over the seeds, and their difference paired by seed."""
    from benchmarks.reporting.report import build
    from benchmarks.reporting.runs import collect
    from benchmarks.reporting.stats import paired_difference
    from benchmarks.reporting.tables import fmt, fmt_interval

    tuned = build(collect(tuned_dir)).rows
    default = build(collect(default_dir)).rows if default_dir is not None and default_dir.is_dir() else {}
    lines = [
        "| objective | default knobs | NLL, default knobs | tuned knobs | best val NLL in tuning | NLL, tuned knobs "
        "| Δ tuned − default | tuning wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for objective, row in tuned.items():
        study = studies.get(objective, {})
        yaml = load_option("objective", objective)
        defaults = {k: yaml.get(k) for k in study.get("params", {})}
        d = default.get(objective)
        delta = "–"
        seeds = sorted(set(d.runs) & set(row.runs)) if d is not None else []
        if len(seeds) >= 2:
            tuned_nll = [row.runs[s].metrics["tf/nll"] for s in seeds]
            delta = fmt_interval(paired_difference(tuned_nll, [d.runs[s].metrics["tf/nll"] for s in seeds]), True)
        cells = [
            objective,
            knob_text(defaults),
            fmt_interval(d.intervals.get("tf/nll")) if d is not None else "–",
            knob_text(study.get("params", {})),
            fmt(study["best_val_nll"]) if study else "–",
            fmt_interval(row.intervals.get("tf/nll")),
            delta,
            f"{study['wall_s']:.0f} s" if study else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    wall = sum(s["wall_s"] for s in studies.values())
    return (
        f"Every objective with knobs: {n_trials} Optuna trials on val/nll (TPE, the same sampler seed, no pruner), "
        f"then the suite's seeds at the best knobs; {wall / 60:.0f} min of tuning in this invocation. "
        "NLL: test NLL, mean ± 95% interval over seeds; Δ paired by seed.\n\n" + "\n".join(lines) + "\n"
    )


def plot_expected_best(studies: dict[str, dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.reporting.plots import objective_colors

    colors = objective_colors([*studies, "mle"])  # the colours of the suite's plots
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for objective, study in sorted(studies.items()):
        curve = expected_best(study["values"], len(study["values"]))
        ax.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=objective, color=colors[objective])
    ax.set_xlabel("number of tuning trials")
    ax.set_ylabel("expected best validation NLL")
    ax.set_title("Expected best validation NLL after n trials (Dodge et al. 2019)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def equal_tuning(names: list[str], overrides: list[str], out: Path, default_suite: Path | None, tune_seed: int) -> str:
    """Tune every objective of ``names`` that has knobs with the same budget, run the suite's seeds at the best
    knobs, and write the comparison with the default knobs; returns its Markdown."""
    run_overrides = [o for o in overrides if not o.startswith("tune.")]
    tune_overrides = [o for o in overrides if o.startswith("tune.")]
    base = compose(["suite=default", *TUNE_DEFAULTS, *overrides], "tune")  # every override checked once, here
    settings = plan(base, "mle")
    n_trials = typed(TuneConfig, container(base.tune), "tune").n_trials
    studies = {}
    for objective in names:
        knobs: dict = {}
        if searchable(objective):
            studies[objective] = tune_objective(
                objective, ["suite=default", *run_overrides, *tune_overrides], out, n_trials, tune_seed
            )
            knobs = studies[objective]["params"]
        run_seeds(objective, knobs, run_overrides, settings.suite.seeds, out)
    atomic_write_json(out / "studies.json", studies)
    text = "# objbench: default knobs against tuned knobs\n\n" + report(default_suite, out / "suite", studies, n_trials)
    if studies:
        plot_expected_best(studies, out / "expected_best.png")
        text += "\n![expected best validation NLL](expected_best.png)\n"
    atomic_write(out / "tuned_report.md", text)
    return text
