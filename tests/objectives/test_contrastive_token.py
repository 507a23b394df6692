"""Contrastive token learning: its negatives and its formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from objectives.contrastive_token import ContrastiveToken

V = 23  # the vocabulary of the model fixture


def test_contrastive_token_formula(model, batch, logits_of):
    """The released code's definition by loops: the first L = round(0.25·T) positions, negatives the gold
    tokens of the round(0.5·L) positions before, without y_t, duplicates counted; CE over all positions."""
    z, y = logits_of(model, batch)
    B, T = y.shape
    L = round(0.25 * T)
    W = round(0.5 * L)
    ct = 0.0
    for b in range(B):
        for t in range(L):
            negatives = [int(y[b, s]) for s in range(max(0, t - W), t) if y[b, s] != y[b, t]]
            ct += math.log1p(sum(math.exp(z[b, t, n] - z[b, t, y[b, t]]) for n in negatives))
    nll = F.cross_entropy(z.flatten(0, 1), y.flatten()).item()
    out = ContrastiveToken(alpha=0.7)(model, batch, 0)
    assert out.loss.item() == pytest.approx(nll + 0.7 * ct / (B * L), rel=1e-5)


def test_contrastive_token_negatives_repeat_and_exclude_the_gold():
    from objectives.contrastive_token import preceding_negatives

    y = torch.tensor([[5, 6, 5, 7, 5]])
    negatives, counted = preceding_negatives(y, window=3)
    # t = 4 (gold 5): y_1..y_3 = 6, 5, 7 -> 6 and 7 count, 5 (the gold) does not
    assert negatives[0, 4].tolist() == [6, 5, 7] and counted[0, 4].tolist() == [True, False, True]
    assert not counted[0, 0].any()  # nothing before the first position
