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
        ∂/∂z = p − onehot(y) + λ·a·p·(log p + H) = λ·a·p·log p + p·(1 + λ·a·H) − onehot(y),
        a = 1 where the penalty acts (always without a threshold), else 0."""
        logp, nll = log_softmax_nll_(z, targets)  # log p in z's memory
        p = logp.exp()
        scale = self.lam or 1.0  # s = λ, or 1 for λ = 0
        with torch.no_grad():  # s·p·log p in logp's memory: H is minus its row sum / s, the gradient is built on it
            grad = torch.addcmul(logp.new_zeros(()), p, logp, value=scale, out=scratch(logp))
        if logp.requires_grad:  # autograd of this same loss (the tests) needs H as a function of z
            entropy = -torch.linalg.vecdot(p, logp)
        else:  # the training path: no (r, V) product of its own (vecdot writes one); 0.86x this function's time
            entropy = grad.sum(-1).div_(-scale)  # (r,)
        if self.threshold is None:  # a·λ/s: 1, or 0 for λ = 0
            penalty, weight = -entropy, self.lam / scale
        else:  # a·λ/s per row (r, 1)
            penalty = (self.threshold - entropy).clamp_min(0)
            weight = (self.threshold - entropy >= 0).to(entropy.dtype)[:, None] * (self.lam / scale)
        with torch.no_grad():
            if self.threshold is not None or self.lam == 0:  # λ·p·log p only in the rows where it acts
                grad.mul_(weight)
            grad = torch.addcmul(grad, p, 1 + scale * weight * entropy[:, None], out=grad)
        return TokenLoss(nll + self.lam * penalty, {"nll": nll, "entropy": entropy}, minus_onehot_(grad, targets))

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        losses, stats = token_losses(model, model.hidden(inputs), self.token_loss, targets)
        return LossOutput(losses.mean(), {"nll": stats["nll"].mean(), "entropy": stats["entropy"].mean()})
