"""Error-norm truncation against the released threshold mode (tianjianl/error_norm_truncation: ``compute_el2n``,
then tokens above the threshold zeroed in the mean), MLE up to its start step and at threshold √2."""

import math

import pytest
import torch
import torch.nn.functional as F

from objectives.base import KnobError
from objectives.error_norm_truncation import ErrorNormTruncation
from objectives.mle import MLE


def released(logits: torch.Tensor, targets: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mean_t ℓ_t with ℓ_t zeroed where ‖softmax(z_t) − onehot(y_t)‖₂ > threshold (norm of the detached scores)."""
    z, y = logits.flatten(0, 1), targets.flatten()
    scores = F.log_softmax(z, dim=-1)
    el2n = torch.linalg.norm(scores.detach().exp() - F.one_hot(y, z.shape[-1]).float(), dim=-1)
    loss = F.nll_loss(scores, y, reduction="none").masked_fill(el2n > threshold, 0.0)
    return loss.mean(), (el2n <= threshold).float().mean()


def trained(model, batch, steps=40):
    """A model fitted to the batch with every third token replaced: on the batch itself, confidently right on
    most tokens and confidently wrong on the replaced ones."""
    corrupted = batch.clone()
    corrupted[:, ::3] = (batch[:, ::3] + 5) % 23
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        MLE()(model, corrupted, 0).loss.backward()
        opt.step()
    return model


def test_the_loss_and_its_gradient_are_the_released_threshold_modes(model, batch, assert_same_gradients):
    model = trained(model, batch)
    objective = ErrorNormTruncation(threshold=0.9, start_step=3)
    out = objective(model, batch, 4)
    expected, kept = released(model(batch[:, :-1]).float(), batch[:, 1:], 0.9)
    assert 0.0 < kept.item() < 1.0
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["kept"].item() == pytest.approx(kept.item())
    assert_same_gradients(model, out.loss, expected)


def test_mle_up_to_its_start_step_and_at_threshold_sqrt2(model, batch):
    model = trained(model, batch)
    mle = MLE()(model, batch, 0).loss.item()
    assert ErrorNormTruncation(threshold=0.5, start_step=3)(model, batch, 3).loss.item() == pytest.approx(mle, rel=1e-6)
    assert ErrorNormTruncation(threshold=0.5, start_step=3)(model, batch, 4).loss.item() < mle
    assert ErrorNormTruncation(threshold=math.sqrt(2), start_step=0)(model, batch, 5).loss.item() == pytest.approx(mle)


@pytest.mark.parametrize("knob, value", [("threshold", 0.0), ("threshold", -1.0), ("start_step", -2)])
def test_bad_knobs_are_refused(knob, value):
    with pytest.raises(KnobError, match=f"objective.{knob}="):
        ErrorNormTruncation(**{knob: value})
