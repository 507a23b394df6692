"""Convex learning (Shao et al., NeurIPS 2023, "Beyond MLE: Convex Learning for Text Generation"; released code
ictnlp/Convex-Learning, ``label_smoothed_cross_entropy_convex``, ``compute_convex_loss``): per sequence s,
P_s = exp(k·mean_t log p(y_t)), and over the batch's tokens

    loss = [−(1−ε)·Σ_s T·P_s + (ε/V)·Σ_s k·sg(P_s)·Σ_t Σ_v −log p_t(v)] / (B·T),

a convex function of the sequence's probability instead of its log: the gradient weights each sequence's tokens by
k·P_s, so the model sharpens toward the sequences it already finds likely (the paper's argument for greedy and beam
decoding), with the released label smoothing ε on the same weights. Its paper fine-tunes an MLE model with it: MLE
until ``start_step``. Computed as label smoothing's per-token loss (1−ε)·ℓ_t + (ε/V)·Σ_v −log p_t(v), each token
weighted by k·P_s/(B·T): the same gradient, and the value above.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import FineTuning, LossOutput, check_knob, split_batch
from objectives.label_smoothing import LabelSmoothing


class Convex(FineTuning):
    name = "convex"
    full_work_knobs = {"start_step": 0}

    def __init__(self, order: float = 1.0, eps: float = 0.1, start_step: int = 200) -> None:
        super().__init__()
        check_knob("order", order, order > 0, "use a convex order k > 0 (the released scripts' 1)")
        check_knob("eps", eps, 0 <= eps < 1, "use 0 <= eps < 1")
        self.init_fine_tuning(start_step)
        self.order, self.eps = order, eps
        self.smoothed = LabelSmoothing(eps=eps)

    def fine_tune(self, model: nn.Module, batch: torch.Tensor, step: int, terms=()) -> LossOutput:
        inputs, targets = split_batch(batch)
        per_token, stats = model.token_losses(
            model.hidden(inputs), self.smoothed.token_loss, targets, grad_fn=self.smoothed.token_loss_and_grad
        )  # (B, T): (1−ε)·ℓ_t + (ε/V)·Σ_v −log p_t(v)
        nll = stats["nll"]
        probability = torch.exp(-self.order * nll.mean(1))  # P_s (B,), no gradient
        weight = (self.order * probability)[:, None] / nll.numel()
        surrogate = (per_token * weight).sum()
        smooth_part = per_token.detach() - (1 - self.eps) * nll  # (ε/V)·Σ_v −log p_t(v)
        value = -(1 - self.eps) * probability.mean() + (self.order * probability * smooth_part.mean(1)).mean()
        loss = surrogate + (value - surrogate.detach())
        return LossOutput(loss, {"nll": nll.mean(), "sequence_probability": probability.mean()})
