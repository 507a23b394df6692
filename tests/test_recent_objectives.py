"""GOLD, DITTO, EMO, contrastive token and z-loss against their formulas computed another way (loops over
positions, the full (B, T, V) logits), their reductions to MLE, finite bf16 gradients, knob errors; and
auxiliary terms added to any objective."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_objectives import V, mle_loss

from lit_modules.system import build_objective
from objectives.base import KnobError, ObjectiveContext, split_batch
from objectives.contrastive_token import ContrastiveToken
from objectives.ditto import DITTO, repeat_spans
from objectives.emo import EMO
from objectives.entropy_penalty import EntropyPenalty
from objectives.gold import GOLD
from objectives.label_smoothing import LabelSmoothing
from objectives.preference import Preference
from objectives.z_loss import ZLoss


@pytest.fixture
def batch():
    return torch.randint(0, V, (3, 17), generator=torch.Generator().manual_seed(1))


def logits_of(model, batch):
    """(B, T, V) fp64 logits of the full head, and the targets."""
    with torch.no_grad():
        return model(batch[:, :-1]).double(), batch[:, 1:]


# ---- formulas ----
def test_z_loss_formula(model, batch):
    z, y = logits_of(model, batch)
    log_z = z.logsumexp(-1)
    nll = log_z - z.gather(-1, y[..., None]).squeeze(-1)
    expected = (nll + 0.05 * log_z**2).mean().item()
    out = ZLoss(alpha=0.05)(model, batch, 0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logs["log_z"].item() == pytest.approx(log_z.mean().item(), rel=1e-5)


def test_contrastive_token_formula(model, batch):
    """The released code's definition by loops: the first L = round(0.25·T) positions, negatives the gold
    tokens of the round(0.5·L) positions before, without y_t, duplicates counted; CE over all positions."""
    z, y = logits_of(model, batch)
    B, T = y.shape
    L = round(0.25 * T)
    W = round(0.5 * L)
    ct = 0.0
    for b in range(B):
        for t in range(L):
            negatives = [int(y[b, s]) for s in range(max(0, t - W), t) if y[b, s] != y[b, t]]
            ct += math.log1p(sum(math.exp(z[b, t, n] - z[b, t, y[b, t]]) for n in negatives))
    nll = F.cross_entropy(z.flatten(0, 1), y.flatten()).item()
    out = ContrastiveToken(alpha=0.7)(model, batch, 0)
    assert out.loss.item() == pytest.approx(nll + 0.7 * ct / (B * L), rel=1e-5)


def test_contrastive_token_negatives_repeat_and_exclude_the_gold():
    from objectives.contrastive_token import preceding_negatives

    y = torch.tensor([[5, 6, 5, 7, 5]])
    negatives, counted = preceding_negatives(y, window=3)
    # t = 4 (gold 5): y_1..y_3 = 6, 5, 7 -> 6 and 7 count, 5 (the gold) does not
    assert negatives[0, 4].tolist() == [6, 5, 7] and counted[0, 4].tolist() == [True, False, True]
    assert not counted[0, 0].any()  # nothing before the first position


def test_emo_formula(model, batch):
    """DEMD with the model's own unit-norm output embedding as the cost, the loss as the released code
    writes it: 0.5·(NLL + sg(NLL / DEMD')·DEMD'), DEMD' = DEMD's value without the gold token's term."""
    z, y = logits_of(model, batch)
    e = F.normalize(model.output_embedding.detach().double(), dim=-1)
    q = z.softmax(-1)
    cos = e[y] @ e.T  # (B, T, V)
    demd = 1 - (q * cos).sum(-1)
    nll = -q.gather(-1, y[..., None]).squeeze(-1).log()
    released = demd + q.gather(-1, y[..., None]).squeeze(-1)
    expected = (0.5 * (nll + nll / (released + 1e-10) * released)).mean().item()
    out = EMO()(model, batch, 0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logs["demd"].item() == pytest.approx(demd.mean().item(), rel=1e-4)


def test_emo_gradient_is_the_released_codes(model, batch):
    """The released emo1_adaptive written the released way (gold term removed from q with a detached
    copy), on the full logits: the same parameter gradients."""
    inputs, targets = split_batch(batch)
    grads = []
    for which in ("objbench", "released"):
        model.zero_grad()
        if which == "objbench":
            EMO()(model, batch, 0).loss.backward()
        else:
            logits = model(inputs).flatten(0, 1)
            labels = targets.flatten()
            mle = F.cross_entropy(logits, labels, reduction="none")
            one_hot = F.one_hot(labels, V).to(logits.dtype)
            e = model.output_embedding.detach()
            e = e / e.norm(dim=1, keepdim=True)
            q = logits.softmax(-1)
            q_final = q - (q * one_hot).detach()
            emo = 1 - ((one_hot @ e) * (q_final @ e)).sum(-1)
            (0.5 * (mle + (mle / (emo + 1e-10)).detach() * emo)).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gold_formula(model, batch):
    """-max(u, p(y_t))·Q_t·log p(y_t), Q_t the sum of max(c, p_MLE) over t..t+K (1 past the end), p_MLE the
    model at start_step."""
    objective = GOLD(iw_min=0.3, trunc_min=0.1, suffix=2, gamma=0.5, start_step=2)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    objective(model, batch, 2)  # the snapshot is taken at start_step
    reference = copy.deepcopy(model)
    with torch.no_grad():  # the policy moves away from the frozen reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z, y = logits_of(model, batch)
    z_ref, _ = logits_of(reference, batch)
    p = z.softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    p_mle = z_ref.softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    B, T = y.shape
    total = 0.0
    for b in range(B):
        for t in range(T):
            q = sum(0.5**k * max(0.1, float(p_mle[b, t + k]) if t + k < T else 1.0) for k in range(3))
            total += -max(0.3, float(p[b, t])) * q * math.log(p[b, t])
    assert objective(model, batch, 5).loss.item() == pytest.approx(total / (B * T), rel=1e-5)


def test_gold_is_mle_before_start_step_and_takes_its_reference_there(model, batch):
    objective = GOLD(start_step=3)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert objective(model, batch, 2).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)
    assert not bool(objective.reference_taken)
    objective(model, batch, 3)
    assert bool(objective.reference_taken)
    assert all(not p.requires_grad for p in objective.reference.parameters())


def test_ditto_rows_are_a_prefix_then_the_span_repeated():
    batch = torch.arange(40)[None].repeat(2, 1)
    rows = repeat_spans(batch, torch.tensor([3, 5]), torch.tensor([10, 5]))
    assert rows[0, :12].tolist() == [7, 8, 9, 10, 11, 12, 10, 11, 12, 10, 11, 12]
    assert rows[1, :15].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9]


