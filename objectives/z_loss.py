"""z-loss (Chowdhery et al. 2022, PaLM §5): NLL + α·mean_t (log Z_t)², Z_t = Σ_v exp z_t,v.

It keeps the softmax normaliser near 1 (|log Z| near 0) so the logits cannot drift, at no cost in
likelihood (softmax is shift-invariant). PaLM uses α = 1e-4. α = 0 is MLE.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, log_softmax_nll_, minus_onehot_
from objectives.base import TokenObjective, check_knob


class ZLoss(TokenObjective):
    name = "z_loss"

    def __init__(self, alpha: float = 1.0e-4) -> None:
        super().__init__()
        check_knob("alpha", alpha, alpha >= 0, "use alpha >= 0")
        self.alpha = alpha

    def term(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """(log Z_t)² alone: the auxiliary term (``aux={z_loss: α}``)."""
        log_z = logits.logsumexp(-1)
        return TokenLoss(log_z.square(), {"log_z": log_z})

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        log_z = logits.logsumexp(-1)
        nll = log_z - at_targets(logits, targets)
        return TokenLoss(nll + self.alpha * log_z.square(), {"nll": nll, "log_z": log_z})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = p − onehot(y) + 2α·log Z·p = (1 + 2α·log Z)·p − onehot(y)."""
        log_z = logits.logsumexp(-1)
        logp, nll = log_softmax_nll_(logits, targets)
        grad = logp.exp_().mul_((1.0 + 2.0 * self.alpha * log_z)[:, None])
        loss = nll + self.alpha * log_z.square()
        return TokenLoss(loss, {"nll": nll, "log_z": log_z}, minus_onehot_(grad, targets))
