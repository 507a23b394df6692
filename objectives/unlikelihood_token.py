"""Token-level unlikelihood (Welleck et al. 2019): NLL + α·mean_t Σ_{c∈C_t} −log(1 − p_t(c)).

C_t = the distinct tokens of the same sequence seen so far (x_0..x_t, or the last ``window``
of them), minus the gold y_t. Candidates never cross sequences (the reference implementation
flattens the batch and so leaks them across sequences).

C_t has at most t+1 members, all of them earlier inputs, so the penalty is read at the (B, T, T)
positions of the context rather than through a (B, T, V) candidate mask: the same sum, a fraction of
the memory traffic when T ≪ V.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob

ONE_MINUS_P_FLOOR = 1e-5  # the released code's clamp of 1 − p before −log(1 − p)


def candidate_positions(inputs: torch.Tensor, targets: torch.Tensor, window: int | None) -> torch.Tensor:
    """(B, T, T) bool: [b, t, s] is True iff inputs[b, s] ∈ C_t and s is its latest occurrence up to t.

    Counting each token of C_t once, at its latest occurrence s ≤ t (inside the window), gives the
    distinct-token set of the definition.
    """
    B, T = inputs.shape
    pos = torch.arange(T, device=inputs.device)
    same = inputs[:, :, None] == inputs[:, None, :]  # (B, S, S') same token at s and s'
    later = pos[None, :] > pos[:, None]  # (S, S') s' after s
    next_occurrence = torch.where(same & later, pos, T).amin(-1)  # (B, S): next s' with the same token, T if none
    t, s = pos[:, None], pos[None, :]  # (T, 1), (1, S)
    counted = (s <= t) & (t < next_occurrence[:, None, :])  # (B, T, S): s is the latest occurrence up to t
    if window is not None:
        counted &= s > t - window
    return counted & (inputs[:, None, :] != targets[:, :, None])


def candidate_mask(inputs: torch.Tensor, targets: torch.Tensor, vocab_size: int, window: int | None) -> torch.Tensor:
    """(B, T, V) bool: v ∈ C_t (for analysis and tests; the loss reads ``candidate_positions``)."""
    B, T = inputs.shape
    counted = candidate_positions(inputs, targets, window)
    mask = torch.zeros(B, T, vocab_size, dtype=torch.int32, device=inputs.device)
    mask.scatter_add_(2, inputs[:, None, :].expand(B, T, T), counted.to(torch.int32))
    return mask > 0


class UnlikelihoodToken(TokenObjective):
    name = "unlikelihood_token"
    papers_regimes = ("from scratch", "fine-tuning")  # token level from scratch on WikiText-103, and fine-tuning

    def __init__(self, alpha: float = 1.0, window: int | None = None) -> None:
        super().__init__()
        check_knob("alpha", alpha, alpha >= 0, "use alpha >= 0")
        check_knob("window", window, window is None or window >= 1, "use null (whole context) or an integer >= 1")
        self.alpha, self.window = alpha, window

    def per_token_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The context ids x_s (B, T, S) at every t, and which of them count as candidates (B, T, S)."""
        B, T = inputs.shape
        return inputs[:, None, :].expand(B, T, T), candidate_positions(inputs, targets, self.window)

    def token_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, context: torch.Tensor, counted: torch.Tensor
    ) -> TokenLoss:
        """Logits (r, V), context ids (r, S), counted (r, S) -> ℓ_t + α·Σ_s counted·−log(1 − p(x_s))."""
        logp = logits.log_softmax(-1)
        nll = -at_targets(logp, targets)
        unlikelihood = -((1.0 - logp.exp().gather(-1, context)).clamp_min(ONE_MINUS_P_FLOOR).log() * counted).sum(-1)
        stats = {"nll": nll, "ul": unlikelihood, "candidates": counted.sum(-1).float()}
        return TokenLoss(nll + self.alpha * unlikelihood, stats)

    def token_loss_and_grad(
        self, logits: torch.Tensor, targets: torch.Tensor, context: torch.Tensor, counted: torch.Tensor
    ) -> TokenLoss:
        """With a_s = counted·p(x_s)/(1 − p(x_s)) (0 where 1 − p is clamped):
        ∂/∂z = p − onehot(y) + α·(Σ_s a_s·onehot(x_s) − (Σ_s a_s)·p)."""
        p, nll = softmax_nll_(logits, targets)
        p_context = p.gather(-1, context)  # (r, S): p_t(x_s)
        one_minus_p = (1.0 - p_context).clamp_min(ONE_MINUS_P_FLOOR)
        unlikelihood = -(one_minus_p.log() * counted).sum(-1)
        a = p_context / one_minus_p * (counted & (1.0 - p_context >= ONE_MINUS_P_FLOOR))
        grad = p.mul_(1.0 - self.alpha * a.sum(-1, keepdim=True))  # p's own memory: no new (r, V) buffer
        grad = minus_onehot_(grad.scatter_add_(-1, context, self.alpha * a), targets)
        stats = {"nll": nll, "ul": unlikelihood, "candidates": counted.sum(-1).float()}
        return TokenLoss(nll + self.alpha * unlikelihood, stats, grad)
