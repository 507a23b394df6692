"""The focal loss and MiLe against the released formulas (suu990901/LLaMA-MiLe-Loss, ``FocalLoss`` and
``InfoEntropyLoss``, written out below on one device): the batch-normalised weights, their reduction to MLE at
γ = 0, the weights carrying no gradient, auxiliary terms left plain means."""

import pytest
import torch
import torch.nn.functional as F

from objectives.base import KnobError, ObjectiveContext
from objectives.focal import Focal
from objectives.mile import MiLe
from objectives.mle import MLE
from objectives.registry import auxiliary_term, build_objective


def released(logits: torch.Tensor, targets: torch.Tensor, kind: str, gamma: float) -> torch.Tensor:
    """α·w_t·CE_t averaged, α = 1 / mean_t w_t; focal w = (1 − p_y)^γ, MiLe w = (1 + H)^γ, H of clamped p."""
    z, y = logits.flatten(0, 1), targets.flatten()
    ce = F.cross_entropy(z, y, reduction="none")
    if kind == "focal":
        weight = (1 - torch.exp(-ce).detach()) ** gamma
    else:
        p = F.softmax(z.detach(), dim=-1).clamp(1e-8, 1.0)
        weight = (1 + (-(p * p.log())).sum(-1)) ** gamma
    alpha = 1.0 / weight.mean()
    return (alpha * weight * ce).mean()


@pytest.mark.parametrize("cls, kind", [(Focal, "focal"), (MiLe, "mile")])
@pytest.mark.parametrize("gamma", [1.0, 2.5])
def test_loss_and_gradient_are_the_released_formulas(model, batch, cls, kind, gamma, assert_same_gradients):
    loss = cls(gamma=gamma)(model, batch, 0).loss
    expected = released(model(batch[:, :-1]).float(), batch[:, 1:], kind, gamma)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert_same_gradients(model, loss, expected)


@pytest.mark.parametrize("cls", [Focal, MiLe])
def test_gamma_zero_is_mle(model, batch, cls, assert_same_gradients):
    out = cls(gamma=0.0)(model, batch, 0)
    mle = MLE()(model, batch, 0)
    assert out.loss.item() == pytest.approx(mle.loss.item(), rel=1e-6)
    assert_same_gradients(model, out.loss, mle.loss, rtol=1.3e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["focal", "mile"])
def test_an_auxiliary_term_stays_a_plain_mean(model, batch, name):
    """Only the objective's own loss is normalised by its weights: + λ·mean_t (log Z_t)² as for any objective."""
    config = {"_target_": f"objectives.{name}.{'Focal' if name == 'focal' else 'MiLe'}", "gamma": 1.5}
    term = auxiliary_term("z_loss", {"_target_": "objectives.z_loss.ZLoss"}, 0.3)
    with_term = build_objective(config, [term])
    with_term.setup(model, ObjectiveContext(vocab_size=23, context=32))
    alone = build_objective(config)(model, batch, 0).loss
    with torch.no_grad():
        log_z_squared = model(batch[:, :-1]).float().logsumexp(-1).square().mean()
    expected = alone.item() + 0.3 * log_z_squared.item()
    assert with_term(model, batch, 0).loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("cls", [Focal, MiLe])
def test_a_negative_gamma_is_refused(cls):
    with pytest.raises(KnobError, match="objective.gamma=-0.5"):
        cls(gamma=-0.5)
