"""Preference losses: the pairs, the frozen reference, DPO / IPO / SimPO / ORPO against their formulas."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lit_modules.core.decoding import DecodingConfig, generate
from objectives.base import KnobError, ObjectiveContext
from objectives.mle import MLE
from objectives.preference import Preference

V = 23  # the vocabulary of the model fixture


# ---- preference ----
def preference(model, **kw):
    objective = Preference(prefix_len=4, cont_len=5, start_step=0, **kw)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    return objective


def test_dpo_is_log_2_when_policy_equals_reference(model, batch):
    objective = preference(model, loss="dpo", lam=1.0)
    out = objective(model, batch, 0)
    assert out.logs["pair_loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.loss.item() == pytest.approx(mle_loss(model, batch) + math.log(2), rel=1e-5)


def test_reference_gets_no_gradient_and_does_not_change(model, batch):
    objective = preference(model, loss="dpo", beta=0.5)
    frozen = copy.deepcopy(objective.reference.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        opt.zero_grad()
        objective(model, batch, step).loss.backward()
        opt.step()
    assert all(p.grad is None for p in objective.reference.parameters())
    for key, value in objective.reference.state_dict().items():
        assert torch.equal(value, frozen[key])
    assert not torch.equal(model.lm_head.weight, objective.reference.lm_head.weight)  # the policy moved


def test_pairs_come_from_the_right_spans(model, batch):
    prefix, chosen, rejected = preference(model, rejected="repeat", repeat_span=2).make_pairs(model, batch)
    assert torch.equal(prefix, batch[:, :4]) and torch.equal(chosen, batch[:, 4:9])
    assert torch.equal(rejected, torch.cat([batch[:, 4:6], batch[:, 4:6], batch[:, 4:5]], 1))
    _, _, greedy = preference(model, rejected="greedy").make_pairs(model, batch)
    assert torch.equal(greedy, generate(model, batch[:, :4], 5, DecodingConfig()))


def test_rejected_sample_is_the_models_own_sampled_continuation(model, batch):
    objective = preference(model, rejected="sample")
    torch.manual_seed(5)
    prefix, _, rejected = objective.make_pairs(model, batch)
    torch.manual_seed(5)
    expected = generate(model, batch[:, :4], 5, DecodingConfig(strategy="sample"))
    assert torch.equal(rejected, expected)
    greedy = generate(model, batch[:, :4], 5, DecodingConfig(strategy="greedy"))
    assert not torch.equal(rejected, greedy)  # an untrained model's draws are not its argmax


def pair_logps(model, batch, objective):
    """The policy moved away from its reference snapshot, then every token's log-prob of the objective's pairs under
    both, one context at a time (fp64): chosen and rejected under the policy, then under the reference."""
    with torch.no_grad():
        for p in model.parameters():  # policy differs from the reference snapshot
            p.add_(0.05 * torch.randn_like(p))
    if objective.uses_reference:
        objective.take_reference(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.3)
    prefix, chosen, rejected = objective.make_pairs(model, batch)

    def seq_logps(m, cont):  # loop over continuation tokens
        out = []
        for b in range(cont.shape[0]):
            total = []
            for t in range(cont.shape[1]):
                context = torch.cat([prefix[b], cont[b, :t]])[None]
                total.append(m(context).double()[0, -1].log_softmax(-1)[cont[b, t]].item())
            out.append(total)
        return torch.tensor(out, dtype=torch.float64)

    with torch.no_grad():
        reference = objective.reference if objective.uses_reference else model
        return (
            seq_logps(model, chosen),
            seq_logps(model, rejected),
            seq_logps(reference, chosen),
            seq_logps(reference, rejected),
        )


@pytest.mark.parametrize("loss_name", ["dpo", "ipo", "simpo", "orpo"])
def test_pairwise_formulas(model, batch, loss_name):
    objective = preference(model, loss=loss_name, beta=0.7, gamma=0.3, rejected="repeat")
    pw, pl, rw, rl = pair_logps(model, batch, objective)
    beta, gamma = 0.7, 0.3
    h = (pw.sum(1) - pl.sum(1)) - (rw.sum(1) - rl.sum(1))
    log_odds = lambda lp: lp.mean(1) - torch.log1p(-lp.mean(1).exp())  # noqa: E731
    expected = (
        {
            "dpo": -F.logsigmoid(beta * h),
            "ipo": (h - 1 / (2 * beta)) ** 2,
            "simpo": -F.logsigmoid(beta * (pw.mean(1) - pl.mean(1)) - gamma),
            "orpo": -F.logsigmoid(log_odds(pw) - log_odds(pl)),
        }[loss_name]
        .mean()
        .item()
    )
    assert objective(model, batch, 0).logs["pair_loss"].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("divergence, alpha", [("js_divergence", 0.5), ("alpha_divergence", 0.5), ("forward_kl", 0.5)])
def test_f_divergences_are_trls_logits(model, batch, divergence, alpha):
    """TRL's DPOTrainer.dpo_loss (restated): u = π/π_ref; JS: h − (softplus(log u_w) − softplus(log u_l)); α:
    (u_l^−α − u_w^−α)/α; forward KL: α = 1. The sigmoid loss −log σ(β·h) of it."""
    objective = preference(model, loss="dpo", beta=0.7, rejected="repeat", divergence=divergence, alpha=alpha)
    pw, pl, rw, rl = pair_logps(model, batch, objective)
    log_u_w, log_u_l = pw.sum(1) - rw.sum(1), pl.sum(1) - rl.sum(1)
    if divergence == "js_divergence":
        h = (log_u_w - log_u_l) - (F.softplus(log_u_w) - F.softplus(log_u_l))
    else:
        a = 1.0 if divergence == "forward_kl" else alpha
        h = (torch.exp(-a * log_u_l) - torch.exp(-a * log_u_w)) / a
    expected = -F.logsigmoid(0.7 * h).mean().item()
    assert objective(model, batch, 0).logs["pair_loss"].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_divergence_needs_a_reference_and_alpha_must_be_positive():
    with pytest.raises(KnobError, match="objective.divergence='js_divergence'.*loss=simpo has no reference"):
        Preference(loss="simpo", divergence="js_divergence")
    with pytest.raises(KnobError, match="objective.alpha=0.0"):
        Preference(divergence="alpha_divergence", alpha=0.0)
    with pytest.raises(KnobError, match="objective.divergence='tv'"):
        Preference(divergence="tv")


def mle_loss(model, batch):
    return MLE()(model, batch, 0).loss.item()


def test_preference_is_mle_before_start_step(model, batch):
    objective = Preference(prefix_len=4, cont_len=5, start_step=10)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert objective(model, batch, 9).loss.item() == pytest.approx(mle_loss(model, batch))
    assert not bool(objective.reference_taken)
