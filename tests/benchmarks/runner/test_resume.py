"""Resuming (benchmarks/runner/resume.py): a killed run resumes to the metrics of an uninterrupted one, to the
bit; a finished one keeps its validation; a checkpoint of another config, or a corrupt one, is one line."""

import json
import re
import signal

import pytest
import torch

from lit_modules.core.errors import ConfigError
from tests.faults import killed_once

LONGER = ["objective=nce", "trainer.max_steps=40", "trainer.val_check_interval=15", "checkpoint.every_n_steps=20",
          "data.train_tokens=30000"]  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path, cli, run_tiny):
    """SIGKILL at step 25 (the last checkpoint at step 20), then resume=true: the metrics and validation
    history of a run that was never interrupted, to the bit."""
    marker = tmp_path / "kill"
    args = ["debug=tiny", *LONGER, *killed_once(marker, 25)]
    out = tmp_path / "killed"
    killed = cli("run", *args, f"hydra.run.dir={out}")
    assert killed.returncode == -signal.SIGKILL and marker.exists()
    assert not (out / "results.json").exists()
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    resumed = cli("run", *args, f"hydra.run.dir={out}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resume=true: continuing from {out / 'checkpoints' / 'last.ckpt'} (step 20)" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    reference = run_tiny(LONGER, tmp_path / "reference")  # KilledOnce trains as NCE
    assert results["metrics"] == reference["metrics"]
    assert results["history"] == json.loads(json.dumps(reference["history"]))


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys, run_tiny):
    results = run_tiny(["resume=true"], tmp_path)
    assert "resume=true: no checkpoint at" in capsys.readouterr().out
    assert results["timing"]["steps"] == 3


def test_a_finished_run_resumed_keeps_its_validation_and_training_time(tmp_path, run_tiny):
    """results.json lost after a finished run, the same command with resume=true: the final checkpoint is at
    max_steps, so nothing trains or validates again; val/nll and the training time still come from the run."""
    first = run_tiny([], tmp_path)
    (tmp_path / "results.json").unlink()
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    again = run_tiny(["resume=true"], tmp_path)
    assert again["metrics"] == first["metrics"]
    assert again["history"] == first["history"]
    # the checkpoint's training time is kept, not restarted (the first run's own figure also counts what followed
    # its last checkpoint, so the two runs' totals are not ordered)
    assert saved["objbench"]["train_s"] > 0
    assert again["timing"]["train_s"] >= saved["objbench"]["train_s"]


@pytest.mark.slow
def test_checkpoint_of_another_config_or_a_corrupt_one_is_one_line(tmp_path, cli, run_tiny):
    """A resume never crosses a change of the training config: model, objective, seed, budget, optimiser."""
    run_tiny([], tmp_path)
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
            run_tiny([override, "resume=true"], tmp_path)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage")
    proc = cli("run", "debug=tiny", f"hydra.run.dir={tmp_path}", "resume=true")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {tmp_path / 'checkpoints' / 'last.ckpt'} cannot be read as a checkpoint (UnpicklingError); "
        "delete it to start fresh"
    )


def test_a_checkpoint_from_before_model_activation_still_resumes(tmp_path, run_tiny):
    """Checkpoints written before ``model.activation`` existed have no such key: they used the exact GELU, which is
    the default, so they resume; one that claims another activation does not."""
    from benchmarks.runner.config import compose
    from benchmarks.runner.resume import resume_checkpoint

    run_tiny([], tmp_path)
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    run_config = checkpoint["hyper_parameters"]["run_config"]
    assert run_config["model"].pop("activation") == "gelu"
    torch.save(checkpoint, path)
    assert resume_checkpoint(compose(["debug=tiny"]), tmp_path) == str(path)
    run_config["model"]["activation"] = "gelu_tanh"
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match="model.activation"):
        resume_checkpoint(compose(["debug=tiny"]), tmp_path)


def test_a_run_from_before_a_knob_existed_resumes_and_is_skipped_when_finished(tmp_path, run_tiny):
    """A knob is added with the default that keeps its objective as it was (the preference loss's ``divergence``):
    a checkpoint or a finished run without it is the same run at that default, and at another value it is not."""
    import json

    from benchmarks.runner.config import compose
    from benchmarks.runner.results import finished_results
    from benchmarks.runner.resume import resume_checkpoint

    settings = ["objective=preference", "objective.start_step=1"]
    run_tiny(settings, tmp_path)
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["run_config"]["objective"].pop("divergence") == "reverse_kl"
    torch.save(checkpoint, path)
    results = json.loads((tmp_path / "results.json").read_text())
    del results["config"]["objective"]["divergence"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    cfg = compose(["debug=tiny", *settings])
    assert resume_checkpoint(cfg, tmp_path) == str(path)
    assert finished_results(tmp_path, cfg) is not None
    other = compose(["debug=tiny", *settings, "objective.divergence=js_divergence"])
    with pytest.raises(ConfigError, match="objective.divergence: checkpoint 'reverse_kl', config 'js_divergence'"):
        resume_checkpoint(other, tmp_path)
    assert finished_results(tmp_path, other) is None
