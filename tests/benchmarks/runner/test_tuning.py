"""Optuna tuning: create and continue a study, pruning, parallel workers on a journal, a Pareto
front, the best overrides reproduce the best trial, and one-line errors for bad input."""

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest

import benchmarks.runner.tuning as tuning
from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import run
from lit_modules.core.errors import ConfigError
from tests.faults import killed_once

BASE = ["objective=label_smoothing", "debug=tiny"]


def run_tune(tmp_path, *extra, base=BASE):
    cfg = compose([*base, *extra], "tune")
    run_overrides = [*base, *(e for e in extra if not e.startswith("tune."))]
    return tuning.tune(tuning.prepare(cfg, "label_smoothing", run_overrides), tmp_path)


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
    again = run(plan(compose(overrides), "label_smoothing"), tmp_path / "again")
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
    def terminated(*args, **kwargs):
        raise SystemExit(0)  # what a run does after SIGTERM, once its checkpoint is written

    monkeypatch.setattr(tuning, "run", terminated)
    with pytest.raises(SystemExit):
        run_tune(tmp_path, "tune.n_trials=2")
    assert [t.state.name for t in load(tmp_path).trials] == ["FAIL"]


def test_median_pruner_waits_a_third_of_the_run_by_default():
    pruner = tuning.make_pruner(tuning.TuneConfig(), 900)
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
def test_two_processes_share_a_journal(tmp_path, entry_command, root):
    journal = tmp_path / "journal.log"
    cmd = entry_command("tune", *BASE, "tune.n_trials=2", f"tune.storage=journal:{journal}")
    procs = [
        subprocess.Popen([*cmd, f"hydra.run.dir={tmp_path}/w{i}"], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
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
        (
            ["tune.metrics=[gen/greedy/seq_rep_9]"],
            "tune.metrics: 'gen/greedy/seq_rep_9' is not a metric of this run; e.g. val/nll, tf/ece, "
            "gen/greedy/seq_rep_4, gt/forward_kl (see docs/metrics.md)",
        ),
        (["tune.sampler=grid"], "tune.sampler='grid' is not allowed; choose one of auto, tpe, random, nsga2"),
        (["objective=mle"], "objective.search_space is empty: this objective has no knob to tune"),
        (["tune.prune_warmup_steps=-5"], "tune.prune_warmup_steps=-5 is not allowed; use null or an integer >= 0"),
    ],
)
def test_bad_tuning_input(tmp_path, extra, message):
    with pytest.raises(ConfigError) as error:
        run_tune(tmp_path, *extra)
    assert str(error.value).startswith(message)


@pytest.mark.slow
def test_a_storage_that_cannot_be_opened_is_one_line_on_the_command_line(tmp_path, cli):
    """SQLAlchemy's multi-line error about an unreachable server, as the one line of tune.py's exit 2."""
    bad_storage = cli("tune", *BASE, "tune.storage=postgresql://nobody@127.0.0.1:1/none", f"hydra.run.dir={tmp_path}")
    assert bad_storage.returncode == 2
    assert bad_storage.stderr.startswith("error: tune.storage='postgresql://nobody@127.0.0.1:1/none' cannot be opened")
    assert json.dumps(bad_storage.stderr.strip()).count("\\n") == 0


WORKER_OPENS_THE_STUDY = """
import sys, time, pathlib, optuna
from benchmarks.runner.tuning import open_storage
name, rounds = sys.argv[1], [pathlib.Path(go) for go in sys.argv[2:]]
(rounds[0].parent.parent / f"{name}.ready").touch()  # imports done
failed = False
for go in rounds:  # one fresh database a round; every worker opens it on the round's signal, together
    while not go.exists():
        time.sleep(0.002)
    try:
        storage = open_storage(go.read_text(), go.parent, heartbeat=1, max_retry=1)
        optuna.create_study(study_name="together", storage=storage, load_if_exists=True)
    except Exception as e:
        print(f"{go.parent.name}: {e}"[:300], file=sys.stderr)
        failed = True
    (go.parent / f"{name}.done").touch()
sys.exit(failed)
"""


@pytest.mark.slow
def test_workers_started_together_on_an_empty_postgresql_all_open_the_study(tmp_path, postgres_url, root):
    """Workers that open one fresh database at the same moment race to create Optuna's tables; without a
    retry some die with a duplicate key in pg_type (optuna/optuna#1092; 4 of 16 here before the fix). Four
    workers, four rounds: the workers import once, then open a fresh database together each round."""
    import optuna
    import psycopg

    rounds = [tmp_path / f"race_{i}" / "go" for i in range(1, 5)]
    names = [f"w{i}" for i in range(4)]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER_OPENS_THE_STUDY, name, *map(str, rounds)], cwd=root,
                                stderr=subprocess.PIPE, text=True) for name in names]  # fmt: skip

    def wait_for(paths):
        deadline = time.time() + 120
        while not all(p.exists() for p in paths):
            assert time.time() < deadline and all(w.poll() is None for w in workers), "a worker stopped early"
            time.sleep(0.01)

    wait_for([tmp_path / f"{name}.ready" for name in names])
    for go in rounds:
        database = go.parent.name
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {database}")
        url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
        go.parent.mkdir()
        go.with_suffix(".tmp").write_text(url)
        go.with_suffix(".tmp").rename(go)  # whole, at once: no worker reads a half-written URL
        wait_for([go.parent / f"{name}.done" for name in names])
        assert optuna.get_all_study_names(url) == ["together"]
    failures = [w.communicate(timeout=60)[1].strip() for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, failures


@pytest.mark.slow
def test_two_tuners_on_postgresql_survive_a_killed_worker(tmp_path, postgres_url, entry_command, fault_env, root):
    """Two tune.py workers on one study in a real PostgreSQL; one is SIGKILLed inside its second trial. Its
    trial is failed once its heartbeat is stale (2 x 1 s) and retried with the same parameters by the next
    worker that starts a trial; no finished trial is lost: every trial the workers finished is there. (The
    default SQLite storage beats and retries through the same RDBStorage code; test_resume.py kills runs.)"""
    import optuna

    tune = entry_command("tune", "objective=nce", "debug=tiny", "trainer.max_steps=20", f"tune.storage={postgres_url}",
                         "tune.heartbeat_interval=1")  # fmt: skip
    killed_cmd = [*tune, *killed_once(tmp_path / "kill", step=5, run=2), f"hydra.run.dir={tmp_path / 'a'}"]
    killed = subprocess.Popen([*killed_cmd, "tune.n_trials=3"], cwd=root, env=fault_env, stderr=subprocess.PIPE)
    steady = subprocess.Popen([*tune, f"hydra.run.dir={tmp_path / 'b'}", "tune.n_trials=3"], cwd=root, env=fault_env,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read().decode()[-2000:]
    _, steady_err = steady.communicate(timeout=600)
    assert steady.returncode == 0, steady_err[-2000:]
    time.sleep(2 + 1)  # the killed worker's trial is stale now, if the steady one did not find it so already
    last = subprocess.run([*tune, f"hydra.run.dir={tmp_path / 'c'}", "tune.n_trials=1"], cwd=root, env=fault_env,
                          capture_output=True, text=True)  # fmt: skip
    assert last.returncode == 0, last.stderr[-2000:]
    trials = optuna.load_study(study_name="nce", storage=postgres_url).trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states, states
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 1 + 3 + 1, states  # the killed worker's first trial, the steady one's 3, the last 1
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert any(t.params == failed.params for t in finished), states  # retried with its parameters
