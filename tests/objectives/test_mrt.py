"""Minimum risk training: sentence BLEU, Q and the risk, and the loss and its gradient on hand-made candidates
against a direct computation from the full softmax; the oracle cost against the source's conditionals."""

import math

import pytest
import torch
from torchmetrics.functional.text import bleu_score

from lit_modules.core.synthetic import HMMSource, SourceConfig
from objectives.base import KnobError, ObjectiveContext
from objectives.mrt import MinimumRisk, expected_risk, sentence_bleu

V = 23  # the vocabulary of the model fixture


def mrt(model, source=None, **kw):
    objective = MinimumRisk(prefix_len=4, cont_len=5, candidates=3, start_step=0, **kw)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32, source=source))
    return objective


def test_sentence_bleu_matches_torchmetrics_where_every_order_matches_and_its_own_cases():
    hyps = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 9, 9, 9], [4, 5, 6, 7, 1, 2, 3]])
    refs = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]])
    got = sentence_bleu(hyps, refs, vocab_size=10)
    for i in range(3):
        text = " ".join(map(str, hyps[i].tolist())), " ".join(map(str, refs[i].tolist()))
        expected = bleu_score([text[0]], [[text[1]]], smooth=True).item()  # every order has a match here
        assert got[i].item() == pytest.approx(expected, abs=1e-6)
    assert got[0].item() == pytest.approx(1.0)
    # no 4-gram match: torchmetrics gives 0, Lin & Och's smoothing does not
    hyp, ref = torch.tensor([[1, 2, 3, 5, 4, 6]]), torch.tensor([[1, 2, 3, 4, 5, 6]])
    p = [6 / 6, (2 + 1) / (5 + 1), (1 + 1) / (4 + 1), (0 + 1) / (3 + 1)]
    assert sentence_bleu(hyp, ref, 10).item() == pytest.approx(math.exp(sum(map(math.log, p)) / 4))
    assert sentence_bleu(torch.tensor([[8, 8, 8]]), torch.tensor([[1, 2, 3]]), 10).item() == 0.0  # no unigram
    # a hypothesis shorter than its reference pays the brevity penalty exp(1 - 6/3)
    short = sentence_bleu(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 3, 4, 5, 6]]), 10).item()
    assert short == pytest.approx(
        math.exp(1 - 2) * math.exp((math.log(1) + math.log(3 / 3) + math.log(2 / 2) + math.log(1 / 1)) / 4)
    )


def test_risk_and_its_gradient_against_the_formula():
    logp = torch.tensor([[-3.0, -5.0, -4.0], [-10.0, -2.0, -7.0]], dtype=torch.float64, requires_grad=True)
    cost = torch.tensor([[0.2, 0.9, 0.5], [1.0, 0.1, 0.4]], dtype=torch.float64)
    alpha = 0.7
    risk = expected_risk(logp, cost, alpha)
    weights = (alpha * logp.detach()).exp()
    q = weights / weights.sum(-1, keepdim=True)  # p^α renormalised over the candidates
    assert torch.allclose(risk, (q * cost).sum(-1))
    risk.sum().backward()
    assert torch.allclose(logp.grad, alpha * q * (cost - (q * cost).sum(-1, keepdim=True)))


def test_the_loss_and_gradient_on_hand_made_candidates_against_the_full_softmax(model, batch):
    objective = mrt(model, alpha=0.5, lam=0.0)
    prefix, reference = batch[:, :4], batch[:, 4:9]
    candidates = torch.randint(0, V, (9, 5), generator=torch.Generator().manual_seed(3))  # 3 per prefix
    risk, _ = objective.sequence_risk(model, prefix, candidates, reference)
    risk.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    # direct: log p(y | x) from the full softmax, Q, cost = 1 - BLEU, the mean risk over prefixes
    seq = torch.cat([prefix.repeat_interleave(3, 0), candidates], 1)
    logp_tokens = model(seq[:, :-1]).float().log_softmax(-1)[:, 3:]
    logp = logp_tokens.gather(-1, candidates[..., None]).squeeze(-1).sum(-1).view(3, 3)
    cost = (1 - sentence_bleu(candidates, reference.repeat_interleave(3, 0), V)).view(3, 3).float()
    direct = ((0.5 * logp).softmax(-1) * cost).sum(-1).mean()
    assert risk.item() == pytest.approx(direct.item(), rel=1e-4)
    direct.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(got[name], p.grad, atol=1e-5), name


def test_fine_tuning_adds_lam_times_the_nll_and_is_mle_before_start(model, batch):
    objective = mrt(model, lam=2.0)
    torch.manual_seed(0)
    out = objective(model, batch, 0)
    assert out.loss.item() == pytest.approx(out.logs["risk"].item() + 2.0 * out.logs["nll"].item(), rel=1e-5)
    late = MinimumRisk(prefix_len=4, cont_len=5, start_step=10)
    late.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert set(late(model, batch, 3).logs) == {"nll"}  # plain MLE before start_step


def test_the_oracle_cost_is_the_candidates_nll_under_the_true_source(model, batch):
    source = HMMSource(SourceConfig(vocab_size=V, n_states=4, emit=4))
    objective = mrt(model, source=source, cost="oracle_nll")
    prefix, candidates = batch[:, :4], torch.randint(0, V, (9, 5), generator=torch.Generator().manual_seed(4))
    cost = objective.costs(prefix, candidates, batch[:, 4:9])
    for row in range(9):
        seq = torch.cat([prefix[row // 3], candidates[row]])[None]
        logp = source.log_conditionals(seq, torch.float64)[0]
        nll = -sum(logp[4 + t, candidates[row, t]].item() for t in range(5)) / 5
        assert cost[row // 3, row % 3].item() == pytest.approx(nll, rel=1e-5)
    with pytest.raises(KnobError, match="objective.cost='oracle_nll'.*needs the true source"):
        mrt(model, cost="oracle_nll")


@pytest.mark.parametrize(
    "knob, value", [("cost", "rouge"), ("candidates", 1), ("alpha", 0.0), ("lam", -1.0), ("temperature", 0.0)]
)
def test_bad_knobs_are_refused(knob, value):
    with pytest.raises(KnobError, match=f"objective.{knob}="):
        MinimumRisk(**{knob: value})
