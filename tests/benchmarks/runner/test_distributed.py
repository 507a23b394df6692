"""Distributed data parallel on this machine's CPU (gloo): two processes train what one process with the
same global batch trains, and rank 0 alone writes the run's files and evaluates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
TINY = ["debug=tiny", "data.block_size=32"]
STEPS = ["trainer.max_steps=10", "trainer.val_check_interval=5", "checkpoint.every_n_steps=5"]


def launch(launcher: str, args: list[str]) -> subprocess.CompletedProcess:
    """Two processes of one run, as README "Several GPUs and nodes" starts them: Lightning's own launcher
    (trainer.devices=2), torchrun, or two "nodes" (one process each, MASTER_ADDR / NODE_RANK set)."""
    common = ["trainer.accelerator=cpu", "trainer.strategy=ddp"]
    if launcher == "lightning":
        return subprocess.run([*RUN, *args, *common, "trainer.devices=2"], cwd=ROOT, env=os.environ,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    if launcher == "torchrun":
        torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
        return subprocess.run([*torchrun, *RUN[1:], *args, *common, "trainer.devices=2"], cwd=ROOT, env=os.environ,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531", "OMP_NUM_THREADS": "1"}
    nodes = [*common, "trainer.devices=1", "trainer.num_nodes=2"]
    other = subprocess.Popen([*RUN, *args, *nodes], cwd=ROOT, env={**env, "NODE_RANK": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    first = subprocess.run([*RUN, *args, *nodes], cwd=ROOT, env={**env, "NODE_RANK": "0"}, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert other.wait(timeout=120) == 0
    return first


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["lightning", "torchrun", "two_nodes"])
def test_two_cpu_processes_train_as_one_with_the_same_global_batch(launcher, tmp_path, run_tiny):
    """DDP over gloo with 8 rows a process, against one process with 16 rows: both read the same rows at every
    step (StepBatches shards the global batch by rank), so the validation NLL agrees to 1e-3 nats (the
    gradients are summed in another order: an all-reduce against one batch). Rank 0 alone evaluates and
    writes one results.json, samples.jsonl, TensorBoard run and checkpoint."""
    out = tmp_path / "ddp"
    args = [*TINY, *STEPS, "data.batch_size=8", "trainer.limit_val_batches=2", f"hydra.run.dir={out}"]
    proc = launch(launcher, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1  # rank 0 alone evaluates and writes
    assert "sync_dist=True" not in proc.stderr  # Lightning's advice does not apply: val/nll is a synced metric
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith((".", "train_ddp"))) == [
        "checkpoints",
        "results.json",
        "run.log",
        "samples.jsonl",
        "tb",
    ]
    assert [p.name for p in (out / "tb").iterdir()] == ["mle"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.ckpt"]
    ddp = json.loads((out / "results.json").read_text())
    assert ddp["timing"]["world_size"] == 2 and ddp["timing"]["train_tokens"] == 10 * 16 * 32
    single = run_tiny([*TINY[1:], *STEPS, "data.batch_size=16", "trainer.limit_val_batches=2"], tmp_path / "single")
    for (step, nll), (single_step, single_nll) in zip(
        ddp["history"]["val/nll"], single["history"]["val/nll"], strict=True
    ):
        assert step == single_step and abs(nll - single_nll) < 1e-3, (step, nll, single_nll)


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
    """SIGKILL of the launcher and its worker after a checkpoint, then the same command with resume=true:
    the metrics and validation history of the same DDP run never interrupted."""
    import signal
    import time

    import torch

    args = [*TINY, "trainer.max_steps=120", "trainer.val_check_interval=40",
            "checkpoint.every_n_steps=20", "data.batch_size=8", "trainer.limit_val_batches=2",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]  # fmt: skip
    reference = subprocess.run([*RUN, *args, f"hydra.run.dir={tmp_path / 'reference'}"], cwd=ROOT, env=os.environ,
                               capture_output=True, text=True, timeout=600)  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*RUN, *args, f"hydra.run.dir={out}"], cwd=ROOT, env=os.environ, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists():
        assert time.time() < deadline and proc.poll() is None, "no checkpoint before the run ended"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the process it started
    proc.wait(timeout=60)
    step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 0 < step < 120 and not (out / "results.json").exists()
    resumed = subprocess.run([*RUN, *args, f"hydra.run.dir={out}", "resume=true"], cwd=ROOT, env=os.environ,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"continuing from {checkpoint} (step {step})" in resumed.stdout
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    got = json.loads((out / "results.json").read_text())
    assert got["metrics"] == expected["metrics"]
    assert got["history"] == expected["history"]
