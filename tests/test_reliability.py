"""Interrupted runs resume to the same result; SIGTERM checkpoints; a NaN stops the run; files are
written atomically; bad checkpoints and storages are one-line errors; a killed tuner continues."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, TINY_SYNTHETIC, compose

from benchmarks.run import run
from lit_modules.system import NonFiniteLossError
from lit_modules.util import ConfigError, atomic_write_json

RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
LONGER = [
    *TINY,
    *TINY_SYNTHETIC,
    "objective=nce",
    "trainer.max_steps=40",
    "trainer.val_check_interval=15",
    "checkpoint.every_n_steps=20",
    "data.train_tokens=30000",
]


def wait_for(path, timeout=120):  # a file the run writes: no race, only a limit
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def killed_once(marker, step: int, run: int = 1) -> list[str]:
    """Overrides that train NCE through conftest.KilledOnce: SIGKILL at ``step`` of the ``run``-th run."""
    return ["objective._target_=conftest.KilledOnce", f"+objective.step={step}", f"+objective.marker={marker}",
            f"+objective.run={run}"]  # fmt: skip


CONFTEST = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # the subprocess finds conftest's objectives


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL at step 25 (the last checkpoint at step 20), then resume=true: the metrics and validation
    history of a run that was never interrupted, to the bit."""
    marker = tmp_path / "kill"
    args = [*LONGER, *killed_once(marker, 25)]
    out = tmp_path / "killed"
    killed = subprocess.run([*RUN, *args, f"hydra.run.dir={out}"], cwd=ROOT, env=CONFTEST, capture_output=True)
    assert killed.returncode == -signal.SIGKILL and marker.exists()
    assert not (out / "results.json").exists()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    resumed = subprocess.run(
        [*RUN, *args, f"hydra.run.dir={out}", "resume=true"], cwd=ROOT, env=CONFTEST, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resume=true: continuing from {out / 'checkpoints' / 'last.ckpt'} (step 20)" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    reference = run(compose(LONGER), tmp_path / "reference", "nce")  # KilledOnce trains as NCE
    assert results["metrics"] == reference["metrics"]
    assert results["history"] == json.loads(json.dumps(reference["history"]))


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    results = run(compose([*TINY, *TINY_SYNTHETIC, "resume=true"]), tmp_path, "mle")
    assert "resume=true: no checkpoint at" in capsys.readouterr().out
    assert results["timing"]["steps"] == 3


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint(sig, code, tmp_path):
    """SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C): the step in progress ends, last.ckpt is saved,
    one line says where, exit 128 + the signal; no traceback, no results."""
    out = tmp_path / "run"
    args = [*TINY, *TINY_SYNTHETIC, "trainer.max_steps=100000", "checkpoint.every_n_steps=5", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(
        [*RUN, *args], cwd=ROOT, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(out / "checkpoints" / "last.ckpt")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stdout[-1500:] + stderr[-1500:]
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert f"{sig.name}: checkpoint saved at step {step} in {out / 'checkpoints' / 'last.ckpt'}" in stdout
    assert "Traceback" not in stderr and not (out / "results.json").exists()


def test_non_finite_loss_stops_the_run(tmp_path):
    cfg = compose([*TINY, *TINY_SYNTHETIC, "trainer.max_steps=10", "checkpoint.every_n_steps=1"])
    cfg.objective = {"_target_": "conftest.NaNAtStep", "step": 2}
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 2 of objective nan_at_step \(nll="):
        run(cfg, tmp_path, "nan_at_step")
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # last good
    assert not (tmp_path / "results.json").exists()


def test_atomic_write_keeps_the_old_file_on_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"old": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


@pytest.mark.slow
def test_checkpoint_of_another_config_or_a_corrupt_one_is_one_line(tmp_path):
    """A resume never crosses a change of the training config: model, objective, seed, budget, optimiser."""
    base = [*TINY, *TINY_SYNTHETIC]
    run(compose(base), tmp_path, "mle")
    for override, difference in (
        ("model.d_model=64", "model.d_model: checkpoint 128, config 64"),
        ("seed=2", "seed: checkpoint 1234, config 2"),
        ("trainer.max_steps=2", "trainer.max_steps: checkpoint 3, config 2"),
        ("optim.lr=0.001", "optim.lr: checkpoint 0.003, config 0.001"),
        (
            "objective=label_smoothing",
            "objective._target_: checkpoint 'objectives.mle.MLE', config 'objectives.label_smoothing.LabelSmoothing');",
        ),  # its knobs unsaid
    ):
        with pytest.raises(ConfigError, match=r"was written by a run with another config \(.*" + re.escape(difference)):
            run(compose([*base, override, "resume=true"]), tmp_path, "mle")
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage")
    proc = subprocess.run(
        [*RUN, *base, f"hydra.run.dir={tmp_path}", "resume=true"],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {tmp_path / 'checkpoints' / 'last.ckpt'} cannot be read as a checkpoint (UnpicklingError); "
        "delete it to start fresh"
    )


@pytest.mark.slow
def test_killed_tuner_continues_the_study(tmp_path):
    """SIGKILL inside the second trial (at its step 5), then the tuner again: the killed trial is marked
    failed once its heartbeat is stale, re-queued with its parameters, and the study goes on."""
    import optuna

    db = tmp_path / "study.db"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "tune.py"),
        "objective=nce",
        *TINY,
        *TINY_SYNTHETIC,
        *killed_once(tmp_path / "kill", step=5, run=2),
        "trainer.max_steps=20",
        f"tune.storage=sqlite:///{db}",
        "tune.heartbeat_interval=1",
        f"hydra.run.dir={tmp_path}",
    ]
    killed = subprocess.run([*cmd, "tune.n_trials=3"], cwd=ROOT, env=CONFTEST, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    states = [t.state.name for t in optuna.load_study(study_name="nce", storage=f"sqlite:///{db}").trials]
    assert states == ["COMPLETE", "RUNNING"], states  # the kill landed inside the second trial
    time.sleep(2 + 1)  # the dead process beats no more: its heartbeat is stale after the grace (2 x 1 s)
    again = subprocess.run([*cmd, "tune.n_trials=1"], cwd=ROOT, env=CONFTEST, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(study_name="nce", storage=f"sqlite:///{db}").trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states, states  # the interrupted trial
    failed = next(t for t in trials if t.state.name == "FAIL")
    # the heartbeat callback re-queues it with its parameters (run now, or by the next invocation)
    assert any(t.params == failed.params for t in trials if t.state.name in ("COMPLETE", "WAITING")), states
    assert states.count("COMPLETE") >= 2  # and the restarted tuner finished one more


WORKER_OPENS_THE_STUDY = """
import sys, time, pathlib, optuna
from benchmarks.tune import open_storage
go = pathlib.Path(sys.argv[2])
while not go.exists():  # imports done: every worker starts on the signal, together
    time.sleep(0.005)
storage = open_storage(sys.argv[1], go.parent, heartbeat=1, max_retry=1)
optuna.create_study(study_name="together", storage=storage, load_if_exists=True)
"""


@pytest.mark.slow
def test_workers_started_together_on_an_empty_postgresql_all_open_the_study(tmp_path, postgres_url):
    """Workers that open one fresh database at the same moment race to create Optuna's tables; without a
    retry some die with a duplicate key in pg_type (optuna/optuna#1092; 4 of 16 here before the fix)."""
    import optuna
    import psycopg

    failures = []
    for database in ("race_1", "race_2", "race_3"):
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {database}")
        url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
        go = tmp_path / database / "go"
        go.parent.mkdir()
        workers = [subprocess.Popen([sys.executable, "-c", WORKER_OPENS_THE_STUDY, url, str(go)], cwd=ROOT,
                                    stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
        time.sleep(4)  # their imports
        go.touch()
        failures += [w.communicate(timeout=120)[1].strip().splitlines()[-1:] for w in workers if w.wait(120) != 0]
        assert len(optuna.get_all_study_names(url)) == 1
    assert failures == []


@pytest.mark.slow
def test_two_tuners_on_postgresql_survive_a_killed_worker(tmp_path, postgres_url):
    """Two tune.py workers on one study in a real PostgreSQL; one is SIGKILLed inside its second trial. Its
    trial is failed once its heartbeat is stale (2 x 1 s) and retried with the same parameters by the next
    worker that starts a trial; no finished trial is lost: every trial the workers finished is there."""
    import optuna

    tune = [sys.executable, str(ROOT / "benchmarks" / "tune.py"), "objective=nce", *TINY, *TINY_SYNTHETIC,
            "trainer.max_steps=20", f"tune.storage={postgres_url}", "tune.heartbeat_interval=1"]  # fmt: skip
    killed_cmd = [*tune, *killed_once(tmp_path / "kill", step=5, run=2), f"hydra.run.dir={tmp_path / 'a'}"]
    killed = subprocess.Popen([*killed_cmd, "tune.n_trials=3"], cwd=ROOT, env=CONFTEST, stderr=subprocess.PIPE)
    steady = subprocess.Popen([*tune, f"hydra.run.dir={tmp_path / 'b'}", "tune.n_trials=3"], cwd=ROOT, env=CONFTEST,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read().decode()[-2000:]
    _, steady_err = steady.communicate(timeout=600)
    assert steady.returncode == 0, steady_err[-2000:]
    time.sleep(2 + 1)  # the killed worker's trial is stale now, if the steady one did not find it so already
    last = subprocess.run([*tune, f"hydra.run.dir={tmp_path / 'c'}", "tune.n_trials=1"], cwd=ROOT, env=CONFTEST,
                          capture_output=True, text=True)  # fmt: skip
    assert last.returncode == 0, last.stderr[-2000:]
    trials = optuna.load_study(study_name="nce", storage=postgres_url).trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states, states
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 1 + 3 + 1, states  # the killed worker's first trial, the steady one's 3, the last 1
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert any(t.params == failed.params for t in finished), states  # retried with its parameters


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """mkstemp makes 0600 files; results and reports must be readable like any file the user writes."""
    from lit_modules.util import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)
