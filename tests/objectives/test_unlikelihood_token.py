"""Token-level unlikelihood: its candidates, its formula, its effect."""

import copy
import math

import pytest

from objectives.mle import MLE
from objectives.unlikelihood_token import UnlikelihoodToken

V = 23  # the vocabulary of the model fixture


def test_unlikelihood_token_formula(model, batch, probs_of):
    p, y = probs_of(model, batch)
    x = batch[:, :-1]
    for window in (None, 3):
        total, n = 0.0, 0
        for b in range(y.shape[0]):
            for t in range(y.shape[1]):
                start = 0 if window is None else max(0, t - window + 1)
                candidates = set(x[b, start : t + 1].tolist()) - {y[b, t].item()}
                total += -math.log(p[b, t, y[b, t]]) + 0.7 * sum(-math.log(1 - p[b, t, c]) for c in candidates)
                n += 1
        loss = UnlikelihoodToken(alpha=0.7, window=window)(model, batch, 0).loss.item()
        assert loss == pytest.approx(total / n, rel=1e-5)


def test_unlikelihood_token_candidates_stay_in_their_sequence(model, batch):
    objective = UnlikelihoodToken(alpha=1.0)
    together = objective(model, batch, 0).loss.item()
    alone = [objective(model, batch[i : i + 1], 0).loss.item() for i in range(batch.shape[0])]
    assert together == pytest.approx(sum(alone) / len(alone), rel=1e-5)


# ---- signs ----
def test_unlikelihood_lowers_candidate_probability(model, batch, probs_of, train):
    from objectives.unlikelihood_token import candidate_mask

    mask = candidate_mask(batch[:, :-1], batch[:, 1:], V, None)

    def candidate_mass(m):
        p, _ = probs_of(m, batch)
        return (p * mask).sum(-1).mean().item()

    mle = train(MLE(), copy.deepcopy(model), batch, lr=0.5)
    ul = train(UnlikelihoodToken(alpha=3.0), copy.deepcopy(model), batch, lr=0.5)
    assert candidate_mass(ul) < 0.9 * candidate_mass(mle)
