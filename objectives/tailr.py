"""TaiLr (Ji et al. 2023): mean_t w_t·ℓ_t with w_t = clamp(p_t(y_t) / (γ + (1−γ)·p_t(y_t)), min_w, 1) detached.

Total-variation-inspired re-weighting: tokens the model finds unlikely get less weight. γ = 0
gives w = 1, plain MLE; larger γ down-weights low-probability tokens more.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch, token_nll


class TaiLr(Objective):
    name = "tailr"

    def __init__(self, gamma: float = 0.1, min_w: float = 0.2) -> None:
        super().__init__()
        check_knob("gamma", gamma, 0 <= gamma <= 1, "use 0 <= gamma <= 1")
        check_knob("min_w", min_w, 0 <= min_w <= 1, "use 0 <= min_w <= 1")
        self.gamma, self.min_w = gamma, min_w

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        nll = token_nll(model(inputs), targets)  # (B, T)
        p = torch.exp(-nll.detach())
        weight = (p / (self.gamma + (1 - self.gamma) * p)).clamp(self.min_w, 1.0)
        loss = (weight * nll).mean()
        return LossOutput(loss, {"nll": nll.mean().detach(), "weight": weight.mean()})
