"""Token-level unlikelihood (Welleck et al. 2019): NLL + α·mean_t Σ_{c∈C_t} −log(1 − p_t(c)).

C_t = the distinct tokens of the same sequence seen so far (x_0..x_t, or the last ``window``
of them), minus the gold y_t. Candidates never cross sequences (the reference implementation
flattens the batch and so leaks them across sequences).
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import LossOutput, Objective, check_knob, split_batch


def candidate_mask(inputs: torch.Tensor, targets: torch.Tensor, vocab_size: int, window: int | None) -> torch.Tensor:
    """(B, T, V) bool: v is a candidate at t iff v occurs in inputs[b, max(0, t-window+1) .. t] and v ≠ y_t."""
    B, T = inputs.shape
    positions = torch.arange(T, device=inputs.device).expand(B, T)
    # last_seen[b, t, v] = last position s <= t with inputs[b, s] = v, or -1
    stamp = torch.full((B, T, vocab_size), -1, dtype=torch.int32, device=inputs.device)
    stamp.scatter_(2, inputs[..., None], positions[..., None].to(torch.int32))
    last_seen = stamp.cummax(dim=1).values
    mask = last_seen >= 0
    if window is not None:
        mask &= last_seen >= positions[..., None] - window + 1
    return mask.scatter(2, targets[..., None], False)


class UnlikelihoodToken(Objective):
    name = "unlikelihood_token"

    def __init__(self, alpha: float = 1.0, window: int | None = None) -> None:
        super().__init__()
        check_knob("alpha", alpha, alpha >= 0, "use alpha >= 0")
        check_knob("window", window, window is None or window >= 1, "use null (whole context) or an integer >= 1")
        self.alpha, self.window = alpha, window

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        logp = model(inputs).float().log_softmax(-1)  # (B, T, V)
        nll = -logp.gather(-1, targets[..., None]).mean()
        mask = candidate_mask(inputs, targets, logp.shape[-1], self.window)
        one_minus_p = (1.0 - logp.exp()).clamp_min(1e-5)
        unlikelihood = -(one_minus_p.log() * mask).sum(-1).mean()
        loss = nll + self.alpha * unlikelihood
        logs = {"nll": nll.detach(), "ul": unlikelihood.detach(), "candidates": mask.sum(-1).float().mean()}
        return LossOutput(loss, logs)
