"""Optuna tuning: create and continue a study, pruning, parallel workers on a journal, a Pareto
front, the best overrides reproduce the best trial, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import optuna
import pytest
from conftest import ROOT, TINY, TINY_SYNTHETIC

from benchmarks.tune import compose_run, tune
from lit_modules.util import ConfigError

TUNE = [sys.executable, str(ROOT / "benchmarks" / "tune.py")]
BASE = ["objective=label_smoothing", *TINY, *TINY_SYNTHETIC]


def compose_tune(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("tune", overrides=overrides)


def run_tune(tmp_path, *extra, base=BASE):
    cfg = compose_tune([*base, *extra])
    return tune(cfg, tmp_path, "label_smoothing", [*base, *(e for e in extra if not e.startswith("tune."))])


def load(tmp_path, name="label_smoothing"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_study_is_created_then_continued_and_best_overrides_reproduce(tmp_path):
    run_tune(tmp_path, "tune.n_trials=3")
    assert len(load(tmp_path).trials) == 3
    summary = run_tune(tmp_path, "tune.n_trials=1")
    study = load(tmp_path)
    assert len(study.trials) == 4 and summary["trials"]["complete"] == 4
    assert len({t.params["eps"] for t in study.trials}) == 4  # the sampler explored
    lines = (tmp_path / "best_overrides.yaml").read_text().splitlines()
    overrides = [line[2:] for line in lines if line.startswith("- ")]
    assert f"objective.eps={study.best_trial.params['eps']}" in overrides
    from benchmarks.run import run

    again = run(compose_run(overrides), tmp_path / "again", "label_smoothing")
    assert again["metrics"]["val/nll"] == study.best_value
    assert (tmp_path / "trials.csv").read_text().count("\n") == 5  # header + 4 trials
    assert (tmp_path / "history.png").stat().st_size > 5000


def test_aggressive_pruner_prunes(tmp_path):
    summary = run_tune(
        tmp_path, "tune.n_trials=2", "tune.pruner=threshold", "tune.prune_above=0.5", "trainer.val_check_interval=1"
    )
    assert summary["trials"]["pruned"] == 2
    trial = load(tmp_path).trials[0]
    assert list(trial.intermediate_values) == [1]  # reported at the global step, pruned at the first check


def test_a_terminated_trial_is_failed_not_left_running(tmp_path, monkeypatch):
    import benchmarks.run

    def terminated(*args, **kwargs):
        raise SystemExit(0)  # what a run does after SIGTERM, once its checkpoint is written

    monkeypatch.setattr(benchmarks.run, "run", terminated)
    with pytest.raises(SystemExit):
        run_tune(tmp_path, "tune.n_trials=2")
    assert [t.state.name for t in load(tmp_path).trials] == ["FAIL"]


def test_median_pruner_waits_a_third_of_the_run_by_default():
    from benchmarks.tune import make_pruner

    cfg = compose_tune([*BASE])
    pruner = make_pruner(cfg.tune, 900)
    study = optuna.create_study(pruner=pruner)
    for value in (1.0, 1.0, 1.0, 1.0, 1.0):  # five finished trials that reported 1.0 at steps 250 and 500
        trial = study.ask()
        trial.report(value, 250), trial.report(value, 500)
        study.tell(trial, value)
    worse = study.ask()
    worse.report(2.0, 250)
    assert not worse.should_prune()  # step 250 < 900 // 3: too early to judge
    worse.report(2.0, 500)
    assert worse.should_prune()


def test_multi_objective_returns_a_pareto_set(tmp_path):
    summary = run_tune(tmp_path, "tune.n_trials=3", "tune.metrics=[val/nll,gen/greedy/seq_rep_4]")
    best = summary["best"]
    assert best and all(set(b["values"]) == {"val/nll", "gen/greedy/seq_rep_4"} for b in best)
    complete = [t for t in load(tmp_path).trials if t.state.name == "COMPLETE"]
    for b in best:  # nobody dominates a Pareto trial
        assert not any(
            all(o <= v for o, v in zip(t.values, b["values"].values(), strict=True))
            and t.values != list(b["values"].values())
            for t in complete
        )
    assert (tmp_path / "pareto_front.png").is_file()


@pytest.mark.slow
def test_two_processes_share_a_journal(tmp_path):
    journal = tmp_path / "journal.log"
    cmd = [*TUNE, *BASE, "tune.n_trials=2", f"tune.storage=journal:{journal}", f"hydra.run.dir={tmp_path}/w"]
    procs = [
        subprocess.Popen(
            [*cmd[:-1], f"{cmd[-1]}{i}"],
            cwd=ROOT,
            env=os.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="label_smoothing", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["objective.search_space.eps.low=0.9"], "objective.search_space.eps: low=0.9, high=0.5 is not allowed"),
        (["objective.search_space.eps.type=gaussian"], "objective.search_space.eps={'type': 'gaussian'"),
        (["tune.metrics=[val/nlll]"], "tune.metrics: 'val/nlll' is not a metric of this run"),
        (["tune.sampler=grid"], "tune.sampler='grid' is unknown"),
        (["objective=mle"], "objective.search_space is empty: this objective has no knob to tune"),
        (["tune.prune_warmup_steps=-5"], "tune.prune_warmup_steps=-5 is not allowed; use null or an integer >= 0"),
    ],
)
def test_bad_tuning_input(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")):
        run_tune(tmp_path, *extra)


@pytest.mark.slow
def test_bad_input_on_the_command_line_is_one_line(tmp_path):
    proc = subprocess.run(
        [*TUNE, *BASE, "tune.metrics=[gen/greedy/seq_rep_9]", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: tune.metrics: 'gen/greedy/seq_rep_9' is not a metric of this run; e.g. val/nll, tf/ece, "
        "gen/greedy/seq_rep_4, gt/forward_kl (see README, Metrics)"
    ]
    bad_storage = subprocess.run(
        [*TUNE, *BASE, "tune.storage=postgresql://nobody@127.0.0.1:1/none", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )
    assert bad_storage.returncode == 2
    assert bad_storage.stderr.startswith("error: tune.storage='postgresql://nobody@127.0.0.1:1/none' cannot be opened")
    assert json.dumps(bad_storage.stderr.strip()).count("\\n") == 0
