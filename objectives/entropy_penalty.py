"""Confidence penalty (Pereyra et al. 2017): NLL − λ·mean_t H(p_t).

With a hinge threshold τ only over-confident predictions are penalised:
NLL + λ·mean_t max(0, τ − H(p_t)). In both forms λ > 0 pushes the predictive entropy up.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch
from objectives.chunked_head import TokenLoss, closed_form, log_softmax_nll_, minus_onehot_, scratch, token_losses


class EntropyPenalty(Objective):
    name = "entropy_penalty"

    def __init__(self, lam: float = 0.1, threshold: float | None = None) -> None:
        super().__init__()
        check_knob("lam", lam, lam >= 0, "use lam >= 0")
        check_knob("threshold", threshold, threshold is None or threshold >= 0, "use null or a value >= 0 (nats)")
        self.lam, self.threshold = lam, threshold

    @closed_form
    def token_loss(self, z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """Logits (r, V) -> ℓ_t + λ·penalty_t; with ∂H/∂z_i = −p_i·(log p_i + H):
        ∂/∂z = p − onehot(y) + λ·[penalty active]·p·(log p + H)."""
        logp, nll = log_softmax_nll_(z, targets)  # log p in z's memory
        p = logp.exp()
        entropy = -torch.linalg.vecdot(p, logp)  # (r,)
        if self.threshold is None:
            penalty = -entropy
        else:
            penalty = (self.threshold - entropy).clamp_min(0)
        with torch.no_grad():  # the gradient is built in logp's memory: two passes instead of four
            log_ratio = scratch(logp).add_(entropy[:, None])  # log p + H
            if self.threshold is not None:
                log_ratio.mul_((self.threshold - entropy >= 0)[:, None])  # zero where the hinge is inactive
            grad = torch.addcmul(p, p, log_ratio, value=self.lam, out=log_ratio)  # p + λ·p·(log p + H)
        return TokenLoss(nll + self.lam * penalty, {"nll": nll, "entropy": entropy}, minus_onehot_(grad, targets))

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        losses, stats = token_losses(model, model.hidden(inputs), self.token_loss, targets)
        return LossOutput(losses.mean(), {"nll": stats["nll"].mean(), "entropy": stats["entropy"].mean()})
