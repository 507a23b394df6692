"""MixCE (Zhang et al. 2023): mean_t[η·ℓ_t + (1−η)·q_t·ℓ_t], ℓ_t = −log p_t(y_t), q_t = exp(−ℓ_t) detached.

The second term approximates reverse cross-entropy by weighting each token's NLL with the
model's own probability of it; η = 1 is MLE.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob


class MixCE(TokenObjective):
    name = "mixce"
    papers_regimes = ("from scratch", "fine-tuning")  # synthetic sources from scratch, GPT-2 fine-tuned on real text

    def __init__(self, eta: float = 0.5) -> None:
        super().__init__()
        check_knob("eta", eta, 0 <= eta <= 1, "use 0 <= eta <= 1")
        self.eta = eta

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        nll = -at_targets(logits.log_softmax(-1), targets)
        q = torch.exp(-nll.detach())
        return TokenLoss((self.eta + (1 - self.eta) * q) * nll, {"nll": nll, "q": q})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = w_t·(p − onehot(y)), w_t = η + (1−η)·q_t."""
        p, nll = softmax_nll_(logits, targets)
        q = torch.exp(-nll)
        weight = self.eta + (1 - self.eta) * q
        grad = minus_onehot_(p, targets).mul_(weight[:, None])
        return TokenLoss(weight * nll, {"nll": nll, "q": q}, grad)
