"""The oracle divergences against their formulas on the synthetic source's exact conditionals (log_conditionals,
float64): η·KL(P‖p) + (1−η)·KL(p‖P) and JS(P, p), loss and gradient; refused where no source is known."""

import math

import pytest
import torch

from lit_modules.core.synthetic import HMMSource, SourceConfig
from objectives.base import KnobError, ObjectiveContext
from objectives.oracle_js import OracleJS
from objectives.oracle_kl import OracleKL

V = 23


@pytest.fixture
def source() -> HMMSource:
    return HMMSource(SourceConfig(vocab_size=V, n_states=4, emit=4, seed=5))


def divergences(model, batch, source) -> dict[str, torch.Tensor]:
    """Per-token forward KL, reverse KL and JS of the model's p against the source's P, from the full head."""
    logp = model(batch[:, :-1]).double().log_softmax(-1)
    true_logp = source.log_conditionals(batch, torch.float64)[:, 1:]
    p, true_p = logp.exp(), true_logp.exp()
    m = (p + true_p) / 2
    return {
        "forward": (true_p * (true_logp - logp)).sum(-1),
        "reverse": (p * (logp - true_logp)).sum(-1),
        "js": 0.5 * (true_p * (true_logp - m.log())).sum(-1) + 0.5 * (p * (logp - m.log())).sum(-1),
    }


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_oracle_kl_is_the_mixed_kl_to_the_true_source(model, batch, source, eta, assert_same_gradients):
    objective = OracleKL(eta=eta)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32, source=source))
    out = objective(model, batch, 0)
    d = divergences(model, batch, source)
    expected = (eta * d["forward"] + (1 - eta) * d["reverse"]).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert out.logs["forward_kl"].item() == pytest.approx(d["forward"].mean().item(), rel=1e-4)
    assert_same_gradients(model, out.loss, expected.float())


def test_oracle_js_is_the_jensen_shannon_divergence_to_the_true_source(model, batch, source, assert_same_gradients):
    objective = OracleJS()
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32, source=source))
    out = objective(model, batch, 0)
    expected = divergences(model, batch, source)["js"].mean()
    assert 0 < out.loss.item() < math.log(2)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert_same_gradients(model, out.loss, expected.float())


@pytest.mark.parametrize("cls", [OracleKL, OracleJS])
def test_data_without_a_source_is_refused_in_one_line(model, cls):
    with pytest.raises(KnobError, match=f"objective {cls.name} needs the true source's conditionals"):
        cls().setup(model, ObjectiveContext(vocab_size=V, context=32))


def test_an_eta_outside_zero_one_is_refused():
    with pytest.raises(KnobError, match="objective.eta=1.5"):
        OracleKL(eta=1.5)


def test_which_objectives_read_the_true_source():
    from objectives.base import WithAuxiliaryTerms
    from objectives.mle import MLE
    from objectives.mrt import MinimumRisk
    from objectives.oracle_js import OracleJS
    from objectives.oracle_kl import OracleKL
    from objectives.selective_lm import SelectiveLM

    assert OracleKL().reads_true_source() and OracleJS().reads_true_source()
    assert SelectiveLM(reference="oracle").reads_true_source()
    assert not SelectiveLM(reference="runs/suite/mle/seed_1").reads_true_source()
    assert MinimumRisk(cost="oracle_nll").reads_true_source() and not MinimumRisk(cost="bleu").reads_true_source()
    assert not MLE().reads_true_source() and WithAuxiliaryTerms(OracleKL(), ()).reads_true_source()
