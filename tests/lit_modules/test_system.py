"""The LightningModule (lit_modules/system.py): a NaN loss stops the run at the last good checkpoint; it tells the
objective which steps log; it clips gradients itself under the fused optimiser; the learning-rate schedule."""

import pytest
import torch

from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import run
from lit_modules.core.model import GPTConfig
from lit_modules.system import LanguageModelSystem, NonFiniteLossError, OptimConfig, lr_factor
from objectives.mle import MLE


def test_non_finite_loss_stops_the_run(tmp_path):
    cfg = compose(["debug=tiny", "trainer.max_steps=10", "checkpoint.every_n_steps=1"])
    cfg.objective = {"_target_": "tests.faults.NaNAtStep", "step": 2}
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 2 of objective nan_at_step \(nll="):
        run(plan(cfg, "nan_at_step"), tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # last good
    assert not (tmp_path / "results.json").exists()


def test_the_objective_is_told_which_steps_log(tmp_path):
    """Lightning writes the logs of every log_every_n_steps-th step; the objective may skip logged-only statistics
    on the others."""
    from tests.faults import RecordsLogsWanted

    cfg = compose(["debug=tiny", "trainer.max_steps=6", "trainer.log_every_n_steps=3"])
    cfg.objective = {"_target_": "tests.faults.RecordsLogsWanted"}
    RecordsLogsWanted.seen.clear()
    run(plan(cfg, "records_logs_wanted"), tmp_path)
    assert RecordsLogsWanted.seen == [False, False, True, False, False, True]


def test_gradient_clipping_with_the_fused_optimiser():
    """Lightning refuses to clip for fused optimisers; the system clips itself, by norm or by value."""
    system = LanguageModelSystem(
        GPTConfig(vocab_size=16, context=8, n_layer=1, n_head=1, d_model=8), MLE(), OptimConfig()
    )
    for algorithm, check in (
        ("norm", lambda g: torch.linalg.vector_norm(torch.cat([x.flatten() for x in g])) <= 0.5 + 1e-5),
        ("value", lambda g: all(x.abs().max() <= 0.01 for x in g)),
    ):
        for p in system.parameters():
            p.grad = torch.full_like(p, 3.0)
        system.configure_gradient_clipping(None, 0.5 if algorithm == "norm" else 0.01, algorithm)
        assert check([p.grad for p in system.parameters()])


def test_the_learning_rate_warms_up_then_decays_to_its_floor():
    assert lr_factor(0, warmup=10, total=100, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(9, warmup=10, total=100, min_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(55, warmup=10, total=100, min_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(100, warmup=10, total=100, min_ratio=0.1) == pytest.approx(0.1)
