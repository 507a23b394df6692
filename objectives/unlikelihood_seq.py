"""Sequence-level unlikelihood (Welleck et al. 2019).

With probability ``rate`` per step (from ``start_step`` on): greedy-decode ``cont_len`` tokens from
``prefix_len``-token prefixes of the batch, mark every token inside an n-gram that already occurred
earlier in the continuation (the last n-gram included), and minimise
mean_t −log(1 − p_θ(ŷ_t | prefix, ŷ_<t))·mask_t. Other steps use the token-level loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_modules.core.decoding import DecodingConfig, generate
from lit_modules.core.head import TokenLoss, at_targets, softmax_nll_
from objectives.base import LossOutput, ObjectiveContext, check_knob, check_prefix_fits
from objectives.unlikelihood_token import ONE_MINUS_P_FLOOR, UnlikelihoodToken


def ngram_repeat_mask(seqs: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L) -> (B, L) bool: token t lies inside an n-gram that occurred before in the same row."""
    B, L = seqs.shape
    if n > L:
        return torch.zeros_like(seqs, dtype=torch.bool)
    grams = seqs.unfold(1, n, 1)  # (B, G, n)
    G = grams.shape[1]
    _, ids = torch.unique(grams.reshape(B * G, n), dim=0, return_inverse=True)
    ids = ids.view(B, G)
    same = ids[:, :, None] == ids[:, None, :]  # (B, G, G)
    earlier = torch.ones(G, G, dtype=torch.bool, device=seqs.device).tril(diagonal=-1)
    repeated = (same & earlier).any(-1)  # (B, G): gram g appeared at some g' < g
    # token t is covered by grams g with g <= t <= g + n - 1
    covered = F.conv1d(repeated.float()[:, None], torch.ones(1, 1, n, device=seqs.device), padding=n - 1)
    return covered[:, 0, :L] > 0


def repeat_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> TokenLoss:
    """Logits (r, V), decoded tokens ŷ (r,), mask (r,) -> mask_t·−log(1 − p(ŷ_t))."""
    p_token = at_targets(logits.softmax(-1), tokens)
    return TokenLoss(-(1.0 - p_token).clamp_min(ONE_MINUS_P_FLOOR).log() * mask)


def repeat_loss_and_grad(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> TokenLoss:
    """The same, and ∂/∂z = a_t·(onehot(ŷ) − p), a_t = mask_t·p/(1 − p) (0 where 1 − p is clamped)."""
    p, _ = softmax_nll_(logits, tokens)
    p_token = at_targets(p, tokens)
    one_minus_p = (1.0 - p_token).clamp_min(ONE_MINUS_P_FLOOR)
    a = p_token / one_minus_p * (mask & (1.0 - p_token >= ONE_MINUS_P_FLOOR))
    grad = (p * -a[:, None]).scatter_add_(-1, tokens[:, None], a[:, None])
    return TokenLoss(-one_minus_p.log() * mask, grad=grad)


class UnlikelihoodSeq(UnlikelihoodToken):
    name = "unlikelihood_seq"
    papers_regimes = ("fine-tuning",)  # sequence level fine-tunes a trained model for 1,500 updates
    full_work_knobs = {"rate": 1.0, "start_step": 0}

    def __init__(
        self,
        rate: float = 0.5,
        prefix_len: int = 32,
        cont_len: int = 64,
        ngram: int = 4,
        alpha: float = 1.0,
        window: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__(alpha=alpha, window=window)
        check_knob("rate", rate, 0 <= rate <= 1, "use 0 <= rate <= 1")
        check_knob("prefix_len", prefix_len, isinstance(prefix_len, int) and prefix_len >= 1, "use an integer >= 1")
        check_knob("ngram", ngram, isinstance(ngram, int) and ngram >= 1, "use an integer >= 1")
        check_knob(
            "cont_len", cont_len, isinstance(cont_len, int) and cont_len >= ngram, f"use an integer >= ngram ({ngram})"
        )
        check_knob("start_step", start_step, isinstance(start_step, int) and start_step >= 0, "use an integer >= 0")
        self.rate, self.prefix_len, self.cont_len, self.ngram = rate, prefix_len, cont_len, ngram
        self.start_step = start_step

    def check_fits(self, length: int) -> None:
        check_prefix_fits(self.prefix_len, self.cont_len, length)

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        self.check_fits(context.context)

    def sequence_loss(self, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        prefix = batch[:, : self.prefix_len]
        cont = generate(model, prefix, self.cont_len, DecodingConfig(strategy="greedy"))  # (B, cont_len)
        seq = torch.cat([prefix, cont], dim=1)
        h = model.hidden(seq[:, :-1])[:, self.prefix_len - 1 :]  # states that predict the continuation
        mask = ngram_repeat_mask(cont, self.ngram)
        loss = model.token_losses(h, repeat_loss, cont, mask, grad_fn=repeat_loss_and_grad)[0].mean()
        return loss, {"seq_ul": loss.detach(), "repeat_share": mask.float().mean()}

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        use_sequence = step >= self.start_step and torch.rand(()).item() < self.rate
        if use_sequence:
            if batch.shape[1] < self.prefix_len:
                raise ValueError(f"objective.prefix_len={self.prefix_len} is longer than the batch blocks")
            loss, logs = self.sequence_loss(model, batch)
            return LossOutput(loss, {**logs, "sequence_step": 1.0})
        out = super().forward(model, batch, step)
        out.logs["sequence_step"] = 0.0
        return out
