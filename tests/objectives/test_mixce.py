"""MixCE: the NLL re-weighted by the model's own probability, against its formula; the weight carries no gradient."""

import math

import pytest
import torch
import torch.nn.functional as F

from objectives.mixce import MixCE


def gold_probabilities(model, batch) -> list[float]:
    """p(y_t) of every target under the model's full softmax."""
    with torch.no_grad():
        p = model(batch[:, :-1]).double().softmax(-1)
    return p.gather(-1, batch[:, 1:, None]).squeeze(-1).flatten().tolist()


def test_mixce_formula(model, batch):
    eta = 0.3
    py = gold_probabilities(model, batch)
    mix = sum(eta * -math.log(q) + (1 - eta) * q * -math.log(q) for q in py) / len(py)
    assert MixCE(eta=eta)(model, batch, 0).loss.item() == pytest.approx(mix, rel=1e-5)


def test_mixce_weights_are_detached(model, batch):
    # the gradient is the MLE gradient scaled per token, not d(q·ℓ)/dθ
    loss = MixCE(eta=0.0)(model, batch, 0).loss
    grad = torch.autograd.grad(loss, model.lm_head.weight)[0]
    logits = model(batch[:, :-1]).float()
    nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
    expected = torch.autograd.grad((torch.exp(-nll).detach() * nll).mean(), model.lm_head.weight)[0]
    torch.testing.assert_close(grad, expected)
