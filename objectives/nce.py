"""Self-normalised noise-contrastive estimation (Gutmann & Hyvärinen 2010; Mnih & Teh 2012).

Score s(w) = h·e_w + b_w (the backbone's logit: tied output embedding, output bias b), and
Δ(w) = s(w) − log Z − log(k·q(w)) with q ∝ unigram^power of the train split. Per position:
loss = −log σ(Δ(y)) − Σ_{j=1..k} log σ(−Δ(w_j)), with k noise words w_j ~ q shared across the
batch. Only the k+1 scored rows of the output embedding are touched, so a step is cheaper than
the full softmax at large V. log Z is fixed (self-normalisation) or learned.

What makes it work at a small budget, as published practice does: the output bias starts at the log
unigram of the train split (the backbone's init for every objective; Labeau & Allauzen 2018 initialise
it from the noise distribution), so the untrained model is already normalised and words that are
rarely drawn as noise start with their small unigram mass instead of exp(0) each (without it the
full softmax put about half its mass on such words). And many noise words, shared by the whole batch
(Zoph et al. 2016), which keeps them cheap at a large vocabulary: k = 1024 by default (docs/objectives.md
has the measured effect of k).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from objectives.base import LossOutput, Objective, ObjectiveContext, check_knob, split_batch

NOISE_PROBABILITY_FLOOR = 1e-12  # log(k·q(w)) of a word never drawn as noise stays finite


class NCE(Objective):
    name = "nce"

    def __init__(
        self,
        k: int = 1024,
        noise_power: float = 0.75,
        log_z: float = 0.0,
        learn_log_z: bool = False,
        gap_positions: int = 64,
    ) -> None:
        super().__init__()
        check_knob("k", k, isinstance(k, int) and k >= 1, "use an integer k >= 1")
        check_knob("noise_power", noise_power, 0 <= noise_power <= 1, "use 0 <= noise_power <= 1")
        check_knob("log_z", log_z, math.isfinite(log_z), "use a finite number")
        self.k, self.noise_power, self.gap_positions = k, noise_power, gap_positions
        self.log_z = nn.Parameter(torch.tensor(float(log_z)), requires_grad=learn_log_z)
        self.register_buffer("noise_probs", torch.empty(0), persistent=True)

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        if context.unigram_counts is None:
            raise ValueError("nce needs the unigram counts of the train split")
        weights = context.unigram_counts.double().clamp_min(0) ** self.noise_power
        weights[context.unigram_counts <= 0] = 0.0  # unseen tokens are never noise
        self.noise_probs = (weights / weights.sum()).float().to(self.log_z.device)

    def sample_noise(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """k noise word ids (k,) drawn with replacement from q."""
        return torch.multinomial(self.noise_probs, self.k, replacement=True, generator=generator)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        if self.noise_probs.numel() == 0:
            raise RuntimeError("nce.setup() was not called: the noise distribution is unknown")
        inputs, targets = split_batch(batch)
        h = model.hidden(inputs).flatten(0, 1)  # (N, D)
        emb, bias = model.output_embedding, model.output_bias  # (V, D), (V,) or None
        y = targets.flatten()  # (N,)
        noise = self.sample_noise()  # (k,)
        log_kq = torch.log(self.k * self.noise_probs.clamp_min(NOISE_PROBABILITY_FLOOR))  # (V,)
        # F.embedding, not emb[y]: its backward sums repeated rows in a fixed order (deterministic)
        s_gold = (h * F.embedding(y, emb)).sum(-1).float()  # (N,)
        s_noise = (h @ F.embedding(noise, emb).T).float()  # (N, k)
        if bias is not None:
            s_gold = s_gold + F.embedding(y, bias[:, None]).squeeze(-1).float()
            s_noise = s_noise + F.embedding(noise, bias[:, None]).squeeze(-1).float()
        delta_gold = s_gold - self.log_z - log_kq[y]
        delta_noise = s_noise - self.log_z - log_kq[noise]
        loss = (-F.logsigmoid(delta_gold) - F.logsigmoid(-delta_noise).sum(-1)).mean()
        with torch.no_grad():  # self-normalisation gap E|log Σ_v exp(s_v − log Z)| on a few positions
            sample = h[:: max(1, h.shape[0] // self.gap_positions)]
            gap = (model.head(sample).float().logsumexp(-1) - self.log_z).abs().mean()
        return LossOutput(loss, {"log_z_gap": gap, "log_z": self.log_z.detach().clone()})
