"""SimCTG's contrastive term against pairs of positions."""

import pytest
import torch
import torch.nn.functional as F

from objectives.mle import MLE
from objectives.simctg import SimCTG

V = 23  # the vocabulary of the model fixture


def mle_loss(model, batch):
    return MLE()(model, batch, 0).loss.item()


def test_simctg_formula(model, batch):
    with torch.no_grad():
        h = model.hidden(batch[:, :-1]).double()
    margin, total, pairs = 0.4, 0.0, 0
    for b in range(h.shape[0]):
        for i in range(h.shape[1]):
            for j in range(h.shape[1]):
                if i != j:
                    cos_ij = F.cosine_similarity(h[b, i], h[b, j], dim=0).item()
                    total += max(0.0, margin - 1.0 + cos_ij)
                    pairs += 1
    out = SimCTG(margin=margin)(model, batch, 0)
    assert out.logs["contrastive"].item() == pytest.approx(total / pairs, rel=1e-4, abs=1e-6)
    assert out.loss.item() == pytest.approx(mle_loss(model, batch) + total / pairs, rel=1e-5)
