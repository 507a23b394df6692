"""GOLD against its formula; MLE before its start step, where it takes its reference."""

import copy
import math

import pytest
import torch

from objectives.base import ObjectiveContext
from objectives.gold import GOLD
from objectives.mle import MLE

V = 23  # the vocabulary of the model fixture


def test_gold_formula(model, batch, logits_of):
    """-max(u, p(y_t))·Q_t·log p(y_t), Q_t the sum of max(c, p_MLE) over t..t+K (1 past the end), p_MLE the
    model at start_step."""
    objective = GOLD(iw_min=0.3, trunc_min=0.1, suffix=2, gamma=0.5, start_step=2)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    objective(model, batch, 2)  # the snapshot is taken at start_step
    reference = copy.deepcopy(model)
    with torch.no_grad():  # the policy moves away from the frozen reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z, y = logits_of(model, batch)
    z_ref, _ = logits_of(reference, batch)
    p = z.softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    p_mle = z_ref.softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    B, T = y.shape
    total = 0.0
    for b in range(B):
        for t in range(T):
            q = sum(0.5**k * max(0.1, float(p_mle[b, t + k]) if t + k < T else 1.0) for k in range(3))
            total += -max(0.3, float(p[b, t])) * q * math.log(p[b, t])
    assert objective(model, batch, 5).loss.item() == pytest.approx(total / (B * T), rel=1e-5)


def mle_loss(model, batch):
    return MLE()(model, batch, 0).loss.item()


def test_gold_is_mle_before_start_step_and_takes_its_reference_there(model, batch):
    objective = GOLD(start_step=3)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert objective(model, batch, 2).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)
    assert not bool(objective.reference_taken)
    objective(model, batch, 3)
    assert bool(objective.reference_taken)
    assert all(not p.requires_grad for p in objective.reference.parameters())
