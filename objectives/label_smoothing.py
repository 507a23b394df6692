"""Label smoothing (Szegedy et al. 2016; Müller et al. 2019): (1−ε)·NLL + ε·mean_v(−log p_t(v)).

Convention: the ε mass is spread uniformly over all V tokens, the gold one included (ε/V each,
so the gold target gets 1−ε+ε/V), as in torch's ``cross_entropy(label_smoothing=ε)``.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch
from objectives.chunked_head import TokenLoss, closed_form, minus_onehot_, softmax_nll_, token_losses


class LabelSmoothing(Objective):
    name = "label_smoothing"

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        check_knob("eps", eps, 0 <= eps < 1, "use 0 <= eps < 1")
        self.eps = eps

    @closed_form
    def token_loss(self, z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """Logits (r, V) -> smoothed cross-entropy; ∂/∂z = p − (1−ε)·onehot(y) − ε/V."""
        # (1−ε)·ℓ − ε·mean_v log p_v = ℓ + ε·(z_y − mean_v z_v), since log p_v = z_v − z_y − ℓ: the mean
        # of z is read before z's memory becomes p (= F.cross_entropy(z, y, label_smoothing=ε), tested)
        z_gap = z.gather(-1, targets[:, None]).squeeze(-1) - z.mean(-1)
        p, nll = softmax_nll_(z, targets)
        loss = nll + self.eps * z_gap
        grad = minus_onehot_(p.sub_(self.eps / z.shape[-1]), targets, 1.0 - self.eps)
        return TokenLoss(loss, {"nll": nll}, grad)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        losses, stats = token_losses(model, model.hidden(inputs), self.token_loss, targets)
        return LossOutput(losses.mean(), {"nll": stats["nll"].mean()})
