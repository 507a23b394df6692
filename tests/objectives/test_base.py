"""What every objective shares (objectives/base.py): closed-form gradients equal autograd's, stated reductions
to MLE, finite bf16 gradients, knob errors, auxiliary terms on any objective."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.runner.config import auxiliary_terms
from lit_modules.core.errors import ConfigError
from lit_modules.core.model import GPT, GPTConfig
from objectives.base import KnobError, ObjectiveContext, TokenObjective, WithAuxiliaryTerms
from objectives.contrastive_token import ContrastiveToken
from objectives.ditto import DITTO
from objectives.emo import EMO
from objectives.entropy_penalty import EntropyPenalty
from objectives.error_norm_truncation import ErrorNormTruncation
from objectives.focal import Focal
from objectives.gem import GEM
from objectives.gold import GOLD
from objectives.label_smoothing import LabelSmoothing
from objectives.mile import MiLe
from objectives.mixce import MixCE
from objectives.mle import MLE
from objectives.nce import NCE
from objectives.oracle_js import OracleJS
from objectives.oracle_kl import OracleKL
from objectives.preference import Preference
from objectives.registry import build_objective, offers_term
from objectives.scheduled_sampling import ScheduledSampling
from objectives.simctg import SimCTG
from objectives.tailr import TaiLr
from objectives.unlikelihood_seq import UnlikelihoodSeq
from objectives.unlikelihood_token import UnlikelihoodToken
from objectives.z_loss import ZLoss

V = 23  # the vocabulary of the model fixture


def mle_loss(model, batch):
    return MLE()(model, batch, 0).loss.item()


# ---- reductions to MLE ----
@pytest.mark.parametrize(
    "objective",
    [
        EntropyPenalty(lam=0.0),
        LabelSmoothing(eps=0.0),
        SimCTG(margin=0.0),
        MixCE(eta=1.0),
        TaiLr(gamma=0.0, min_w=0.0),
        UnlikelihoodToken(alpha=0.0),
    ],
    ids=["lam=0", "eps=0", "rho=0", "eta=1", "tailr-gamma=0", "alpha=0"],
)
def test_reduces_to_mle(objective, model, batch):
    assert objective(model, batch, 0).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)


# ---- reductions to MLE ----
@pytest.mark.parametrize(
    "objective",
    [
        ZLoss(alpha=0.0),
        ContrastiveToken(alpha=0.0),
        EMO(lam=0.0),
        GOLD(reward="delta", iw_min=1.0, suffix=0, start_step=0),
        DITTO(rate=0.0, start_step=0),
    ],
    ids=["z_loss alpha=0", "ct alpha=0", "emo lam=0", "gold delta u=1 K=0", "ditto rate=0"],
)
def test_recent_objectives_reduce_to_mle(objective, model, batch):
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert objective(model, batch, 0).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)


# ---- bf16: finite gradients ----
@pytest.mark.parametrize(
    "objective",
    [ZLoss(), ContrastiveToken(), EMO(), GOLD(start_step=0), DITTO(rate=1.0, max_len=5, start_step=0)],
    ids=lambda o: o.name,
)
def test_gradients_are_finite_in_bf16(objective, model, batch):
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(model, batch, 0)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(out.loss) and grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


# ---- knob validation ----
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LabelSmoothing(eps=1.0), "objective.eps=1.0"),
        (lambda: EntropyPenalty(lam=-0.1), "objective.lam=-0.1"),
        (lambda: UnlikelihoodToken(alpha=-1), "objective.alpha=-1"),
        (lambda: NCE(k=0), "objective.k=0"),
        (lambda: Preference(beta=0), "objective.beta=0"),
        (lambda: MixCE(eta=1.5), "objective.eta=1.5"),
        (lambda: ScheduledSampling(schedule="cosine"), "objective.schedule='cosine'"),
        (lambda: Preference(loss="kto"), "objective.loss='kto'"),
    ],
)
def test_bad_knobs(build, message):
    with pytest.raises(KnobError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build()


# ---- knob errors ----
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ZLoss(alpha=-1e-4), "objective.alpha=-0.0001"),
        (lambda: ContrastiveToken(alpha=-1), "objective.alpha=-1"),
        (lambda: ContrastiveToken(window=0), "objective.window=0"),
        (lambda: EMO(lam=-0.5), "objective.lam=-0.5"),
        (lambda: GOLD(iw_min=0.0), "objective.iw_min=0.0 is not allowed; use a clipping bound u in (0, 1]"),
        (lambda: GOLD(iw_min=1.5), "objective.iw_min=1.5"),
        (lambda: GOLD(reward="bleu"), "objective.reward='bleu'"),
        (lambda: DITTO(min_copies=1), "objective.min_copies=1 is not allowed; use an integer >= 2"),
        (lambda: DITTO(lam=2.0), "objective.lam=2.0"),
        (lambda: GOLD(start_step=300).check_steps(300), "objective.start_step=300 .* below trainer.max_steps=300"),
        (lambda: DITTO(max_len=50).check_fits(129), "objective.max_len=50"),
    ],
)
def test_bad_knobs_of_fine_tuning_and_recent_objectives(build, message):
    with pytest.raises(KnobError, match=message.replace(".", r"\.").replace("(", r"\(").replace("\\.*", ".*")):
        build()


def test_prefix_plus_continuation_must_fit_the_context(model):
    objective = UnlikelihoodSeq(prefix_len=20, cont_len=20)
    with pytest.raises(KnobError, match="prefix_len \\+ cont_len"):
        objective.setup(model, ObjectiveContext(vocab_size=V, context=32))


# ---- closed forms: every TokenObjective's token_loss_and_grad equals autograd of its token_loss ----
def with_cost_embedding(objective: EMO) -> EMO:
    """EMO's cost embedding is the model's, set at every step: here a fixed one for 37 tokens."""
    embedding = torch.randn(37, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    objective.cost_embedding = F.normalize(embedding, dim=-1)
    return objective


def with_reference(objective: GOLD) -> GOLD:
    """GOLD's rewards come from its frozen MLE model: here one over 37 tokens."""
    torch.manual_seed(7)
    objective.setup(GPT(GPTConfig(vocab_size=37, context=8, n_layer=1, n_head=2, d_model=8)), None)
    return objective


