"""GEM against the released formula (xzy-bit/DiversityOfLLM, ``SFTTrainer.gem_loss``, written out below from the
paper's definition): loss and gradient on a model's logits; β = 1 with the linear h is MLE's gradient."""

import pytest
import torch
import torch.nn.functional as F

from objectives.base import KnobError
from objectives.gem import GEM
from objectives.mle import MLE


def released_gem(logits: torch.Tensor, targets: torch.Tensor, beta: float, h: str) -> torch.Tensor:
    """mean_t −Σ_v q_v·w_v·(log p_y − log p_v), q = softmax(z/β), w = 1 or σ(0.01·(z_v − z_y)), both detached."""
    z, y = logits.flatten(0, 1), targets.flatten()
    with torch.no_grad():
        diff = z - z.gather(-1, y[:, None])
        weights = torch.ones_like(diff) if h == "linear" else torch.sigmoid(0.01 * diff)
        q = F.softmax(z / beta, dim=-1)
    logp = F.log_softmax(z, dim=-1)
    return -(q * weights * (logp.gather(-1, y[:, None]) - logp)).sum(-1).mean()


@pytest.mark.parametrize("beta, h", [(0.7, "logsigmoid"), (0.7, "linear"), (1.6, "logsigmoid")])
def test_gem_loss_and_gradient_are_the_released_formulas(model, batch, beta, h, assert_same_gradients):
    loss = GEM(beta=beta, h=h, start_step=0)(model, batch, 0).loss
    expected = released_gem(model(batch[:, :-1]).float(), batch[:, 1:], beta, h)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert_same_gradients(model, loss, expected)


def test_gem_at_beta_one_with_the_linear_h_has_mles_gradient(model, batch, assert_same_gradients):
    gem = GEM(beta=1.0, h="linear", start_step=0)(model, batch, 0)
    mle = MLE()(model, batch, 0)
    assert_same_gradients(model, gem.loss, mle.loss)
    # its value is NLL − H(p): the entropy rides along with no gradient of its own
    with torch.no_grad():
        logp = model(batch[:, :-1]).float().log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1).mean()
    assert gem.loss.item() == pytest.approx(mle.loss.item() - entropy.item(), abs=1e-6)


def test_gem_is_mle_before_its_start_step(model, batch):
    late = GEM(start_step=5)(model, batch, 4)
    assert late.loss.item() == pytest.approx(MLE()(model, batch, 4).loss.item(), rel=1e-6)


@pytest.mark.parametrize("knob, value", [("beta", 0.0), ("beta", -1.0), ("h", "tanh"), ("start_step", -1)])
def test_bad_gem_knobs_are_refused(knob, value):
    with pytest.raises(KnobError, match=f"objective.{knob}="):
        GEM(**{knob: value})


@pytest.mark.parametrize("beta, h", [(0.7, "logsigmoid"), (1.0, "linear")])
def test_the_closed_forms_gradient_is_the_plain_formulas_bit_for_bit(beta, h):
    """The closed form's passes are ordered for speed; its gradient keeps the bits of the formula written plainly, so
    a run trains exactly as before the reordering (only the logged loss's last digits may move)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 300, generator=generator) * 4
    targets = torch.randint(0, 300, (64,), generator=generator)
    gold = logits.gather(-1, targets[:, None])
    c = torch.softmax(logits / beta if beta != 1 else logits.clone(), -1)
    if h == "logsigmoid":
        c = c * torch.sub(logits, gold).mul_(0.01).sigmoid_()
    expected = c.scatter_add(-1, targets[:, None], -c.sum(-1, keepdim=True))
    got = GEM(beta=beta, h=h).token_loss_and_grad(logits.clone(), targets)
    assert torch.equal(got.grad, expected)
    assert torch.allclose(got.stats["nll"], -logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1))


def test_the_nll_is_skipped_on_steps_whose_logs_are_not_read():
    """The logged NLL is a third of the closed form's time: computed only on logged steps, with the same loss and
    gradient bits either way."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 200, generator=generator) * 4
    targets = torch.randint(0, 200, (32,), generator=generator)
    gem = GEM()
    logged = gem.token_loss_and_grad(logits.clone(), targets)
    gem.want_logs(False)
    quiet = gem.token_loss_and_grad(logits.clone(), targets)
    assert set(logged.stats) == {"nll"} and quiet.stats == {}
    assert torch.equal(quiet.grad, logged.grad) and torch.equal(quiet.loss, logged.loss)
