"""NCE: its noise, its formula, its gradient against MLE's, a learned log Z."""

import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import run
from objectives.base import ObjectiveContext
from objectives.mle import MLE
from objectives.nce import NCE

V = 23  # the vocabulary of the model fixture


# ---- NCE ----
def nce_objective(model, k, counts=None, **kw):
    objective = NCE(k=k, **kw)
    counts = torch.arange(1, V + 1, dtype=torch.float64) if counts is None else counts
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32, unigram_counts=counts))
    return objective


def test_nce_noise_follows_unigram_power(model):
    counts = torch.tensor([0.0, 1, 4, 9, 16, 25] + [0.0] * (V - 6))
    objective = nce_objective(model, 200_000, counts, noise_power=0.5)
    drawn = torch.bincount(objective.sample_noise(torch.Generator().manual_seed(0)), minlength=V).double()
    expected = counts.sqrt() / counts.sqrt().sum()
    torch.testing.assert_close(drawn / drawn.sum(), expected.double(), atol=4e-3, rtol=0)
    assert drawn[0] == 0 and drawn[6:].sum() == 0  # unseen words are never noise


def test_nce_formula(model, batch):
    model.init_output_bias(torch.arange(V, dtype=torch.float64) ** 2)  # scores carry the output bias
    objective = nce_objective(model, 5, log_z=0.3)
    torch.manual_seed(3)
    loss = objective(model, batch, 0).loss.item()
    torch.manual_seed(3)
    noise = objective.sample_noise().tolist()
    with torch.no_grad():
        logits = model(batch[:, :-1]).double()
    q = objective.noise_probs.double()
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = batch[b, t + 1].item()
            delta = lambda w: logits[b, t, w].item() - 0.3 - math.log(5 * q[w].item())  # noqa: B023
            total += -math.log(1 / (1 + math.exp(-delta(y)))) - sum(
                math.log(1 / (1 + math.exp(delta(w)))) for w in noise
            )
            n += 1
    assert loss == pytest.approx(total / n, rel=1e-5)


def test_nce_gradient_agrees_with_mle_for_large_k(model, batch):
    # Self-normalised NCE's expected gradient approaches the MLE gradient as k grows (Mnih & Teh 2012),
    # for a model that is self-normalised (log Z ≈ 0).
    with torch.no_grad():
        model.lm_head.weight.mul_(0.01)  # near-uniform logits ≈ 0 → Σ exp(s) ≈ V
    objective = nce_objective(model, 4000, log_z=math.log(V))
    weight = model.lm_head.weight
    g_mle = torch.autograd.grad(mle_loss_tensor(model, batch), weight)[0].flatten()
    torch.manual_seed(0)
    g_nce = torch.autograd.grad(objective(model, batch, 0).loss, weight)[0].flatten()
    assert F.cosine_similarity(g_mle, g_nce, dim=0).item() > 0.9


def test_nce_learns_log_z_only_when_asked(model, batch):
    """learn_log_z: log Z is a parameter with a gradient, and a
    step of SGD moves it; fixed (the default) it gets none and stays where the config put it."""
    fixed = nce_objective(model, 8, log_z=0.5)
    assert not fixed.log_z.requires_grad
    fixed(model, batch, 0).loss.backward()
    assert fixed.log_z.grad is None and fixed.log_z.item() == 0.5
    learned = nce_objective(model, 8, log_z=0.5, learn_log_z=True)
    optimizer = torch.optim.SGD([learned.log_z], lr=0.1)
    torch.manual_seed(0)
    out = learned(model, batch, 0)
    out.loss.backward()
    grad = learned.log_z.grad.item()
    optimizer.step()
    assert grad != 0 and learned.log_z.item() == pytest.approx(0.5 - 0.1 * grad)
    assert out.logs["log_z"].item() == 0.5  # logged before the step
    assert "log_z" in dict(learned.named_parameters())  # so the optimiser of the system sees it


def mle_loss_tensor(model, batch):
    return MLE()(model, batch, 0).loss


@pytest.mark.slow  # two 40-step runs: 11 s
def test_nce_full_softmax_nll_is_close_to_mle_after_a_short_run(tmp_path):
    """Validation is the full softmax whatever the objective; NCE at its defaults (k = 1024 shared noise
    words, the output bias from the log unigram) ends within 0.10 nats of MLE after 40 steps on a tiny
    source (0.024 when measured), where its self-normalised scores once put half the mass on rare words."""
    short = ["debug=tiny", "trainer.max_steps=40", "trainer.val_check_interval=40", "data.batch_size=16"]
    short += ["trainer.limit_val_batches=8", "data.val_tokens=4000", "data.block_size=32"]
    nll = {}
    for name in ("mle", "nce"):
        results = run(plan(compose([*short, f"objective={name}"]), name), tmp_path / name, evaluation=False)
        nll[name] = results["metrics"]["val/nll"]
    assert abs(nll["nce"] - nll["mle"]) < 0.10, nll
    assert nll["mle"] < 3.2  # it learned (3.03 when measured)
