"""Checkpoints (lit_modules/callbacks.py): SIGTERM and Ctrl-C save one and exit 128 + the signal; a checkpoint at
a validation step holds that validation."""

import signal
import subprocess
import time

import pytest
import torch


def wait_for(path, timeout=120):  # a file the run writes: no race, only a limit
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint(sig, code, tmp_path, entry_command, root):
    """SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C): the step in progress ends, last.ckpt is saved,
    one line says where, exit 128 + the signal; no traceback, no results."""
    out = tmp_path / "run"
    args = ["debug=tiny", "trainer.max_steps=100000", "checkpoint.every_n_steps=5", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(
        entry_command("run", *args), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(out / "checkpoints" / "last.ckpt")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stdout[-1500:] + stderr[-1500:]
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert f"{sig.name}: checkpoint saved at step {step} in {out / 'checkpoints' / 'last.ckpt'}" in stdout
    assert "Traceback" not in stderr and not (out / "results.json").exists()


def test_a_checkpoint_at_a_validation_step_holds_that_validation(tmp_path, run_tiny):
    """Checkpoint every 20 steps, validation every 10: last.ckpt of step 20 is written after step 20's
    validation, so a run resumed from it does not lose that point of the history."""
    import lightning.pytorch as pl

    copies = tmp_path / "at_step_21.ckpt"

    class CopyAtStep21(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 21 and not copies.exists():
                copies.write_bytes((tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes())

    overrides = ["trainer.max_steps=22", "trainer.val_check_interval=10", "checkpoint.every_n_steps=20"]
    run_tiny(overrides, tmp_path / "run", callbacks=(CopyAtStep21(),), evaluation=False)
    checkpoint = torch.load(copies, weights_only=True)
    assert checkpoint["global_step"] == 20
    assert [step for step, _ in checkpoint["objbench"]["val_history"]] == [10, 20]
