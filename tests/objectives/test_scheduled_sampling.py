"""Scheduled sampling: which inputs the model's own predictions replace, and when."""

import math

import pytest
import torch
import torch.nn.functional as F

from objectives.mle import MLE
from objectives.scheduled_sampling import ScheduledSampling

V = 23  # the vocabulary of the model fixture


# ---- scheduled sampling ----
class ConstantModel(torch.nn.Module):
    """Always predicts token c: every state is e_c, the output embedding scale·I."""

    def __init__(self, c: int, scale: float = 10.0) -> None:
        super().__init__()
        self.c = c
        self.output_embedding = scale * torch.eye(V)
        self.output_bias = None

    def hidden(self, idx):
        return F.one_hot(torch.full_like(idx, self.c), V).float()

    def forward(self, idx):
        return self.hidden(idx) @ self.output_embedding.T

    def map_logits(self, h, fn):  # as the model's: fn on (rows, V) logits
        return fn(h.flatten(0, -2) @ self.output_embedding.T).view(h.shape[:-1])


def test_scheduled_sampling_replaces_inputs_with_previous_predictions(batch):
    objective = ScheduledSampling(schedule="linear", k=0.0, c=0.0, min_gold=0.0)
    assert objective.gold_probability(100) == 0.0
    inputs = batch[:, :-1]
    mixed = objective.mix_inputs(ConstantModel(7), inputs, step=100)
    assert torch.equal(mixed[:, 0], inputs[:, 0])  # position 0 keeps the gold token
    assert (mixed[:, 1:] == 7).all()


def test_scheduled_sampling_shift_uses_the_prediction_made_at_t_minus_1(model, batch):
    objective = ScheduledSampling(schedule="linear", k=0.0, c=0.0, min_gold=0.0)
    inputs = batch[:, :-1]
    with torch.no_grad():
        predicted = model(inputs).argmax(-1)
    mixed = objective.mix_inputs(model, inputs, step=0)
    assert torch.equal(mixed[:, 1:], predicted[:, :-1])


def test_scheduled_sampling_mix_sample_draws_from_the_model(model, batch):
    """mix=sample: replacements are draws from p(· | x_<t): a model certain of token 7 gives 7 everywhere, an
    uncertain one gives draws that differ from its argmax somewhere, reproducibly under one generator."""
    objective = ScheduledSampling(schedule="linear", k=0.0, c=0.0, min_gold=0.0, mix="sample")
    inputs = batch[:, :-1]
    mixed = objective.mix_inputs(ConstantModel(7, scale=100.0), inputs, step=0)
    assert (mixed[:, 1:] == 7).all() and torch.equal(mixed[:, 0], inputs[:, 0])
    with torch.no_grad():
        argmax = model(inputs).argmax(-1)
    draws = [objective.mix_inputs(model, inputs, 0, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0][:, 1:], argmax[:, :-1])


def test_scheduled_sampling_schedules_and_gold_one_is_mle(model, batch):
    linear = ScheduledSampling(schedule="linear", k=1.0, c=0.01, min_gold=0.1)
    assert [linear.gold_probability(s) for s in (0, 50, 1000)] == pytest.approx([1.0, 0.5, 0.1])
    exponential = ScheduledSampling(schedule="exponential", k=0.99, min_gold=0.0)
    assert exponential.gold_probability(10) == pytest.approx(0.99**10)
    inverse = ScheduledSampling(schedule="inverse_sigmoid", k=10.0, min_gold=0.0)
    assert inverse.gold_probability(20) == pytest.approx(10 / (10 + math.exp(2)))
    always_gold = ScheduledSampling(schedule="linear", k=1.0, c=0.0, min_gold=1.0)
    assert always_gold(model, batch, 5).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)


def mle_loss(model, batch):
    return MLE()(model, batch, 0).loss.item()
