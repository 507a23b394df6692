"""SimCTG (Su et al. 2022): NLL + mean over pairs i≠j of max(0, ρ − s(h_i, h_i) + s(h_i, h_j)).

s is the cosine similarity of final-layer hidden states within one sequence (s(h_i, h_i) = 1),
so the term pushes different positions' representations apart by margin ρ; ρ = 0 is MLE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch


class SimCTG(Objective):
    name = "simctg"
    papers_regimes = ("fine-tuning",)  # GPT-2 fine-tuned on WikiText-103

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        check_knob("margin", margin, 0 <= margin <= 2, "use 0 <= margin <= 2 (cosine similarities lie in [-1, 1])")
        self.margin = margin

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        h = model.hidden(inputs)  # (B, T, D)
        nll = model.nll(h, targets).mean()
        unit = F.normalize(h.float(), dim=-1)
        cosine = unit @ unit.transpose(1, 2)  # (B, T, T)
        self_sim = cosine.diagonal(dim1=1, dim2=2)[..., None]  # (B, T, 1), 1 up to rounding
        B, T = h.shape[:2]
        off_diagonal = 1.0 - torch.eye(T, device=h.device)  # a product, not boolean indexing: no (B, T²) copy
        hinge = (self.margin - self_sim + cosine).clamp_min(0) * off_diagonal
        contrastive = hinge.sum() / (B * T * (T - 1))
        return LossOutput(nll + contrastive, {"nll": nll.detach(), "contrastive": contrastive.detach()})
