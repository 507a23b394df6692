"""Maximum likelihood: mean_t −log p_θ(y_t | x_<t) (Radford et al. 2018)."""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, nll_loss, nll_loss_and_grad
from objectives.base import TokenObjective


class MLE(TokenObjective):
    name = "mle"
    papers_regimes = ("from scratch", "fine-tuning")  # MLE: both

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        out = nll_loss(logits, targets)
        return TokenLoss(out.loss, {"nll": out.loss})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = p − onehot(y)."""
        out = nll_loss_and_grad(logits, targets)
        return TokenLoss(out.loss, {"nll": out.loss}, out.grad)
