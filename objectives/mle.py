"""Maximum likelihood: mean_t −log p_θ(y_t | x_<t) (Radford et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, split_batch, token_nll


class MLE(Objective):
    name = "mle"

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        nll = token_nll(model(inputs), targets).mean()
        return LossOutput(loss=nll, logs={"nll": nll.detach()})
