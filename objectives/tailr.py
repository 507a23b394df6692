"""TaiLr (Ji et al. 2023): mean_t w_t·ℓ_t with w_t = clamp(p_t(y_t) / (γ + (1−γ)·p_t(y_t)), min_w, 1) detached.

Total-variation-inspired re-weighting: tokens the model finds unlikely get less weight. γ = 0
gives w = 1, plain MLE; larger γ down-weights low-probability tokens more.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch
from objectives.chunked_head import TokenLoss, closed_form, minus_onehot_, softmax_nll_, token_losses


class TaiLr(Objective):
    name = "tailr"

    def __init__(self, gamma: float = 0.1, min_w: float = 0.2) -> None:
        super().__init__()
        check_knob("gamma", gamma, 0 <= gamma <= 1, "use 0 <= gamma <= 1")
        check_knob("min_w", min_w, 0 <= min_w <= 1, "use 0 <= min_w <= 1")
        self.gamma, self.min_w = gamma, min_w

    @closed_form
    def token_loss(self, z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """Logits (r, V) -> w_t·ℓ_t, w_t detached; ∂/∂z = w_t·(p − onehot(y))."""
        p, nll = softmax_nll_(z, targets)
        p_gold = torch.exp(-nll.detach())
        weight = (p_gold / (self.gamma + (1 - self.gamma) * p_gold)).clamp(self.min_w, 1.0)
        grad = minus_onehot_(p, targets).mul_(weight[:, None])
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight}, grad)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        losses, stats = token_losses(model, model.hidden(inputs), self.token_loss, targets)
        return LossOutput(losses.mean(), {"nll": stats["nll"].mean(), "weight": stats["weight"].mean()})
