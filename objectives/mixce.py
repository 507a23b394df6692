"""MixCE (Zhang et al. 2023): mean_t[η·ℓ_t + (1−η)·q_t·ℓ_t], ℓ_t = −log p_t(y_t), q_t = exp(−ℓ_t) detached.

The second term approximates reverse cross-entropy by weighting each token's NLL with the
model's own probability of it; η = 1 is MLE.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch, token_nll


class MixCE(Objective):
    name = "mixce"

    def __init__(self, eta: float = 0.5) -> None:
        super().__init__()
        check_knob("eta", eta, 0 <= eta <= 1, "use 0 <= eta <= 1")
        self.eta = eta

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        nll = token_nll(model(inputs), targets)  # (B, T)
        q = torch.exp(-nll.detach())
        loss = (self.eta * nll + (1 - self.eta) * q * nll).mean()
        return LossOutput(loss, {"nll": nll.mean().detach(), "q": q.mean()})
