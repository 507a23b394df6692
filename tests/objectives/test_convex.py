"""Convex learning against the released criterion (ictnlp/Convex-Learning, ``compute_convex_loss``, restated
below without padding, divided by the tokens as fairseq's sample size): value and gradient; MLE before its start."""

import pytest
import torch

from objectives.base import KnobError
from objectives.convex import Convex
from objectives.mle import MLE


def released(logits: torch.Tensor, targets: torch.Tensor, k: float, eps: float) -> torch.Tensor:
    """[(1−ε)·(−Σ_s T·P_s) + ε/V·(−Σ_s k·sg(P_s)·Σ_t Σ_v log p)] / (B·T), P_s = exp(k·mean_t log p(y_t))."""
    lprobs = logits.log_softmax(-1)
    B, T, V = lprobs.shape
    tgt_prob = torch.exp(lprobs.gather(-1, targets[..., None]).squeeze(-1).mean(-1) * k)
    convex_loss = -(tgt_prob * T).sum()
    smooth_loss = -(lprobs.sum(-1).sum(-1) * (k * tgt_prob.detach())).sum()
    return ((1 - eps) * convex_loss + eps / V * smooth_loss) / (B * T)


@pytest.mark.parametrize("k, eps", [(1.0, 0.1), (2.0, 0.0), (0.5, 0.3)])
def test_value_and_gradient_are_the_released_criterions(model, batch, k, eps, assert_same_gradients):
    out = Convex(order=k, eps=eps, start_step=0)(model, batch, 0)
    expected = released(model(batch[:, :-1]).float(), batch[:, 1:], k, eps)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert_same_gradients(model, out.loss, expected)


def test_mle_before_its_start_step_and_bad_knobs(model, batch):
    assert Convex(start_step=3)(model, batch, 2).loss.item() == pytest.approx(MLE()(model, batch, 2).loss.item())
    for knob, value in (("order", 0.0), ("eps", 1.0), ("eps", -0.1)):
        with pytest.raises(KnobError, match=f"objective.{knob}="):
            Convex(**{knob: value})
