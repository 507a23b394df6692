"""MiLe (Su et al., NAACL 2024 Findings, "MiLe Loss: a New Loss for Mitigating the Bias of Learning Difficulties in
Generative Language Models"; released code ``InfoEntropyLoss``): Σ_t w_t·ℓ_t / Σ_t w_t, ℓ_t = −log p_t(y_t),
w_t = (1 + H_t)^γ, H_t the entropy of the detached prediction (probabilities clamped to [1e-8, 1], as released).

Where the model is unsure (a high-entropy prediction) the token weighs more; unlike the focal loss the weight does
not depend on the gold token. The batch's weights are normalised to mean 1 (the released α = 1 / mean_t w_t).
γ = 0 is MLE.
"""

from __future__ import annotations

import math

import torch

from lit_modules.core.head import TokenLoss, at_targets, log_softmax_nll_, minus_onehot_
from objectives.base import TokenObjective, check_knob

PROB_FLOOR = 1e-8  # the released code clamps the probabilities to [1e-8, 1] before H = −Σ p log p
LOG_FLOOR = math.log(PROB_FLOOR)


def clamped_entropy_(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v c_v log c_v, c = p clamped to [1e-8, 1], from p and log p (r, V) -> (r,); log p is clamped in place
    and then holds the products (no log of its own; p ≤ 1 already; the same sums as ``torch.linalg.vecdot``, which
    writes its products to a buffer of its own)."""
    return logp.clamp_min_(LOG_FLOOR).mul_(p.clamp_min(PROB_FLOOR)).sum(-1).neg_()


class MiLe(TokenObjective):
    name = "mile"
    normalising_weight = "weight"

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        check_knob("gamma", gamma, gamma >= 0, "use gamma >= 0 (0 is MLE)")
        self.gamma = gamma

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        logp = logits.log_softmax(-1)
        nll = -at_targets(logp, targets)
        entropy = clamped_entropy_(logp.detach().exp(), logp.detach().clone())
        weight = (1 + entropy) ** self.gamma
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight, "entropy": entropy})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = w_t·(p − onehot(y)) (the batch normalisation is a constant factor, applied after)."""
        logp, nll = log_softmax_nll_(logits, targets)  # log p in the logits' memory
        p = logp.exp()
        entropy = clamped_entropy_(p, logp)
        weight = (1 + entropy) ** self.gamma
        grad = minus_onehot_(p, targets).mul_(weight[:, None])
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight, "entropy": entropy}, grad)