def with_source(objective):
    """The oracle divergences read the synthetic source's conditionals: one over 37 tokens."""
    from lit_modules.core.synthetic import HMMSource, SourceConfig

    source = HMMSource(SourceConfig(vocab_size=37, n_states=4, emit=5, seed=2))
    objective.setup(None, ObjectiveContext(vocab_size=37, context=8, source=source))
    return objective


def token_objectives():
    """An instance of every TokenObjective subclass, at knobs where every branch of its formula acts."""
    import importlib
    import pkgutil

    import objectives

    for module in pkgutil.iter_modules(objectives.__path__):
        importlib.import_module(f"objectives.{module.name}")
    special = {  # knob values that reach both sides of a hinge or a reduction
        "entropy_penalty": [EntropyPenalty(lam=0.7), EntropyPenalty(lam=0.7, threshold=1.5), EntropyPenalty(lam=0)],
        "label_smoothing": [LabelSmoothing(eps=0.2)],
        "mixce": [MixCE(eta=0.3)],
        "tailr": [TaiLr(gamma=0.4, min_w=0.1)],
        "unlikelihood_token": [UnlikelihoodToken(alpha=0.8)],
        "emo": [with_cost_embedding(EMO(lam=0.7))],
        "gold": [with_reference(GOLD(reward=r, iw_min=0.3, suffix=2)) for r in ("sump", "logp", "delta")],
        "contrastive_token": [ContrastiveToken(ct_length=0.7, window=3)],
        "gem": [GEM(beta=0.5, h="linear"), GEM(beta=1.3, h="logsigmoid")],
        "focal": [Focal(gamma=2.0), Focal(gamma=0.5)],
        "mile": [MiLe(gamma=1.5)],
        "error_norm_truncation": [ErrorNormTruncation(threshold=1.0)],
        "oracle_kl": [with_source(OracleKL(eta=e)) for e in (0.0, 0.3, 1.0)],
        "oracle_js": [with_source(OracleJS())],
    }
    found, stack = [], [TokenObjective]
    while stack:
        for cls in stack.pop().__subclasses__():
            stack.append(cls)
            if cls.token_loss_and_grad is not None and "token_loss_and_grad" in vars(cls):
                found += special.get(cls.name, [cls()])
    return found


CLOSED_FORMS = token_objectives()


