"""Confidence penalty (Pereyra et al. 2017): NLL − λ·mean_t H(p_t).

With a hinge threshold τ only over-confident predictions are penalised:
NLL + λ·mean_t max(0, τ − H(p_t)). In both forms λ > 0 pushes the predictive entropy up.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch


class EntropyPenalty(Objective):
    name = "entropy_penalty"

    def __init__(self, lam: float = 0.1, threshold: float | None = None) -> None:
        super().__init__()
        check_knob("lam", lam, lam >= 0, "use lam >= 0")
        check_knob("threshold", threshold, threshold is None or threshold >= 0, "use null or a value >= 0 (nats)")
        self.lam, self.threshold = lam, threshold

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        logp = model(inputs).float().log_softmax(-1)  # (B, T, V)
        nll = -logp.gather(-1, targets[..., None]).mean()
        entropy = -(logp.exp() * logp).sum(-1)  # (B, T)
        if self.threshold is None:
            penalty = -entropy.mean()
        else:
            penalty = (self.threshold - entropy).clamp_min(0).mean()
        loss = nll + self.lam * penalty
        return LossOutput(loss, {"nll": nll.detach(), "entropy": entropy.mean().detach()})
