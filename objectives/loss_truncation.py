"""Loss truncation (Kang & Hashimoto 2020, "Improved Natural Language Generation via Loss Truncation"; released
code ddkang/loss_dropper, ``LossDropper``): mean over sequences of m_s·ℓ_s, ℓ_s a sequence's mean token NLL, m_s = 0
for the sequences whose loss is at or above the (1 − drop)-quantile of the last ``window`` sequence losses seen.

The quantile is taken again each time ``window`` more sequences have been seen, and nothing is dropped before
``hot_start`` sequences (the released ``min_count``): the model first learns by log loss, then stops fitting the
sequences it finds least likely, the ones a noisy corpus puts in (a distinguishability bound, the paper's argument).
The released defaults (10,000 sequences for both) are longer than the suite's 9,600 sequences; here ``window``
is 32 steps of sequences and ``hot_start`` the suite's warm-up, 100 steps. The ring of losses is part of the
checkpoint, so a resumed run drops what the uninterrupted one would have. drop → 0 is MLE.
"""

from __future__ import annotations

import torch

from objectives.base import LossOutput, Objective, check_knob, split_batch


class LossTruncation(Objective):
    name = "loss_truncation"

    def __init__(self, drop: float = 0.4, window: int = 1024, hot_start: int = 3200) -> None:
        super().__init__()
        check_knob("drop", drop, 0 < drop < 1, "use a fraction of sequences 0 < drop < 1")
        check_knob("window", window, isinstance(window, int) and window >= 1, "use an integer >= 1 (sequences)")
        check_knob("hot_start", hot_start, isinstance(hot_start, int) and hot_start >= 0, "use an integer >= 0")
        self.keep, self.window, self.hot_start = 1.0 - drop, window, hot_start
        self.register_buffer("losses", torch.zeros(window, dtype=torch.float32))  # the ring of sequence losses
        # seen, ring position, seen since the quantile was last taken, the quantile (inf: keep everything)
        self.register_buffer("counters", torch.zeros(3, dtype=torch.int64))
        self.register_buffer("cutoff", torch.tensor(float("inf"), dtype=torch.float64))

    def keep_mask(self, sequence_losses: torch.Tensor) -> torch.Tensor:
        """Record a batch's sequence losses (B,) and return 1 for the sequences to keep, 0 for those dropped."""
        values = sequence_losses.detach().float().cpu()
        n = values.numel()
        seen, position, since = (int(c) for c in self.counters)
        seen, since = seen + n, since + n
        slots = (position + torch.arange(n)) % self.window  # in order, wrapping around: the last ``window`` win
        self.losses[slots[-self.window :]] = values[-self.window :]
        position = (position + n) % self.window
        self.counters.copy_(torch.tensor([seen, position, since]))
        if seen < self.hot_start:
            return torch.ones_like(sequence_losses)
        if since > self.window:
            self.cutoff.fill_(torch.quantile(self.losses.double(), self.keep).item())
            self.counters[2] = 0
        return (sequence_losses < self.cutoff.to(sequence_losses)).to(sequence_losses.dtype)

    def forward(self, model, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        nll = model.nll(model.hidden(inputs), targets)  # (B, T)
        sequence_losses = nll.mean(1)
        keep = self.keep_mask(sequence_losses.detach())
        loss = (sequence_losses * keep).mean()
        return LossOutput(loss, {"nll": nll.detach().mean(), "kept": keep.mean(), "cutoff": self.cutoff.clone()})