def test_ditto_loss_formula(model, batch):
    """On the rows it builds: mean over targets t ≥ 2L of −log(1 − |p(y_t) − λ·p(y_{t−L})|)."""
    objective = DITTO(lam=0.4, rate=1.0, min_len=2, max_len=4, start_step=0)
    torch.manual_seed(5)
    out = objective(model, batch, 0)
    torch.manual_seed(5)
    torch.rand(())  # the rate's draw
    rows, lengths = objective.pseudo_repetitive(batch)
    z, y = logits_of(model, rows)
    p = z.softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    total, n = 0.0, 0
    for b in range(rows.shape[0]):
        L = int(lengths[b])
        for t in range(2 * L, y.shape[1]):
            assert y[b, t] == y[b, t - L]  # the same token one copy earlier
            total += -math.log(1 - abs(float(p[b, t]) - 0.4 * float(p[b, t - L])))
            n += 1
    assert out.loss.item() == pytest.approx(total / n, rel=1e-5)


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
def test_reduces_to_mle(objective, model, batch):
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
def test_bad_knobs(build, message):
    with pytest.raises(KnobError, match=message.replace(".", r"\.").replace("(", r"\(").replace("\\.*", ".*")):
        build()


# ---- auxiliary terms ----
def aux_config(name: str, weight: float) -> dict:
    from benchmarks.cli import aux_terms

    return aux_terms({name: weight})


def test_an_auxiliary_term_adds_its_weighted_mean_to_a_token_objective(model, batch):
    z, y = logits_of(model, batch)
    log_z = z.logsumexp(-1)
    smoothing = {"_target_": "objectives.label_smoothing.LabelSmoothing", "eps": 0.1}
    combined = build_objective(smoothing, {**aux_config("z_loss", 0.01), **aux_config("entropy_penalty", 0.2)})
    out = combined(model, batch, 0)
    entropy = -(z.softmax(-1) * z.log_softmax(-1)).sum(-1)
    expected = LabelSmoothing(eps=0.1)(model, batch, 0).loss.item() + 0.01 * (log_z**2).mean().item()
    expected -= 0.2 * entropy.mean().item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert combined.name == "label_smoothing+z_loss(0.01)+entropy_penalty(0.2)"
    assert out.logs["z_loss/log_z"].item() == pytest.approx(log_z.mean().item(), rel=1e-5)


def test_an_auxiliary_term_on_an_objective_that_is_not_per_token(model, batch):
    """The preference loss (MLE before its start step here) plus z-loss: its loss plus the term's mean."""
    combined = build_objective(
        {"_target_": "objectives.preference.Preference", "prefix_len": 4, "cont_len": 4, "start_step": 5},
        aux_config("z_loss", 0.5),
    )
    combined.setup(model, ObjectiveContext(vocab_size=V, context=32))
    z, _ = logits_of(model, batch)
    expected = mle_loss(model, batch) + 0.5 * (z.logsumexp(-1) ** 2).mean().item()
    assert combined(model, batch, 0).loss.item() == pytest.approx(expected, rel=1e-5)
    assert isinstance(combined.objective, Preference)


def test_auxiliary_terms_are_validated():
    from benchmarks.cli import aux_terms
    from lit_modules.util import ConfigError

    with pytest.raises(ConfigError, match="aux.zloss is not an auxiliary term; choose from: entropy_penalty, "):
        aux_terms({"zloss": 1.0})
    with pytest.raises(ConfigError, match=r"aux.z_loss=-1 is not allowed; use a weight >= 0"):
        aux_terms({"z_loss": -1})
    assert set(aux_terms({"z_loss": 1, "label_smoothing": 0.1})) == {"z_loss", "label_smoothing"}
    assert EntropyPenalty().term is not None
