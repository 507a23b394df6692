"""Preference losses on (prefix, chosen, rejected) pairs built from the training text.

chosen = the real continuation of a prefix; rejected = the model's own continuation (greedy or
sampled, KV-cache decoding) or a repetition-corrupted copy of the real one (its first
``repeat_span`` tokens looped). Loss = NLL on the real text + λ·pairwise, the pairwise term from
``start_step`` on (MLE before). With log π(y) summed over continuation tokens:
- dpo  (Rafailov et al. 2023): −log σ(β[(log π(y_w) − log π(y_l)) − (log π_ref(y_w) − log π_ref(y_l))])
- ipo  (Azar et al. 2023): (h − 1/(2β))², h the same reference-corrected log-ratio difference
- simpo (Meng et al. 2024): −log σ(β·(mean log π(y_w) − mean log π(y_l)) − γ), no reference
- orpo (Hong et al. 2024): −log σ(log odds(y_w) − log odds(y_l)), odds = P/(1−P), P = exp(mean log π)
π_ref is a frozen snapshot of the backbone taken when the pairwise term starts.

``divergence`` generalises the reverse KL that DPO (and IPO) regularise with to an f-divergence (Wang et al.,
ICLR 2024, "Beyond Reverse KL"), with u = π/π_ref of the chosen (w) and the rejected (l) continuation, as TRL's
``DPOTrainer.dpo_loss`` computes the logit h that the loss reads: ``reverse_kl`` h = log u_w − log u_l (DPO);
``js_divergence`` h − (softplus(log u_w) − softplus(log u_l)); ``alpha_divergence``
h = (u_l^−α − u_w^−α)/α, the exponents capped below float32's overflow as TRL caps them; ``forward_kl`` the
α-divergence at α = 1 (f(u) = −log u: f'(u) = −1/u).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_modules.core.decoding import DecodingConfig, generate
from objectives.base import (
    FineTuning,
    LossOutput,
    ObjectiveContext,
    check_batch_room,
    check_knob,
    check_prefix_fits,
    mle_step,
    split_batch,
)

LOSSES = ("dpo", "ipo", "simpo", "orpo")
DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
EXP_CAP = 88.7228  # TRL's cap_exp for float32: ⌊log(float32 max)⌋ to 4 decimals
REJECTED = ("greedy", "sample", "repeat")
PROBABILITY_CEILING = 1 - 1e-6  # ORPO: P = exp(mean log π) is kept below 1, so that log(1 − P) is finite


class Preference(FineTuning):
    name = "preference"
    full_work_knobs = {"start_step": 0}

    def __init__(
        self,
        loss: str = "dpo",
        beta: float = 0.1,
        lam: float = 1.0,
        rejected: str = "greedy",
        prefix_len: int = 32,
        cont_len: int = 32,
        start_step: int = 200,
        gamma: float = 0.5,
        repeat_span: int = 4,
        divergence: str = "reverse_kl",
        alpha: float = 0.5,
    ) -> None:
        super().__init__()
        check_knob("loss", loss, loss in LOSSES, f"choose one of {', '.join(LOSSES)}")
        check_knob("divergence", divergence, divergence in DIVERGENCES, f"choose one of {', '.join(DIVERGENCES)}")
        ok = divergence == "reverse_kl" or loss in ("dpo", "ipo")
        check_knob("divergence", divergence, ok, f"loss={loss} has no reference to diverge from; use dpo or ipo")
        check_knob("alpha", alpha, alpha > 0, "use alpha > 0 (the α-divergence is undefined at 0; 1 is forward KL)")
        check_knob("rejected", rejected, rejected in REJECTED, f"choose one of {', '.join(REJECTED)}")
        check_knob("beta", beta, beta > 0, "use beta > 0")
        check_knob("lam", lam, lam >= 0, "use lam >= 0")
        check_knob("gamma", gamma, gamma >= 0, "use gamma >= 0")
        for name, value in (("prefix_len", prefix_len), ("cont_len", cont_len), ("repeat_span", repeat_span)):
            check_knob(name, value, isinstance(value, int) and value >= 1, "use an integer >= 1")
        self.init_fine_tuning(start_step)  # π_ref is the model at start_step
        self.loss_name, self.beta, self.lam, self.rejected, self.gamma = loss, beta, lam, rejected, gamma
        self.prefix_len, self.cont_len, self.repeat_span = prefix_len, cont_len, repeat_span
        self.divergence, self.alpha = divergence, (1.0 if divergence == "forward_kl" else alpha)

    @property
    def uses_reference(self) -> bool:
        return self.loss_name in ("dpo", "ipo")

    def check_fits(self, length: int) -> None:
        check_prefix_fits(self.prefix_len, self.cont_len, length)

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        self.check_fits(context.context)
        super().setup(model, context)

    # ---- pairs ----
    def make_pairs(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """batch (B, T+1) -> prefix (B, P), chosen (B, C), rejected (B, C)."""
        check_batch_room(self.prefix_len, self.cont_len, batch)
        prefix = batch[:, : self.prefix_len]
        chosen = batch[:, self.prefix_len : self.prefix_len + self.cont_len]
        if self.rejected == "repeat":
            span = chosen[:, : self.repeat_span]
            rejected = span.repeat(1, -(-self.cont_len // self.repeat_span))[:, : self.cont_len]
        else:
            strategy = "greedy" if self.rejected == "greedy" else "sample"
            rejected = generate(model, prefix, self.cont_len, DecodingConfig(strategy=strategy))
        return prefix, chosen, rejected

    def continuation_logps(self, model: nn.Module, prefix: torch.Tensor, conts: torch.Tensor) -> torch.Tensor:
        """Per-token log π(cont_t | prefix, cont_<t): (B, C)."""
        seq = torch.cat([prefix, conts], dim=1)
        h = model.hidden(seq[:, :-1])[:, prefix.shape[1] - 1 :]  # states that predict the continuation
        return -model.nll(h, conts)

    def pairwise(
        self, policy_w: torch.Tensor, policy_l: torch.Tensor, ref_w: torch.Tensor | None, ref_l: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (B, C) of chosen / rejected -> (loss per pair (B,), margin (B,))."""
        if self.loss_name in ("dpo", "ipo"):
            margin = self.divergence_logit(policy_w.sum(-1) - ref_w.sum(-1), policy_l.sum(-1) - ref_l.sum(-1))
            if self.loss_name == "dpo":
                return -F.logsigmoid(self.beta * margin), margin
            return (margin - 1.0 / (2.0 * self.beta)) ** 2, margin
        mean_w, mean_l = policy_w.mean(-1), policy_l.mean(-1)
        if self.loss_name == "simpo":
            margin = self.beta * (mean_w - mean_l) - self.gamma
            return -F.logsigmoid(margin), margin
        # orpo: log odds = log P − log(1 − P) with P = exp(mean log-prob)
        log_odds_w = mean_w - torch.log1p(-mean_w.exp().clamp_max(PROBABILITY_CEILING))
        log_odds_l = mean_l - torch.log1p(-mean_l.exp().clamp_max(PROBABILITY_CEILING))
        margin = log_odds_w - log_odds_l
        return -F.logsigmoid(margin), margin

    def divergence_logit(self, log_ratio_w: torch.Tensor, log_ratio_l: torch.Tensor) -> torch.Tensor:
        """h of the pair from log u = log π − log π_ref of the chosen (w) and rejected (l) continuation (B,)."""
        if self.divergence in ("alpha_divergence", "forward_kl"):
            a = self.alpha
            return ((-a * log_ratio_l).clamp_max(EXP_CAP).exp() - (-a * log_ratio_w).clamp_max(EXP_CAP).exp()) / a
        margin = log_ratio_w - log_ratio_l
        if self.divergence == "js_divergence":
            margin = margin - (F.softplus(log_ratio_w) - F.softplus(log_ratio_l))
        return margin

    def fine_tune(self, model: nn.Module, batch: torch.Tensor, step: int, terms: tuple = ()) -> LossOutput:
        """NLL on the real text + λ·the pairwise loss of the batch's pairs."""
        if self.lam == 0:
            return mle_step(model, batch)
        inputs, targets = split_batch(batch)
        nll = model.nll(model.hidden(inputs), targets).mean()
        prefix, chosen, rejected = self.make_pairs(model, batch)
        B = prefix.shape[0]
        both = torch.cat([chosen, rejected])
        policy = self.continuation_logps(model, prefix.repeat(2, 1), both)
        ref_w = ref_l = None
        if self.uses_reference:
            with torch.no_grad():
                ref = self.continuation_logps(self.reference, prefix.repeat(2, 1), both)
            ref_w, ref_l = ref[:B], ref[B:]
        pair_loss, margin = self.pairwise(policy[:B], policy[B:], ref_w, ref_l)
        pair_loss = pair_loss.mean()
        logs = {
            "nll": nll.detach(),
            "pair_loss": pair_loss.detach(),
            "chosen_logp": policy[:B].sum(-1).mean().detach(),
            "rejected_logp": policy[B:].sum(-1).mean().detach(),
            "margin": margin.mean().detach(),
            "pair_accuracy": (margin > 0).float().mean().detach(),
        }
        return LossOutput(nll + self.lam * pair_loss, logs)
