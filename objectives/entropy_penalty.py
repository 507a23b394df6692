"""Confidence penalty (Pereyra et al. 2017): NLL − λ·mean_t H(p_t).

With a hinge threshold τ only over-confident predictions are penalised:
NLL + λ·mean_t max(0, τ − H(p_t)). In both forms λ > 0 pushes the predictive entropy up.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, log_softmax_nll_, minus_onehot_
from objectives.base import TokenObjective, check_knob


class EntropyPenalty(TokenObjective):
    name = "entropy_penalty"

    def __init__(self, lam: float = 0.1, threshold: float | None = None) -> None:
        super().__init__()
        check_knob("lam", lam, lam >= 0, "use lam >= 0")
        check_knob("threshold", threshold, threshold is None or threshold >= 0, "use null or a value >= 0 (nats)")
        self.lam, self.threshold = lam, threshold

    def penalty(self, entropy: torch.Tensor) -> torch.Tensor:
        return -entropy if self.threshold is None else (self.threshold - entropy).clamp_min(0)

    def term(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """The penalty alone, −H(p_t) (or the hinge): the auxiliary term (``aux={entropy_penalty: λ}``)."""
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return TokenLoss(self.penalty(entropy), {"entropy": entropy})

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        logp = logits.log_softmax(-1)
        nll = -at_targets(logp, targets)
        entropy = -(logp.exp() * logp).sum(-1)
        return TokenLoss(nll + self.lam * self.penalty(entropy), {"nll": nll, "entropy": entropy})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """With ∂H/∂z_i = −p_i·(log p_i + H): ∂/∂z = p − onehot(y) + λ·a·p·(log p + H)
        = λ·a·p·log p + p·(1 + λ·a·H) − onehot(y), a = 1 where the penalty acts (always without a threshold).
        Built on s·p·log p, s = λ (1 for λ = 0), whose row sums give H: no (r, V) buffer beyond p."""
        logp, nll = log_softmax_nll_(logits, targets)  # log p in the logits' memory
        p = logp.exp()
        scale = self.lam or 1.0
        grad = torch.addcmul(logp.new_zeros(()), p, logp, value=scale, out=logp)  # s·p·log p, in place
        entropy = grad.sum(-1).div_(-scale)  # (r,)
        if self.threshold is None:  # a·λ/s: 1, or 0 for λ = 0
            weight = self.lam / scale
        else:  # a·λ/s per row (r, 1)
            weight = (self.threshold - entropy >= 0).to(entropy.dtype)[:, None] * (self.lam / scale)
        if self.threshold is not None or self.lam == 0:  # λ·p·log p only in the rows where it acts
            grad.mul_(weight)
        grad = torch.addcmul(grad, p, 1 + scale * weight * entropy[:, None], out=grad)
        loss = nll + self.lam * self.penalty(entropy)
        return TokenLoss(loss, {"nll": nll, "entropy": entropy}, minus_onehot_(grad, targets))
