"""Tempered predictions p_T ∝ p^(1/T) against a direct computation from the full logits; temperature scaling
recovers the temperature that made logits too hot or too cold; the grid's bad values are one line."""

from __future__ import annotations

import pytest
import torch
import torchmetrics

from benchmarks.evaluation.teacher_forced import teacher_forced
from benchmarks.evaluation.temperature_scaling import fit_temperature
from lit_modules.core.synthetic import HMMSource, SourceConfig
from tests.benchmarks.evaluation.test_teacher_forced import LogitsModel


def direct(logits: torch.Tensor, targets: torch.Tensor, t: float, true_logp: torch.Tensor) -> dict[str, float]:
    """The tempered metrics from the full (B, T, V) logits, plainly, in float64."""
    logp = (logits.double() / t).log_softmax(-1)
    p, truth = logp.exp(), true_logp.double()
    onehot = torch.nn.functional.one_hot(targets, logits.shape[-1]).double()
    ece = torchmetrics.functional.classification.multiclass_calibration_error(
        p.flatten(0, 1), targets.flatten(), num_classes=logits.shape[-1], n_bins=15
    )
    return {
        "nll": -logp.gather(-1, targets[..., None]).mean().item(),
        "entropy": -(p * logp).sum(-1).mean().item(),
        "brier": (p - onehot).square().sum(-1).mean().item(),
        "ece": ece.item(),
        "forward_kl": (truth.exp() * (truth - logp)).sum(-1).mean().item(),
        "reverse_kl": (p * (logp - truth)).sum(-1).mean().item(),
    }


@pytest.fixture
def case():
    source = HMMSource(SourceConfig(vocab_size=64, n_states=8, emit=8, seed=3))
    blocks = source.sample(12, 17, seed=1)
    logits = 3 * torch.randn(12, 16, 64, generator=torch.Generator().manual_seed(0))
    true_logp = source.log_conditionals(blocks)[:, 1:]
    return source, blocks, logits, true_logp


def test_tempered_metrics_equal_a_direct_computation(case):
    source, blocks, logits, true_logp = case
    grid = (0.5, 1.0, 1.25, 3.0)
    tf = teacher_forced(LogitsModel(64, logits), blocks, 5, False, source=source, temperatures=grid)
    for t in grid:
        want = direct(logits, blocks[:, 1:], t, true_logp)
        for name, value in want.items():
            assert tf.metrics[f"temp/{t:g}/{name}"] == pytest.approx(value, rel=2e-4, abs=2e-5), (t, name)
    for name in ("nll", "entropy", "brier", "ece"):  # T = 1 is the untempered model
        assert tf.metrics[f"temp/1/{name}"] == pytest.approx(tf.metrics[f"tf/{name}"], rel=1e-5)
    assert tf.metrics["temp/1/forward_kl"] == pytest.approx(tf.metrics["gt/forward_kl"], rel=1e-4)
    # the run's fitted temperature gets the whole calibration battery under ts/
    fitted = teacher_forced(LogitsModel(64, logits), blocks, 5, False, source=source, fitted_temperature=1.7)
    want = direct(logits, blocks[:, 1:], 1.7, true_logp)
    assert fitted.metrics["ts/temperature"] == 1.7
    assert fitted.metrics["ts/nll"] == pytest.approx(want["nll"], rel=2e-4)
    assert fitted.metrics["ts/ece"] == pytest.approx(want["ece"], rel=2e-4, abs=2e-5)
    assert {"ts/rms_ce", "ts/mce", "ts/ece_equal_mass", "ts/reverse_kl"} <= set(fitted.metrics)
    assert not any(k.startswith("temp/") for k in fitted.metrics)


@pytest.mark.parametrize("made_by", [2.0, 0.5])
def test_temperature_scaling_recovers_the_temperature_that_made_logits_too_cold_or_too_hot(made_by):
    """Labels drawn from softmax(z); the model shows z · made_by (over-confident when > 1): the fitted T is
    made_by, up to the sampling noise of 8,192 labels."""
    g = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(64, 129, 50, generator=g)
    labels = torch.multinomial(z.softmax(-1).flatten(0, 1), 1, generator=g).view(64, 129)
    blocks = torch.cat([torch.zeros(64, 1, dtype=torch.long), labels[:, :128]], 1)
    model = LogitsModel(50, (z * made_by)[:, :128])
    fitted = fit_temperature(model, blocks, batch_size=16, bf16=False)
    assert fitted == pytest.approx(made_by, rel=0.04)
    # the minimum: the NLL is no lower a little to either side
    nll = {
        t: teacher_forced(LogitsModel(50, (z * made_by)[:, :128]), blocks, 16, False, temperatures=(t,)).metrics[
            f"temp/{t:g}/nll"
        ]
        for t in (fitted * 0.97, fitted, fitted / 0.97)
    }
    assert nll[fitted] < nll[fitted * 0.97] and nll[fitted] < nll[fitted / 0.97]


def test_the_grid_is_checked_before_training(tmp_path, cli_error):
    for i, bad in enumerate(("[]", "[0]", "[-1.0]", "[1.0,inf]", "[a]", "1.0")):
        line = cli_error([f"eval.temperatures={bad}"], tmp_path / f"bad{i}")
        assert "eval.temperatures=" in line and "positive finite" in line
    line = cli_error(["eval.temperature_scaling=maybe"], tmp_path / "scaling")
    assert "eval.temperature_scaling=" in line


def test_a_run_reports_its_temperature_curve_and_its_fitted_temperature(tmp_path, run_tiny):
    metrics = run_tiny(["eval.temperatures=[0.8,1.0,1.5]"], tmp_path)["metrics"]
    for t in ("0.8", "1", "1.5"):
        assert {f"temp/{t}/{m}" for m in ("nll", "entropy", "ece", "brier", "forward_kl", "reverse_kl")} <= set(metrics)
    assert metrics["temp/0.8/entropy"] < metrics["temp/1/entropy"] < metrics["temp/1.5/entropy"]
    assert metrics["ts/temperature"] > 0 and metrics["ts/nll"] <= metrics["tf/nll"] + 0.05
