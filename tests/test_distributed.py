"""Distributed data parallel on this machine's CPU (gloo): two processes train what one process with the
same global batch trains, and rank 0 alone writes the run's files and evaluates."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY, TINY_SYNTHETIC, compose

from benchmarks.run import run

RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
STEPS = ["trainer.max_steps=10", "trainer.val_check_interval=5", "checkpoint.every_n_steps=5"]


@pytest.mark.slow
def test_two_cpu_processes_train_as_one_with_the_same_global_batch(tmp_path):
    """trainer.devices=2 trainer.strategy=ddp, 8 rows a process, against one process with 16 rows: both read
    the same rows at every step (StepBatches shards the global batch by rank), so the validation NLL agrees to
    1e-3 nats (the two sum gradients in another order: all-reduce in fp32 against one bf16 batch)."""
    out = tmp_path / "ddp"
    args = [*TINY, *TINY_SYNTHETIC, *STEPS, "data.batch_size=8", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "trainer.limit_val_batches=2", f"hydra.run.dir={out}"]  # fmt: skip
    proc = subprocess.run([*RUN, *args], cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1  # rank 0 alone evaluates and writes
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
    single_cfg = compose([*TINY, *TINY_SYNTHETIC, *STEPS, "data.batch_size=16", "trainer.limit_val_batches=2"])
    single = run(single_cfg, tmp_path / "single", "mle")
    for (step, nll), (single_step, single_nll) in zip(
        ddp["history"]["val/nll"], single["history"]["val/nll"], strict=True
    ):
        assert step == single_step and abs(nll - single_nll) < 1e-3, (step, nll, single_nll)
