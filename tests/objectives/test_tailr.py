"""TaiLr: the NLL re-weighted by a clamped total-variation weight, against its formula; the weight is detached."""

import math

import pytest
import torch
import torch.nn.functional as F

from objectives.tailr import TaiLr


def gold_probabilities(model, batch) -> list[float]:
    with torch.no_grad():
        p = model(batch[:, :-1]).double().softmax(-1)
    return p.gather(-1, batch[:, 1:, None]).squeeze(-1).flatten().tolist()


def test_tailr_formula(model, batch):
    gamma, min_w = 0.4, 0.2
    py = gold_probabilities(model, batch)
    tailr = sum(min(1.0, max(min_w, q / (gamma + (1 - gamma) * q))) * -math.log(q) for q in py) / len(py)
    assert TaiLr(gamma=gamma, min_w=min_w)(model, batch, 0).loss.item() == pytest.approx(tailr, rel=1e-5)


def test_tailr_weights_are_detached(model, batch):
    objective = TaiLr(gamma=0.4, min_w=0.0)
    grad = torch.autograd.grad(objective(model, batch, 0).loss, model.lm_head.weight)[0]
    logits = model(batch[:, :-1]).float()
    nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
    weight = objective.weight(torch.exp(-nll)).detach()
    expected = torch.autograd.grad((weight * nll).mean(), model.lm_head.weight)[0]
    torch.testing.assert_close(grad, expected)
