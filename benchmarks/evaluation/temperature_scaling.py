"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the one temperature of a run
that minimises its validation NLL, fitted here and applied to the test split (``ts/<metric>``)."""

from __future__ import annotations

from functools import partial

import torch

from benchmarks.evaluation.teacher_forced import autocast_context, batches
from lit_modules.core.head import log_softmax_nll_
from lit_modules.core.model import GPT


def _inverse_temperature_terms(z: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """Per token, of NLL(β) = log Σ exp(β d) − β d_y at inverse temperature β, from logits z (r, V) (overwritten)
    -> (r, 3): NLL(β), its derivative E_β[d] − d_y and its second derivative Var_β(d) (≥ 0: NLL is convex in β)."""
    logp, nll = log_softmax_nll_(z, targets)
    top = logp.max(-1).values
    d = logp.sub_(top[:, None])
    d_y = -nll - top
    e = torch.mul(d, beta).exp_()
    total = e.sum(-1)
    mean = torch.linalg.vecdot(e, d) / total
    second = torch.linalg.vecdot(e, d.square_()) / total
    return torch.stack([total.log() - beta * d_y, mean - d_y, second - mean.square()], dim=-1)


TOLERANCE = 1e-4  # relative: Newton stops once its step would move β (and T) by less than this
MAX_STEPS, MAX_HALVINGS = 20, 8


@torch.no_grad()
def fit_temperature(
    model: GPT, blocks: torch.Tensor, batch_size: int, bf16: bool, max_batches: int | None = None, rows: int = 256
) -> float:
    """The temperature T = 1/β that minimises the mean NLL of the blocks (N, T+1) (Guo et al. 2017 fit it with
    L-BFGS; NLL is convex in β, so Newton's method on β, with a step halved whenever it would not lower the NLL,
    finds the same minimum in a few passes). The final hidden states are computed once; each step is one pass of
    the head over them."""
    model.eval()
    device = next(model.parameters()).device
    states, targets = [], []
    for batch in batches(blocks, batch_size, max_batches):
        batch = batch.to(device)
        with autocast_context(model, bf16):
            states.append(model.hidden(batch[:, :-1]))
        targets.append(batch[:, 1:])
    h, y = torch.cat(states), torch.cat(targets)
    count = y.numel()

    def terms(beta: float) -> tuple[float, float, float]:
        sums = model.map_logits(h, partial(_inverse_temperature_terms, beta=beta), y, rows=rows)
        nll, grad, curvature = sums.double().reshape(-1, 3).sum(0).div(count).tolist()
        return nll, grad, curvature

    beta, (nll, grad, curvature) = 1.0, terms(1.0)
    for _ in range(MAX_STEPS):
        step = grad / max(curvature, 1e-12)
        if abs(step) < TOLERANCE * beta:  # the per-token terms are fp32: finer steps only chase rounding
            break
        for _ in range(MAX_HALVINGS):
            proposal = beta - step
            if proposal > 0:
                new = terms(proposal)
                if new[0] <= nll:
                    beta, (nll, grad, curvature) = proposal, new
                    break
            step /= 2
        else:
            break
    return 1.0 / beta
