"""EMO (Ren et al. 2024): MLE combined with DEMD_t = Σ_v q_t(v)·(1 − cos(e_v, e_y_t)), the expected transport
cost from the model's distribution q_t to the gold token in the output-embedding space.

ℓ_t = (NLL_t + λ·sg(NLL_t / DEMD_t)·DEMD_t) / (1 + λ): the DEMD gradient rescaled to the NLL's size, as in the
released code (DRSY/EMO, ``emo1_adaptive``: λ = 1, the cost embedding the model's own output embedding,
detached). There DEMD's value leaves the gold token's own term out (1 − Σ_{v≠y} q_v·cos, its gradient keeps
it); so here. λ = 0 is MLE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_modules.core.head import TokenLoss, at_targets, minus_onehot_, softmax_nll_
from objectives.base import TokenObjective, check_knob

WEIGHT_DENOMINATOR_FLOOR = 1e-10  # the released code's guard of sg(NLL / DEMD')'s denominator


class EMO(TokenObjective):
    name = "emo"
    papers_regimes = ("fine-tuning",)  # GPT-2, OPT and LLaMA fine-tuned

    def __init__(self, lam: float = 1.0) -> None:
        super().__init__()
        check_knob("lam", lam, lam >= 0, "use lam >= 0")
        self.lam = lam
        self.cost_embedding: torch.Tensor | None = None  # (V, D) unit rows, set at every step

    def prepare_step(self, model: nn.Module, step: int) -> None:
        """The step's cost embedding: the output embedding's rows as unit vectors, detached."""
        cost = F.normalize(model.output_embedding.detach().float(), dim=-1)
        device = cost.device.type
        if torch.is_autocast_enabled(device):  # the LM head's matmul dtype (bf16 on AMX CPUs), cast once a step
            cost = cost.to(torch.get_autocast_dtype(device))
        self.cost_embedding = cost

    def cosines(self, targets: torch.Tensor) -> torch.Tensor:
        """cos(e_v, e_y_t) for every v: (r, V), one (r, D)·(D, V) product in the cost embedding's dtype."""
        return self.cost_embedding[targets] @ self.cost_embedding.T

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        logp = logits.log_softmax(-1)
        nll = -at_targets(logp, targets)
        q = logp.exp()
        demd = 1.0 - (q * self.cosines(targets).to(q.dtype)).sum(-1)
        released = demd + at_targets(q, targets).detach()  # value without the gold term
        loss = (nll + self.lam * (nll / (released + WEIGHT_DENOMINATOR_FLOOR)).detach() * released) / (1.0 + self.lam)
        return TokenLoss(loss, {"nll": nll, "demd": demd})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """With c_v = cos(e_v, e_y), s = Σ q_v·c_v: ∂DEMD/∂z = −q·(c − s), so
        ∂/∂z = (q − onehot(y) − λ·w·q·(c − s)) / (1 + λ), w = sg(NLL / DEMD')."""
        c = self.cosines(targets)  # (r, V) in the matmul dtype
        q, nll = softmax_nll_(logits, targets)
        s = torch.linalg.vecdot(q, c.to(q.dtype))  # Σ_v q_v·c_v
        demd = 1.0 - s
        released = demd + at_targets(q, targets)
        w = nll / (released + WEIGHT_DENOMINATOR_FLOOR)
        scale = -self.lam * w / (1.0 + self.lam)
        # (q − λw·q·(c − s)) / (1 + λ) = q·((1 + λw·s)/(1 + λ) − λw/(1 + λ)·c): two passes over (r, V)
        factor = torch.addcmul(((1.0 + self.lam * w * s) / (1.0 + self.lam))[:, None], c, scale[:, None])
        grad = minus_onehot_(q.mul_(factor), targets, 1.0 / (1.0 + self.lam))
        loss = (nll + self.lam * w * released) / (1.0 + self.lam)
        return TokenLoss(loss, {"nll": nll, "demd": demd}, grad)
