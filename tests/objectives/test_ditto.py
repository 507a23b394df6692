"""DITTO: the pseudo-repetitive rows and the loss on them."""

import math

import pytest
import torch

from objectives.ditto import DITTO, repeat_spans

V = 23  # the vocabulary of the model fixture


def test_ditto_rows_are_a_prefix_then_the_span_repeated():
    batch = torch.arange(40)[None].repeat(2, 1)
    rows = repeat_spans(batch, torch.tensor([3, 5]), torch.tensor([10, 5]))
    assert rows[0, :12].tolist() == [7, 8, 9, 10, 11, 12, 10, 11, 12, 10, 11, 12]
    assert rows[1, :15].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9]


def test_ditto_loss_formula(model, batch, logits_of):
    """On the rows it builds: mean over targets t ≥ 2L of −log(1 − |p(y_t) − λ·p(y_{t−L})|)."""
    objective = DITTO(lam=0.4, rate=1.0, min_len=2, max_len=4, start_step=0)
    torch.manual_seed(5)
    out = objective(model, batch, 0)
    torch.manual_seed(5)
    torch.rand(())  # the rate's draw
    rows, lengths = objective.pseudo_repetitive(batch)
    z, y = logits_of(model, rows)
    p = z.softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    total, n = 0.0, 0
    for b in range(rows.shape[0]):
        L = int(lengths[b])
        for t in range(2 * L, y.shape[1]):
            assert y[b, t] == y[b, t - L]  # the same token one copy earlier
            total += -math.log(1 - abs(float(p[b, t]) - 0.4 * float(p[b, t - L])))
            n += 1
    assert out.loss.item() == pytest.approx(total / n, rel=1e-5)
