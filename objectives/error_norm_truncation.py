"""Error-norm truncation (Li et al., ICLR 2024, "Error Norm Truncation: Robust Training in the Presence of Data
Noise for Text Generation Models"; released code tianjianl/error_norm_truncation, the threshold mode of
``run_clm_no_trainer.py`` with ``compute_el2n``): mean_t m_t·ℓ_t, m_t = 0 where ‖p_t − onehot(y_t)‖₂ > threshold.

The error norm lies in [0, √2]: near √2 the model puts its mass confidently on another token than the data's, which
is where a noisy target is more likely than an unlearnt one. Truncated tokens count as zeros in the mean, as
released. Nothing is truncated until after ``start_step`` (the released ``start_iteration``: a step counts from
then on when it is past it); here after the suite's warm-up. threshold ≥ √2 is MLE.
"""

from __future__ import annotations

import math

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob

SQRT2 = math.sqrt(2)  # the largest error norm: all of p on one wrong token


def error_norm(p: torch.Tensor, p_gold: torch.Tensor) -> torch.Tensor:
    """‖p − onehot(y)‖₂ = sqrt(Σ_v p_v² − 2·p_y + 1) of probabilities (r, V) and p_y (r,) -> (r,)."""
    return (torch.linalg.vecdot(p, p) - 2 * p_gold + 1).clamp_min(0).sqrt()


class ErrorNormTruncation(TokenObjective):
    name = "error_norm_truncation"
    papers_regimes = ("from scratch", "fine-tuning")  # language models and translation from scratch, T5 fine-tuned
    full_work_knobs = {"start_step": 0}

    def __init__(self, threshold: float = 1.35, start_step: int = 100) -> None:
        super().__init__()
        check_knob(
            "threshold", threshold, threshold > 0, f"use threshold > 0 (the norm is at most √2 = {math.sqrt(2):.4f})"
        )
        check_knob("start_step", start_step, isinstance(start_step, int) and start_step >= 0, "use an integer >= 0")
        self.threshold, self.start_step = threshold, start_step
        self.truncating = True

    def prepare_step(self, model, step: int) -> None:
        self.truncating = step > self.start_step

    def keep(self, p: torch.Tensor, p_gold: torch.Tensor) -> torch.Tensor:
        if not self.truncating:
            return torch.ones_like(p_gold)
        return (error_norm(p, p_gold) <= self.threshold).to(p_gold.dtype)

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        logp = logits.log_softmax(-1)
        nll = -at_targets(logp, targets)
        p = logp.detach().exp()
        keep = self.keep(p, at_targets(p, targets))
        return TokenLoss(keep * nll, {"nll": nll, "kept": keep})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂/∂z = m_t·(p − onehot(y))."""
        p, nll = softmax_nll_(logits, targets)
        keep = self.keep(p, torch.exp(-nll))
        grad = minus_onehot_(p, targets).mul_(keep[:, None])
        return TokenLoss(keep * nll, {"nll": nll, "kept": keep}, grad)
