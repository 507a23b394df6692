"""Maximum likelihood: mean_t −log p_θ(y_t | x_<t) (Radford et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, split_batch
from objectives.chunked_head import nll_fn, token_losses


class MLE(Objective):
    name = "mle"

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        nll = token_losses(model, model.hidden(inputs), nll_fn, targets)[0].mean()
        return LossOutput(loss=nll, logs={"nll": nll.detach()})
