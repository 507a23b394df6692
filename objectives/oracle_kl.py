"""Oracle KL on the synthetic source (as MixCE's released ``synthetic.py``, Zhang et al. 2023, ``two_kls``): mean_t
η·KL(P_t‖p_t) + (1−η)·KL(p_t‖P_t), P_t the source's exact conditional P(· | x_<t), p_t the model's.

Not a deployable objective (no real corpus has P) but the best a divergence can do: η = 1 is mass-covering (the
forward KL, MLE's expectation with the exact targets instead of one sample), η = 0 mode-seeking (the reverse KL);
every real objective's (forward KL, reverse KL) point can be placed between them. Gradient in closed form:
η·(p − P) + (1−η)·p ⊙ (s − Σ_v p_v s_v), s = log p − log P. Refused on data without a known source.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_modules.core.head import TokenLoss
from objectives.base import KnobError, ObjectiveContext, TokenObjective, check_knob


class OracleDivergence(TokenObjective):
    """A divergence from the true conditionals, given to the loss as a per-token input log P (B, T, V)."""

    def reads_true_source(self) -> bool:
        return True

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        super().setup(model, context)
        if context.source is None:
            raise KnobError(
                f"objective {self.name} needs the true source's conditionals (data=synthetic); on this data there "
                "is none: choose another objective"
            )
        self.source = context.source

    def per_token_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor]:
        tokens = torch.cat([inputs, targets[:, -1:]], dim=1).cpu()
        true_p = self.source.predictive(tokens)[:, 1:]  # (B, T, V): P(· | x_<=t), what position t predicts
        return (true_p.clamp_min_(1e-30).log_().to(inputs.device),)


class OracleKL(OracleDivergence):
    name = "oracle_kl"

    def __init__(self, eta: float = 0.5) -> None:
        super().__init__()
        check_knob("eta", eta, 0 <= eta <= 1, "use 0 <= eta <= 1 (1: forward KL(P‖p), 0: reverse KL(p‖P))")
        self.eta = eta

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor, true_logp: torch.Tensor) -> TokenLoss:
        logp, true_logp = logits.log_softmax(-1), true_logp.to(logits.dtype)
        true_p = true_logp.exp()
        forward = torch.linalg.vecdot(true_p, true_logp - logp)
        reverse = torch.linalg.vecdot(logp.exp(), logp - true_logp)
        nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
        loss = self.eta * forward + (1 - self.eta) * reverse
        return TokenLoss(loss, {"nll": nll, "forward_kl": forward, "reverse_kl": reverse})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor, true_logp: torch.Tensor) -> TokenLoss:
        """∂/∂z = η·(p − P) + (1−η)·p ⊙ (s − KL(p‖P)), s = log p − log P."""
        logp, true_logp = logits.log_softmax(-1), true_logp.to(logits.dtype)
        nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
        p, true_p = logp.exp(), true_logp.exp()
        s = logp.sub_(true_logp)  # log p − log P, in log p's memory
        reverse = torch.linalg.vecdot(p, s)
        forward = -torch.linalg.vecdot(true_p, s)
        grad = s.sub_(reverse[:, None]).mul_(p).mul_(1 - self.eta).add_(p.sub_(true_p).mul_(self.eta))
        loss = self.eta * forward + (1 - self.eta) * reverse
        return TokenLoss(loss, {"nll": nll, "forward_kl": forward, "reverse_kl": reverse}, grad)
