"""DITTO (Xu et al. 2022, "Learning to break the loop"): on pseudo-repetitive data, keep a token's probability
from growing with each repetition: ℓ_t = −log(1 − |p_θ(y_t) − λ·sg p_θ(y_{t−L})|) for every token of the 2nd,
3rd, ... copy of a span of L tokens, y_{t−L} the same token one copy earlier.

A DITTO step (probability ``rate``, from ``start_step`` on; MLE otherwise) rebuilds each row of the batch as a
prefix (the L tokens before a random span of the row) followed by the span, repeated to the row's length, and
takes the mean of ℓ over the penalised tokens. The released code (Jxu-Thu/DITTO: λ = 0.5, rate 0.5, fine-tuning
an MLE model) repeats a sentence between two full stops; the synthetic source has no sentences, so a span of
``min_len``..``max_len`` tokens stands for one. rate = 0 is MLE.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import FineTuning, KnobError, LossOutput, check_knob, mle_step, split_batch

ONE_MINUS_FLOOR = 1e-20  # the released code's clamp of 1 − |p − λ·p_prev| before the log


def repeat_spans(batch: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """batch (B, N) -> rows (B, N): the L_b tokens before span b, then span b = batch[b, s_b : s_b + L_b]
    repeated to N tokens. ``starts`` s_b ≥ L_b."""
    B, N = batch.shape
    pos = torch.arange(N, device=batch.device)[None, :]
    L, s = lengths[:, None], starts[:, None]
    source = torch.where(pos < L, s - L + pos, s + (pos - L) % L)  # prefix, then the span cyclically
    return batch.gather(1, source)


class DITTO(FineTuning):
    name = "ditto"
    full_work_knobs = {"rate": 1.0, "start_step": 0}

    def __init__(
        self,
        lam: float = 0.5,
        rate: float = 0.5,
        min_len: int = 4,
        max_len: int = 32,
        min_copies: int = 2,
        start_step: int = 200,
    ) -> None:
        super().__init__()
        check_knob("lam", lam, 0 <= lam <= 1, "use a repetition discount in [0, 1]")
        check_knob("rate", rate, 0 <= rate <= 1, "use a probability in [0, 1]")
        check_knob("min_len", min_len, isinstance(min_len, int) and min_len >= 1, "use an integer >= 1")
        check_knob("max_len", max_len, isinstance(max_len, int) and max_len >= min_len, "use an integer >= min_len")
        check_knob("min_copies", min_copies, isinstance(min_copies, int) and min_copies >= 2, "use an integer >= 2")
        self.init_fine_tuning(start_step)
        self.lam, self.rate, self.min_len, self.max_len, self.min_copies = lam, rate, min_len, max_len, min_copies

    def check_fits(self, length: int) -> None:
        need = (1 + self.min_copies) * self.max_len  # a prefix and min_copies copies of the longest span
        if need > length:
            raise KnobError(
                f"objective.max_len={self.max_len} is not allowed; a prefix and objective.min_copies="
                f"{self.min_copies} copies need (1 + min_copies) * max_len = {need} tokens, the rows have {length}"
            )

    def pseudo_repetitive(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch (B, N) -> rows (B, N) and span lengths (B,), spans drawn from the torch generator."""
        B, N = batch.shape
        max_len = min(self.max_len, N // (1 + self.min_copies))
        lengths = torch.randint(min(self.min_len, max_len), max_len + 1, (B,), device=batch.device)
        # the span starts after its prefix and leaves room for nothing else: s in [L, N − L]
        starts = lengths + (torch.rand(B, device=batch.device) * (N - 2 * lengths + 1)).long()
        return repeat_spans(batch, lengths, starts), lengths

    def fine_tune(self, model: nn.Module, batch: torch.Tensor, step: int, terms: tuple = ()) -> LossOutput:
        """A DITTO step with probability ``rate``, else MLE."""
        if torch.rand(()).item() >= self.rate:
            return mle_step(model, batch)
        rows, lengths = self.pseudo_repetitive(batch)
        inputs, targets = split_batch(rows)
        p = torch.exp(-model.nll(model.hidden(inputs), targets))  # (B, T) p_θ(y_t)
        T = targets.shape[1]
        t = torch.arange(T, device=rows.device)[None, :]
        L = lengths[:, None]
        # target t is token t+1 of the row: the 2nd copy starts at row position 2L, target 2L − 1; the
        # released code penalises from target 2L on (the first token of the 2nd copy is not penalised)
        penalised = t >= 2 * L
        previous = p.detach().gather(1, (t - L).clamp_min(0))  # p of the same token one copy earlier
        one_minus = (1.0 - (p - self.lam * previous).abs()).clamp_min(ONE_MINUS_FLOOR)
        loss = -(one_minus.log() * penalised).sum() / penalised.sum().clamp_min(1)
        logs = {"ditto": loss.detach(), "repeat_p": (p.detach() * penalised).sum() / penalised.sum().clamp_min(1)}
        return LossOutput(loss, logs)