@pytest.mark.parametrize("objective", CLOSED_FORMS, ids=lambda o: o.name)
def test_closed_form_gradient_is_autograds(objective):
    """∂ℓ/∂z of the closed form equals autograd of the plain formula, and so do the loss and the stats."""
    g = torch.Generator().manual_seed(3)
    B, T, Vc = 2, 6, 37
    inputs = torch.randint(0, 6, (B, T), generator=g)  # few distinct ids: repeats in the context
    targets = torch.randint(0, Vc, (B, T), generator=g)
    extra = [x.flatten(0, 1) for x in objective.per_token_inputs(inputs, targets)]
    z = torch.randn(B * T, Vc, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    z[0, :5] = 12.0  # a confident row: p near 1 for some tokens, the clamps of 1 − p are exercised
    y = targets.flatten()
    closed = objective.token_loss_and_grad(z.clone(), y, *extra)  # may overwrite its logits
    leaf = z.clone().requires_grad_()
    auto = objective.token_loss(leaf, y, *extra)
    (auto_grad,) = torch.autograd.grad(auto.loss.sum(), leaf)
    assert torch.allclose(closed.grad, auto_grad, atol=1e-10), (closed.grad - auto_grad).abs().max()
    assert torch.allclose(closed.loss, auto.loss.detach(), atol=1e-12)
    assert closed.stats.keys() == auto.stats.keys()
    for key, value in closed.stats.items():
        assert torch.allclose(value, auto.stats[key].detach(), atol=1e-12), key


def test_every_closed_form_is_tested():
    assert {o.name for o in CLOSED_FORMS} >= {
        "mle",
        "entropy_penalty",
        "label_smoothing",
        "mixce",
        "tailr",
        "unlikelihood_token",
        "z_loss",
        "contrastive_token",
        "emo",
        "gold",
        "gem",
        "focal",
        "mile",
        "error_norm_truncation",
        "oracle_kl",
        "oracle_js",
    }


def test_a_token_objective_without_a_closed_form_trains_through_autograd(model, batch):
    """The plain path: a TokenObjective with token_loss only gets autograd's gradient through the head."""

    class PlainLabelSmoothing(TokenObjective):
        name = "plain"

        def token_loss(self, logits, targets):
            return LabelSmoothing(eps=0.2).token_loss(logits, targets)

    grads = []
    for objective in (PlainLabelSmoothing(), LabelSmoothing(eps=0.2)):
        model.zero_grad()
        out = objective(model, batch, 0)
        out.loss.backward()
        grads.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (plain_loss, plain), (closed_loss, closed) = grads
    torch.testing.assert_close(plain_loss, closed_loss)
    for a, b in zip(plain, closed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- auxiliary terms ----
def test_an_auxiliary_term_adds_its_weighted_mean_to_a_token_objective(model, batch, logits_of):
    z, y = logits_of(model, batch)
    log_z = z.logsumexp(-1)
    smoothing = {"_target_": "objectives.label_smoothing.LabelSmoothing", "eps": 0.1}
    combined = build_objective(smoothing, auxiliary_terms({"z_loss": 0.01, "entropy_penalty": 0.2}))
    out = combined(model, batch, 0)
    entropy = -(z.softmax(-1) * z.log_softmax(-1)).sum(-1)
    expected = LabelSmoothing(eps=0.1)(model, batch, 0).loss.item() + 0.01 * (log_z**2).mean().item()
    expected -= 0.2 * entropy.mean().item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert combined.name == "label_smoothing+z_loss(0.01)+entropy_penalty(0.2)"
    assert out.logs["z_loss/log_z"].item() == pytest.approx(log_z.mean().item(), rel=1e-5)


def test_an_auxiliary_term_on_an_objective_that_is_not_per_token(model, batch, logits_of):
    """The preference loss (MLE before its start step here) plus z-loss: its loss plus the term's mean."""
    combined = build_objective(
        {"_target_": "objectives.preference.Preference", "prefix_len": 4, "cont_len": 4, "start_step": 5},
        auxiliary_terms({"z_loss": 0.5}),
    )
    combined.setup(model, ObjectiveContext(vocab_size=V, context=32))
    z, _ = logits_of(model, batch)
    expected = mle_loss(model, batch) + 0.5 * (z.logsumexp(-1) ** 2).mean().item()
    assert combined(model, batch, 0).loss.item() == pytest.approx(expected, rel=1e-5)
    assert isinstance(combined.objective, Preference)


def test_an_auxiliary_term_leaves_the_objective_it_is_added_to_unchanged(model, batch):
    """The terms ride along in each call: the wrapped objective alone still computes its own loss."""
    smoothing = LabelSmoothing(eps=0.1)
    alone = smoothing(model, batch, 0).loss.item()
    combined = WithAuxiliaryTerms(smoothing, auxiliary_terms({"z_loss": 0.5}))
    assert combined(model, batch, 0).loss.item() > alone
    assert smoothing(model, batch, 0).loss.item() == alone


def test_the_wrapped_objective_is_told_which_steps_log():
    gem = GEM()
    combined = WithAuxiliaryTerms(gem, auxiliary_terms({"z_loss": 0.5}))
    combined.want_logs(False)
    assert not gem.logs_wanted and not combined.logs_wanted
    combined.want_logs(True)
    assert gem.logs_wanted


def test_auxiliary_terms_are_validated():
    with pytest.raises(ConfigError, match="aux.zloss is not an auxiliary term; choose from: entropy_penalty, "):
        auxiliary_terms({"zloss": 1.0})
    with pytest.raises(ConfigError, match="aux.simctg is not an auxiliary term"):
        auxiliary_terms({"simctg": 1.0})
    with pytest.raises(ConfigError, match=r"aux.z_loss=-1 is not allowed; use a finite weight >= 0"):
        auxiliary_terms({"z_loss": -1})
    terms = auxiliary_terms({"z_loss": 1, "label_smoothing": 0.1})
    assert [(t.name, t.weight) for t in terms] == [("z_loss", 1.0), ("label_smoothing", 0.1)]


def test_the_objectives_that_offer_a_term_are_the_ones_that_declare_it():
    """``term`` is declared on TokenObjective (None) and defined by three objectives; the penalty it gives is
    the objective's loss less its NLL part, per token."""
    offering = {
        cls.name for cls in (MLE, EntropyPenalty, LabelSmoothing, ZLoss, MixCE, NCE, SimCTG) if offers_term(cls)
    }
    assert offering == {"entropy_penalty", "label_smoothing", "z_loss"}
    z = torch.randn(5, V, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, V, (5,), generator=torch.Generator().manual_seed(1))
    nll = -z.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
    for objective, weight in ((ZLoss(alpha=0.3), 0.3), (EntropyPenalty(lam=0.2), 0.2)):
        total = objective.token_loss(z, y).loss
        torch.testing.assert_close(total, nll + weight * objective.term(z, y).loss)


# ---- fine-tuning: MLE before the start step, a frozen reference taken at it ----
FINE_TUNING = [
    lambda: GOLD(start_step=2),
    lambda: DITTO(start_step=2, rate=1.0, min_len=2, max_len=3),
    lambda: Preference(start_step=2, prefix_len=4, cont_len=4),
]


@pytest.mark.parametrize("build", FINE_TUNING, ids=["gold", "ditto", "preference"])
def test_a_fine_tuning_objective_is_mle_before_its_start_step_and_snapshots_its_reference_there(build, model, batch):
    objective = build()
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert objective(model, batch, 1).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)
    with torch.no_grad():
        model.output_embedding.add_(0.01)  # the model moves on before the start step
    assert objective(model, batch, 2).loss.item() != pytest.approx(mle_loss(model, batch), rel=1e-6)
    if objective.uses_reference:
        assert bool(objective.reference_taken)
        for name, value in objective.reference.state_dict().items():
            torch.testing.assert_close(value, model.state_dict()[name])  # the model at the start step
        assert "reference_taken" in objective.state_dict()  # checkpoints keep it: a resume keeps the snapshot
    with pytest.raises(KnobError, match="start_step=2 is not allowed; it must be below trainer.max_steps=2"):
        objective.check_steps(2)


def test_auxiliary_terms_ride_on_a_fine_tuning_objectives_mle_steps(model, batch):
    """Before its start step GOLD is MLE; with aux terms, MLE plus the terms, in the same per-token pass."""
    combined = WithAuxiliaryTerms(GOLD(start_step=5), auxiliary_terms({"z_loss": 0.5}))
    combined.setup(model, ObjectiveContext(vocab_size=V, context=32))
    with torch.no_grad():
        log_z = model(batch[:, :-1]).double().logsumexp(-1)
    expected = mle_loss(model, batch) + 0.5 * (log_z**2).mean().item()
    out = combined(model, batch, 0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert set(out.logs) >= {"nll", "z_loss", "z_loss/log_z"}
