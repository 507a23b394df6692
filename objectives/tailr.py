"""TaiLr (Ji et al. 2023): mean_t w_t·ℓ_t with w_t = clamp(p_t(y_t) / (γ + (1−γ)·p_t(y_t)), min_w, 1) detached.

Total-variation-inspired re-weighting: tokens the model finds unlikely get less weight. γ = 0
gives w = 1, plain MLE; larger γ down-weights low-probability tokens more.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob


class TaiLr(TokenObjective):
    name = "tailr"
    papers_regimes = (
        "from scratch",
        "fine-tuning",
    )  # synthetic data and translation from scratch, pretrained models fine-tuned

    def __init__(self, gamma: float = 0.1, min_w: float = 0.2) -> None:
        super().__init__()
        check_knob("gamma", gamma, 0 <= gamma <= 1, "use 0 <= gamma <= 1")
        check_knob("min_w", min_w, 0 <= min_w <= 1, "use 0 <= min_w <= 1")
        self.gamma, self.min_w = gamma, min_w

    def weight(self, p_gold: torch.Tensor) -> torch.Tensor:
        return (p_gold / (self.gamma + (1 - self.gamma) * p_gold)).clamp(self.min_w, 1.0)

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        nll = -at_targets(logits.log_softmax(-1), targets)
        weight = self.weight(torch.exp(-nll.detach()))
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = w_t·(p − onehot(y))."""
        p, nll = softmax_nll_(logits, targets)
        weight = self.weight(torch.exp(-nll))
        grad = minus_onehot_(p, targets).mul_(weight[:, None])
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight}, grad)
