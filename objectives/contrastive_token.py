"""Contrastive token learning (Jiang et al. 2022): NLL + α·mean_{t<L} log(1 + Σ_{n∈N_t} exp(z_t,n − z_t,y_t)).

N_t = the gold tokens of the ``window`` positions before t, minus y_t itself, counted with their
multiplicity; the term acts on the first L = ``ct_length`` positions of each sequence, as in the released
code (ShaojieJiang/CT-Loss), whose defaults these are: L = 0.25·T, window = 0.5·L (a knob ≤ 1 is a fraction,
> 1 a count). The released code also never uses the padding id as a negative; objbench has no padding.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob


def preceding_negatives(targets: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """targets (B, T) -> negatives (B, T, window): y_{t−window} .. y_{t−1}, and which count (B, T, window):
    a position before the sequence start does not, nor a token equal to y_t."""
    B, T = targets.shape
    offsets = torch.arange(window, 0, -1, device=targets.device)  # window .. 1 positions back
    source = torch.arange(T, device=targets.device)[:, None] - offsets  # (T, window)
    negatives = targets[:, source.clamp_min(0)]  # (B, T, window)
    counted = (source >= 0) & (negatives != targets[:, :, None])
    return negatives, counted


class ContrastiveToken(TokenObjective):
    name = "contrastive_token"
    papers_regimes = ("fine-tuning",)  # GPT-2 fine-tuned on WikiText-103

    def __init__(self, alpha: float = 1.0, ct_length: float = 0.25, window: float = 0.5) -> None:
        super().__init__()
        check_knob("alpha", alpha, alpha >= 0, "use alpha >= 0")
        check_knob("ct_length", ct_length, ct_length > 0, "use a fraction of the sequence in (0, 1] or a count > 1")
        check_knob("window", window, window > 0, "use a fraction of ct_length in (0, 1] or a count > 1")
        self.alpha, self.ct_length, self.window = alpha, ct_length, window

    def lengths(self, T: int) -> tuple[int, int]:
        """(positions with the term, negatives per position) for sequences of T targets."""
        length = round(T * self.ct_length) if self.ct_length <= 1 else min(round(self.ct_length), T)
        window = round(self.window * length) if self.window <= 1 else round(self.window)
        return length, max(window, 1)

    def per_token_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Negatives (B, T, W) and their weights (B, T, W): α·T/L where the term acts (the first L positions,
        a mean over those), else 0."""
        T = targets.shape[1]
        length, window = self.lengths(T)
        negatives, counted = preceding_negatives(targets, window)
        acts = (torch.arange(T, device=targets.device) < length)[None, :, None]
        return negatives, (counted & acts).to(torch.float32) * (self.alpha * T / max(length, 1))

    def token_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, weights: torch.Tensor
    ) -> TokenLoss:
        """ℓ_t = NLL + w_t·log(1 + Σ_n exp(z_n − z_y)), w_t the row's weight (one value per row or 0)."""
        nll = logits.logsumexp(-1) - at_targets(logits, targets)
        gaps = logits.gather(-1, negatives) - logits.gather(-1, targets[:, None])  # (r, W)
        ct = torch.log1p((gaps.exp() * (weights > 0)).sum(-1))
        return TokenLoss(nll + weights.amax(-1) * ct, {"nll": nll, "ct": ct})

    def token_loss_and_grad(
        self, logits: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, weights: torch.Tensor
    ) -> TokenLoss:
        """With a_n = exp(z_n − z_y)/(1 + Σ exp(z_n' − z_y)) over counted negatives, A = Σ a_n:
        ∂/∂z = p − onehot(y) + w·(Σ_n a_n·onehot(n) − A·onehot(y))."""
        z_negatives, z_gold = logits.gather(-1, negatives), logits.gather(-1, targets[:, None])
        exp_gaps = (z_negatives - z_gold).exp() * (weights > 0)  # (r, W)
        total = exp_gaps.sum(-1)
        ct = torch.log1p(total)
        w = weights.amax(-1)
        p, nll = softmax_nll_(logits, targets)
        a = exp_gaps * (w / (1.0 + total))[:, None]
        grad = minus_onehot_(p.scatter_add_(-1, negatives, a), targets, 1.0 + a.sum(-1))
        return TokenLoss(nll + w * ct, {"nll": nll, "ct": ct}, grad)
