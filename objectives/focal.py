"""Focal loss for language models (Lin et al. 2017; as MiLe's released code, Su et al. 2024, ``FocalLoss``):
Σ_t w_t·ℓ_t / Σ_t w_t, ℓ_t = −log p_t(y_t), w_t = (1 − p_t(y_t))^γ detached.

Tokens the model already predicts well get less weight; the batch's weights are normalised to mean 1 (the released
code's α = 1 / mean_t w_t), so the loss stays on the NLL's scale. γ = 0 is MLE.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob


class Focal(TokenObjective):
    name = "focal"
    normalising_weight = "weight"

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        check_knob("gamma", gamma, gamma >= 0, "use gamma >= 0 (0 is MLE)")
        self.gamma = gamma

    def weight(self, nll: torch.Tensor) -> torch.Tensor:
        return (1 - torch.exp(-nll)).clamp_min(0.0) ** self.gamma

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        nll = -at_targets(logits.log_softmax(-1), targets)
        weight = self.weight(nll.detach())
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = w_t·(p − onehot(y)) (the batch normalisation is a constant factor, applied after)."""
        p, nll = softmax_nll_(logits, targets)
        weight = self.weight(nll)
        grad = minus_onehot_(p, targets).mul_(weight[:, None])
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight}, grad)
