"""GEM (Li et al., ICLR 2025, "Preserving Diversity in Supervised Fine-tuning of Large Language Models"; released
code xzy-bit/DiversityOfLLM, ``SFTTrainer.gem_loss``): ℓ_t = Σ_v c_v·(log p_v − log p_y) = Σ_v c_v·(z_v − z_y),
c = q ⊙ w detached, q = softmax(z/β), w_v = 1 (h linear) or σ(0.01·(z_v − z_y)) (h logsigmoid, the released default).

Entropic distribution matching: the data's token is pulled up against tokens drawn from the model's own tempered
distribution q rather than against all of them, which keeps the model's entropy (the paper's diversity). Its
gradient is c − (Σ_v c_v)·onehot(y); with β = 1 and the linear h it is p − onehot(y), MLE's (the loss there is
NLL − H(p)). A fine-tuning loss in its paper (supervised fine-tuning of a pretrained model): MLE until
``start_step``.
"""

from __future__ import annotations

import torch

from lit_modules.core.head import TokenLoss, at_targets, log_softmax_nll_, minus_onehot_
from objectives.base import FineTuning, TokenObjective, check_knob

H_FUNCTIONS = ("linear", "logsigmoid")
LOGSIGMOID_SLOPE = 0.01  # the released code's weights σ(0.01·(z_v − z_y)) for h = logsigmoid


class GEM(FineTuning, TokenObjective):
    name = "gem"
    full_work_knobs = {"start_step": 0}

    def __init__(self, beta: float = 0.7, h: str = "logsigmoid", start_step: int = 200) -> None:
        super().__init__()
        check_knob("beta", beta, beta > 0, "use beta > 0 (1 with h=linear is MLE's gradient)")
        check_knob("h", h, h in H_FUNCTIONS, f"choose one of {', '.join(H_FUNCTIONS)}")
        self.init_fine_tuning(start_step)
        self.beta, self.h = beta, h

    def matching_weights(self, z: torch.Tensor, z_gold: torch.Tensor) -> torch.Tensor:
        """c = softmax(z/β) ⊙ w (r, V) of logits z (r, V) (no gradient)."""
        tempered = z / self.beta if self.beta != 1 else z.clone()
        c = torch.ops.aten._softmax.out(tempered, -1, False, out=tempered)  # in its own memory, as log_softmax_nll_
        if self.h == "logsigmoid":
            c.mul_(torch.sub(z, z_gold[:, None]).mul_(LOGSIGMOID_SLOPE).sigmoid_())
        return c

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        logp = logits.log_softmax(-1)
        with torch.no_grad():
            c = self.matching_weights(logits.detach(), at_targets(logits.detach(), targets))
        logp_gold = at_targets(logp, targets)
        loss = (c * logp).sum(-1) - c.sum(-1) * logp_gold
        return TokenLoss(loss, {"nll": -logp_gold})

    def token_loss_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
        """∂ℓ/∂z = c − (Σ_v c_v)·onehot(y); ℓ = Σ_v c_v·z_v − (Σ_v c_v)·z_y (log Z cancels: no log-softmax). The
        NLL, logged only, only on the steps whose logs are read (``logs_wanted``): its log-softmax in the logits'
        memory is a third of this closed form's time on a CPU. On the other steps Σ_v c_v·z_v is summed from products
        written over the logits (``torch.linalg.vecdot`` writes them to a buffer of its own; the same bits)."""
        z_gold = at_targets(logits, targets)
        c = self.matching_weights(logits, z_gold)
        mass = c.sum(-1)
        if self.logs_wanted:
            loss = torch.linalg.vecdot(c, logits) - mass * z_gold
            stats = {"nll": log_softmax_nll_(logits, targets)[1]}
        else:
            loss, stats = logits.mul_(c).sum(-1) - mass * z_gold, {}
        return TokenLoss(loss, stats, minus_onehot_(c, targets, mass))
