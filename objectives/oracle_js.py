"""Oracle Jensen-Shannon divergence on the synthetic source (as MixCE's released ``synthetic.py``, ``js``): mean_t
½·KL(P_t‖M_t) + ½·KL(p_t‖M_t), M_t = (P_t + p_t)/2, P_t the source's exact conditional.

Symmetric and bounded by log 2: between the oracle KL's mass-covering and mode-seeking ends. Not deployable (no
real corpus has P). Gradient in closed form: p ⊙ (g − Σ_v p_v g_v), g = ½·log(p/M). Refused on data without a
known source.
"""

from __future__ import annotations

import math

import torch

from lit_modules.core.head import TokenLoss
from objectives.oracle_kl import OracleDivergence


class OracleJS(OracleDivergence):
    name = "oracle_js"

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor, true_logp: torch.Tensor) -> TokenLoss:
        logp, true_logp = logits.log_softmax(-1), true_logp.to(logits.dtype)
        p, true_p = logp.exp(), true_logp.exp()
        log_m = torch.logaddexp(logp, true_logp) - math.log(2)
        js = 0.5 * torch.linalg.vecdot(true_p, true_logp - log_m) + 0.5 * torch.linalg.vecdot(p, logp - log_m)
        nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
        return TokenLoss(js, {"nll": nll, "js": js})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor, true_logp: torch.Tensor) -> TokenLoss:
        """∂/∂z = p ⊙ (g − Σ_v p_v g_v), g = ½·(log p − log M)."""
        logp, true_logp = logits.log_softmax(-1), true_logp.to(logits.dtype)
        nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
        p, true_p = logp.exp(), true_logp.exp()
        log_m = torch.logaddexp(logp, true_logp).sub_(math.log(2))
        js = 0.5 * torch.linalg.vecdot(true_p, true_logp - log_m) + 0.5 * torch.linalg.vecdot(p, logp - log_m)
        g = logp.sub_(log_m).mul_(0.5)  # in log p's memory
        grad = g.sub_(torch.linalg.vecdot(p, g)[:, None]).mul_(p)
        return TokenLoss(js, {"nll": nll, "js": js}, grad)
