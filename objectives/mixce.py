"""MixCE (Zhang et al. 2023): mean_t[η·ℓ_t + (1−η)·q_t·ℓ_t], ℓ_t = −log p_t(y_t), q_t = exp(−ℓ_t) detached.

The second term approximates reverse cross-entropy by weighting each token's NLL with the
model's own probability of it; η = 1 is MLE.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch
from objectives.chunked_head import TokenLoss, closed_form, minus_onehot_, softmax_nll_, token_losses


class MixCE(Objective):
    name = "mixce"

    def __init__(self, eta: float = 0.5) -> None:
        super().__init__()
        check_knob("eta", eta, 0 <= eta <= 1, "use 0 <= eta <= 1")
        self.eta = eta

    @closed_form
    def token_loss(self, z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """Logits (r, V) -> w_t·ℓ_t with w_t = η + (1−η)·q_t detached; ∂/∂z = w_t·(p − onehot(y))."""
        p, nll = softmax_nll_(z, targets)
        q = torch.exp(-nll.detach())
        weight = self.eta + (1 - self.eta) * q
        grad = minus_onehot_(p, targets).mul_(weight[:, None])
        return TokenLoss(weight * nll, {"nll": nll, "q": q}, grad)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        losses, stats = token_losses(model, model.hidden(inputs), self.token_loss, targets)
        return LossOutput(losses.mean(), {"nll": stats["nll"].mean(), "q": stats["q"].mean()})
