"""Scheduled sampling (Bengio et al. 2015) in the two-pass form for transformers (Mihaylova & Martins 2019).

Pass 1 (no gradient) runs the model teacher-forced and predicts ŷ_t (argmax or a sample) for every
position. Each input x_t, t ≥ 1, is then replaced by the prediction made at t−1 (ŷ_{t−1}, the
model's guess of x_t) with probability 1 − g(step); x_0 stays gold. Pass 2 runs on the mixed
input and is trained with cross-entropy against the gold targets.
Gold probability g: linear max(min_gold, k − c·step), exponential max(min_gold, k^step),
inverse_sigmoid max(min_gold, k / (k + exp(step / k))).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lit_modules.core.decoding import draw
from objectives.base import LossOutput, Objective, check_knob, split_batch

SCHEDULES = ("linear", "exponential", "inverse_sigmoid")
MIXES = ("argmax", "sample")


class ScheduledSampling(Objective):
    name = "scheduled_sampling"

    def __init__(
        self,
        schedule: str = "inverse_sigmoid",
        k: float = 150.0,
        c: float = 1e-3,
        min_gold: float = 0.25,
        mix: str = "argmax",
    ) -> None:
        super().__init__()
        check_knob("schedule", schedule, schedule in SCHEDULES, f"choose one of {', '.join(SCHEDULES)}")
        check_knob("mix", mix, mix in MIXES, f"choose one of {', '.join(MIXES)}")
        check_knob("min_gold", min_gold, 0 <= min_gold <= 1, "use 0 <= min_gold <= 1")
        if schedule == "linear":
            check_knob("k", k, 0 <= k <= 1, "linear schedule: use 0 <= k <= 1 (the starting gold probability)")
            check_knob("c", c, c >= 0, "linear schedule: use c >= 0 (decay per step)")
        elif schedule == "exponential":
            check_knob("k", k, 0 < k <= 1, "exponential schedule: use 0 < k <= 1")
        else:
            check_knob("k", k, k >= 1, "inverse_sigmoid schedule: use k >= 1")
        self.schedule, self.k, self.c, self.min_gold, self.mix = schedule, k, c, min_gold, mix

    def gold_probability(self, step: int) -> float:
        if self.schedule == "linear":
            g = self.k - self.c * step
        elif self.schedule == "exponential":
            g = self.k**step
        else:
            g = self.k / (self.k + math.exp(min(step / self.k, 700.0)))
        return max(self.min_gold, min(1.0, g))

    @torch.no_grad()
    def mix_inputs(
        self, model: nn.Module, inputs: torch.Tensor, step: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pass 1: inputs (B, T) -> mixed inputs (B, T); position 0 always keeps the gold token."""
        h = model.hidden(inputs)  # (B, T, D): h[:, t] predicts x_{t+1}
        if self.mix == "argmax":
            predicted = model.map_logits(h, lambda z: z.argmax(-1))
        else:
            predicted = model.map_logits(h, lambda z: draw(z.softmax(-1), generator))
        use_model = torch.rand(inputs.shape, device=inputs.device, generator=generator) >= self.gold_probability(step)
        mixed = inputs.clone()
        mixed[:, 1:] = torch.where(use_model[:, 1:], predicted[:, :-1], inputs[:, 1:])
        return mixed

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        mixed = self.mix_inputs(model, inputs, step)
        nll = model.nll(model.hidden(mixed), targets).mean()
        replaced = (mixed != inputs).float().mean()
        return LossOutput(nll, {"gold_prob": self.gold_probability(step), "replaced": replaced})
