"""GOLD (Pang & He 2021): off-policy learning from the data, ℓ_t = −max(u, sg π_θ(y_t))·Q_t·log π_θ(y_t).

The importance weight is the model's own detached probability of the gold token, clipped below at u; the
return Q_t = Σ_{k=0}^{K} γ^k·R_{t+k} sums rewards of the next K gold tokens (positions past the sequence get
a probability of 1), each R from a frozen MLE model: GOLD-s ``sump``: R = max(c, p_MLE), GOLD-p ``logp``:
R = max(c, log p_MLE − b); ``delta``: R = 1 (GOLD-δ). As in the released code (yzpang/gold-off-policy-text-gen-
iclr21: K = 5, γ = 1, b = −10, GOLD-s with u = 0.2, c = 0.1 on IWSLT14) it fine-tunes an MLE model: MLE until
``start_step``, where p_MLE is snapshotted. π̃ of the paper (a periodically synced copy) is π_θ itself here.
u = 1 with ``delta`` rewards and K = 0 is MLE.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, minus_onehot_, nll_loss, softmax_nll_
from objectives.base import FineTuning, TokenObjective, check_knob

REWARDS = ("sump", "logp", "delta")
LOG_FLOOR = 1e-10  # the released code's guard of log p_MLE (GOLD-p)


def returns(p_mle: torch.Tensor, reward: str, suffix: int, gamma: float, trunc_min: float, baseline: float):
    """Per-token p_MLE(y_t) (B, T) -> Q_t (B, T): Σ_k γ^k·R(p at t+k), p = 1 past the end."""
    B, T = p_mle.shape
    padded = torch.cat([p_mle, p_mle.new_ones(B, suffix)], dim=1)
    if reward == "sump":
        r = padded.clamp_min(trunc_min)
    elif reward == "logp":
        r = (torch.log(padded + LOG_FLOOR) - baseline).clamp_min(trunc_min)
    else:
        r = torch.ones_like(padded)
    return sum(gamma**k * r[:, k : k + T] for k in range(suffix + 1))


class GOLD(FineTuning, TokenObjective):
    name = "gold"
    full_work_knobs = {"start_step": 0}

    def __init__(
        self,
        reward: str = "sump",
        iw_min: float = 0.2,
        trunc_min: float = 0.1,
        baseline: float = -10.0,
        suffix: int = 5,
        gamma: float = 1.0,
        start_step: int = 200,
    ) -> None:
        super().__init__()
        check_knob("reward", reward, reward in REWARDS, f"choose one of {', '.join(REWARDS)}")
        check_knob("iw_min", iw_min, 0 < iw_min <= 1, "use a clipping bound u in (0, 1]")
        check_knob("trunc_min", trunc_min, trunc_min >= 0, "use trunc_min >= 0")
        check_knob("suffix", suffix, isinstance(suffix, int) and suffix >= 0, "use an integer >= 0")
        check_knob("gamma", gamma, 0 <= gamma <= 1, "use a discount in [0, 1]")
        self.init_fine_tuning(start_step)  # the reference is p_MLE, the model at start_step
        self.reward, self.iw_min, self.trunc_min, self.baseline = reward, iw_min, trunc_min, baseline
        self.suffix, self.gamma = suffix, gamma

    @property
    def uses_reference(self) -> bool:
        return self.reward != "delta"

    def per_token_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The return Q_t (B, T) of every gold token, from the frozen MLE model, and the weight's clip u (B, T)."""
        if self.reward == "delta":
            p_mle = torch.ones(targets.shape, device=targets.device)
        else:
            with torch.no_grad():
                p_mle = torch.exp(-self.reference.nll(self.reference.hidden(inputs), targets).float())
        q = returns(p_mle, self.reward, self.suffix, self.gamma, self.trunc_min, self.baseline)
        return q, torch.full_like(q, self.iw_min)

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor, q: torch.Tensor, u: torch.Tensor) -> TokenLoss:
        nll = nll_loss(logits, targets).loss
        weight = torch.maximum(torch.exp(-nll).detach(), u) * q
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight})

    def token_loss_and_grad(
        self, logits: torch.Tensor, targets: torch.Tensor, q: torch.Tensor, u: torch.Tensor
    ) -> TokenLoss:
        """∂/∂z = w·(p − onehot(y)), w = max(u, p(y))·Q the detached weight."""
        p, nll = softmax_nll_(logits, targets)
        weight = torch.maximum(torch.exp(-nll), u) * q
        grad = minus_onehot_(p.mul_(weight[:, None]), targets, weight)
        return TokenLoss(weight * nll, {"nll": nll, "weight": weight}, grad)
