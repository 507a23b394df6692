"""The confidence penalty against its formula over positions; it raises the entropy."""

import copy
import math

import pytest

from objectives.entropy_penalty import EntropyPenalty
from objectives.mle import MLE

V = 23  # the vocabulary of the model fixture


# ---- token-level losses against loops over positions ----
def test_entropy_penalty_formula(model, batch, probs_of):
    p, y = probs_of(model, batch)
    nll = entropy = hinge = 0.0
    positions = [(b, t) for b in range(y.shape[0]) for t in range(y.shape[1])]
    for b, t in positions:
        row = p[b, t]
        nll += -math.log(row[y[b, t]])
        h = -sum(float(q) * math.log(float(q)) for q in row)
        entropy += h
        hinge += max(0.0, 2.5 - h)
    n = len(positions)
    assert EntropyPenalty(lam=0.3)(model, batch, 0).loss.item() == pytest.approx(nll / n - 0.3 * entropy / n, rel=1e-5)
    hinged = EntropyPenalty(lam=0.3, threshold=2.5)(model, batch, 0).loss.item()
    assert hinged == pytest.approx(nll / n + 0.3 * hinge / n, rel=1e-5)


# ---- signs ----
def mean_entropy(model, batch, probs_of):
    p, _ = probs_of(model, batch)
    return -(p * p.log()).sum(-1).mean().item()


def test_entropy_penalty_raises_entropy(model, batch, probs_of, train):
    mle = train(MLE(), copy.deepcopy(model), batch, lr=0.5)
    penalised = train(EntropyPenalty(lam=1.0), copy.deepcopy(model), batch, lr=0.5)
    assert mean_entropy(penalised, batch, probs_of) > mean_entropy(mle, batch, probs_of) + 0.05
