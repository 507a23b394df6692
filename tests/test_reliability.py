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
    "checkpoint.every_n_steps=10",
    "data.train_tokens=30000",
]


def wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    reference = run(compose(LONGER), tmp_path / "reference", "nce")
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*RUN, *LONGER, f"hydra.run.dir={out}"],
        cwd=ROOT,
        env=os.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(out / "checkpoints" / "last.ckpt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 40
    resumed = subprocess.run(
        [*RUN, *LONGER, f"hydra.run.dir={out}", "resume=true"], cwd=ROOT, env=os.environ, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resume=true: continuing from {out / 'checkpoints' / 'last.ckpt'} (step {step})" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == reference["metrics"]
    assert results["history"] == json.loads(json.dumps(reference["history"]))


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    results = run(compose([*TINY, *TINY_SYNTHETIC, "resume=true"]), tmp_path, "mle")
    assert "resume=true: no checkpoint at" in capsys.readouterr().out
    assert results["timing"]["steps"] == 3


def test_sigterm_saves_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, *TINY_SYNTHETIC, "trainer.max_steps=100000", "checkpoint.every_n_steps=5", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(
        [*RUN, *args], cwd=ROOT, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(out / "checkpoints" / "last.ckpt")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout[-1500:] + stderr[-1500:]
    assert "SIGTERM: checkpoint saved at step" in stdout
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert f"saved at step {step} " in stdout
    assert not (out / "results.json").exists()


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


def test_checkpoint_of_another_config_or_a_corrupt_one_is_one_line(tmp_path):
    """A resume never crosses a change of the training config: model, objective, seed, budget, optimiser."""
    base = [*TINY, *TINY_SYNTHETIC]
    run(compose(base), tmp_path, "mle")
    for override, difference in (
        ("model.d_model=64", "model.d_model: checkpoint 128, config 64"),
        ("seed=2", "seed: checkpoint 1234, config 2"),
        ("trainer.max_steps=2", "trainer.max_steps: checkpoint 3, config 2"),
        ("optim.lr=0.001", "optim.lr: checkpoint 0.003, config 0.001"),
        ("objective=label_smoothing", "objective._target_: checkpoint 'objectives.mle.MLE'"),
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


def test_killed_tuner_continues_the_study(tmp_path):
    import optuna

    db = tmp_path / "study.db"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "tune.py"),
        "objective=label_smoothing",
        *TINY,
        *TINY_SYNTHETIC,
        "trainer.max_steps=60",
        f"tune.storage=sqlite:///{db}",
        "tune.heartbeat_interval=1",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.Popen(
        [*cmd, "tune.n_trials=5"], cwd=ROOT, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while True:  # kill it inside its second trial
        assert time.time() < deadline
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="label_smoothing", storage=f"sqlite:///{db}").trials
        except Exception:
            continue
        if any(t.state.name == "COMPLETE" for t in trials) and any(t.state.name == "RUNNING" for t in trials):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the heartbeat's grace period (2 x 1 s)
    again = subprocess.run([*cmd, "tune.n_trials=1"], cwd=ROOT, env=os.environ, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(study_name="label_smoothing", storage=f"sqlite:///{db}").trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1, states  # the interrupted trial
    assert "RUNNING" not in states, states
    failed = next(t for t in trials if t.state.name == "FAIL")
    # the heartbeat callback re-queues it with its parameters (run now, or by the next invocation)
    assert any(t.params == failed.params for t in trials if t.state.name in ("COMPLETE", "WAITING")), states
    complete_before = [t for t in trials if t.state.name == "COMPLETE" and t.number < failed.number]
    assert complete_before, "the trial finished before the kill was lost"
    assert states.count("COMPLETE") >= 2  # and the restarted tuner finished one more


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """mkstemp makes 0600 files; results and reports must be readable like any file the user writes."""
    from lit_modules.util import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)
