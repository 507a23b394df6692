"""Label smoothing (Szegedy et al. 2016; Müller et al. 2019): (1−ε)·NLL + ε·mean_v(−log p_t(v)).

Convention: the ε mass is spread uniformly over all V tokens, the gold one included (ε/V each,
so the gold target gets 1−ε+ε/V), as in torch's ``cross_entropy(label_smoothing=ε)``, which
computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch


class LabelSmoothing(Objective):
    name = "label_smoothing"

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        check_knob("eps", eps, 0 <= eps < 1, "use 0 <= eps < 1")
        self.eps = eps

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        logits = model(inputs).float().flatten(0, 1)
        loss = F.cross_entropy(logits, targets.flatten(), label_smoothing=self.eps)
        with torch.no_grad():
            nll = F.cross_entropy(logits, targets.flatten())
        return LossOutput(loss, {"nll": nll})
