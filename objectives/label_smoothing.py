"""Label smoothing (Szegedy et al. 2016; Müller et al. 2019): (1−ε)·NLL + ε·mean_v(−log p_t(v)).

Convention: the ε mass is spread uniformly over all V tokens, the gold one included (ε/V each,
so the gold target gets 1−ε+ε/V), as in torch's ``cross_entropy(label_smoothing=ε)``.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob


class LabelSmoothing(TokenObjective):
    name = "label_smoothing"

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        check_knob("eps", eps, 0 <= eps < 1, "use 0 <= eps < 1")
        self.eps = eps

    def term(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """The smoothing cross-entropy mean_v(−log p_t(v)) alone: the auxiliary term (``aux={label_smoothing: ε}``)."""
        return TokenLoss(-logits.log_softmax(-1).mean(-1))

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        logp = logits.log_softmax(-1)
        nll = -at_targets(logp, targets)
        return TokenLoss((1 - self.eps) * nll - self.eps * logp.mean(-1), {"nll": nll})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = p − (1−ε)·onehot(y) − ε/V. The loss as ℓ + ε·(z_y − mean_v z_v) (log p_v = z_v − z_y − ℓ),
        read before the logits' memory becomes p."""
        z_gap = at_targets(logits, targets) - logits.mean(-1)
        p, nll = softmax_nll_(logits, targets)
        grad = minus_onehot_(p.sub_(self.eps / logits.shape[-1]), targets, 1.0 - self.eps)
        return TokenLoss(nll + self.eps * z_gap, {"nll": nll}, grad)
