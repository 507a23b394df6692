"""Every objective against its formula computed another way (loops or closed form), its stated
reductions to MLE, its signs, and its own invariants."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose, full_logits_nll

from lit_modules.decoding import DecodingConfig, generate
from lit_modules.model import GPT, GPTConfig
from objectives.base import KnobError, ObjectiveContext, TokenObjective
from objectives.contrastive_token import ContrastiveToken
from objectives.emo import EMO
from objectives.entropy_penalty import EntropyPenalty
from objectives.gold import GOLD
from objectives.label_smoothing import LabelSmoothing
from objectives.mixce import MixCE
from objectives.mle import MLE
from objectives.nce import NCE
from objectives.preference import Preference
from objectives.scheduled_sampling import ScheduledSampling
from objectives.simctg import SimCTG
from objectives.tailr import TaiLr
from objectives.unlikelihood_seq import UnlikelihoodSeq, ngram_repeat_mask
from objectives.unlikelihood_token import UnlikelihoodToken

V = 23


@pytest.fixture
def batch():
    return torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(1))


def probs_of(model, batch):
    """(B, T, V) probabilities and targets, the model's full softmax."""
    with torch.no_grad():
        return model(batch[:, :-1]).double().softmax(-1), batch[:, 1:]


def mle_loss(model, batch):
    return MLE()(model, batch, 0).loss.item()


# ---- token-level losses against loops over positions ----
def test_entropy_penalty_formula(model, batch):
    p, y = probs_of(model, batch)
    nll = entropy = hinge = 0.0
    positions = [(b, t) for b in range(y.shape[0]) for t in range(y.shape[1])]
    for b, t in positions:
        row = p[b, t]
        nll += -math.log(row[y[b, t]])
        h = -sum(float(q) * math.log(float(q)) for q in row)
        entropy += h
        hinge += max(0.0, 2.5 - h)
    n = len(positions)
    assert EntropyPenalty(lam=0.3)(model, batch, 0).loss.item() == pytest.approx(nll / n - 0.3 * entropy / n, rel=1e-5)
    hinged = EntropyPenalty(lam=0.3, threshold=2.5)(model, batch, 0).loss.item()
    assert hinged == pytest.approx(nll / n + 0.3 * hinge / n, rel=1e-5)


def test_label_smoothing_formula(model, batch):
    p, y = probs_of(model, batch)
    eps, total, n = 0.2, 0.0, 0
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            logp = p[b, t].log()
            total += (1 - eps) * -logp[y[b, t]].item() + eps * -logp.mean().item()
            n += 1
    assert LabelSmoothing(eps=eps)(model, batch, 0).loss.item() == pytest.approx(total / n, rel=1e-5)
    z = torch.randn(12, 37, generator=torch.Generator().manual_seed(2)) * 3
    targets = torch.randint(0, 37, (12,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(  # torch's convention for the ε mass
        LabelSmoothing(eps=eps).token_loss(z.clone(), targets).loss,  # a token function consumes z
        torch.nn.functional.cross_entropy(z, targets, label_smoothing=eps, reduction="none"),
    )


def test_mixce_and_tailr_formulas(model, batch):
    p, y = probs_of(model, batch)
    py = p.gather(-1, y[..., None]).squeeze(-1).flatten().tolist()
    eta, gamma, min_w = 0.3, 0.4, 0.2
    mix = sum(eta * -math.log(q) + (1 - eta) * q * -math.log(q) for q in py) / len(py)
    tailr = sum(min(1.0, max(min_w, q / (gamma + (1 - gamma) * q))) * -math.log(q) for q in py) / len(py)
    assert MixCE(eta=eta)(model, batch, 0).loss.item() == pytest.approx(mix, rel=1e-5)
    assert TaiLr(gamma=gamma, min_w=min_w)(model, batch, 0).loss.item() == pytest.approx(tailr, rel=1e-5)


def test_mixce_and_tailr_weights_are_detached(model, batch):
    # the gradient is the MLE gradient scaled per token, not d(q·ℓ)/dθ
    loss = MixCE(eta=0.0)(model, batch, 0).loss
    grad = torch.autograd.grad(loss, model.lm_head.weight)[0]
    logits = model(batch[:, :-1]).float()
    nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
    expected = torch.autograd.grad((torch.exp(-nll).detach() * nll).mean(), model.lm_head.weight)[0]
    torch.testing.assert_close(grad, expected)


def test_simctg_formula(model, batch):
    with torch.no_grad():
        h = model.hidden(batch[:, :-1]).double()
    margin, total, pairs = 0.4, 0.0, 0
    for b in range(h.shape[0]):
        for i in range(h.shape[1]):
            for j in range(h.shape[1]):
                if i != j:
                    cos_ij = F.cosine_similarity(h[b, i], h[b, j], dim=0).item()
                    total += max(0.0, margin - 1.0 + cos_ij)
                    pairs += 1
    out = SimCTG(margin=margin)(model, batch, 0)
    assert out.logs["contrastive"].item() == pytest.approx(total / pairs, rel=1e-4, abs=1e-6)
    assert out.loss.item() == pytest.approx(mle_loss(model, batch) + total / pairs, rel=1e-5)


def test_unlikelihood_token_formula(model, batch):
    p, y = probs_of(model, batch)
    x = batch[:, :-1]
    for window in (None, 3):
        total, n = 0.0, 0
        for b in range(y.shape[0]):
            for t in range(y.shape[1]):
                start = 0 if window is None else max(0, t - window + 1)
                candidates = set(x[b, start : t + 1].tolist()) - {y[b, t].item()}
                total += -math.log(p[b, t, y[b, t]]) + 0.7 * sum(-math.log(1 - p[b, t, c]) for c in candidates)
                n += 1
        loss = UnlikelihoodToken(alpha=0.7, window=window)(model, batch, 0).loss.item()
        assert loss == pytest.approx(total / n, rel=1e-5)


def test_unlikelihood_token_candidates_stay_in_their_sequence(model, batch):
    objective = UnlikelihoodToken(alpha=1.0)
    together = objective(model, batch, 0).loss.item()
    alone = [objective(model, batch[i : i + 1], 0).loss.item() for i in range(batch.shape[0])]
    assert together == pytest.approx(sum(alone) / len(alone), rel=1e-5)


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


# ---- signs ----
def train(objective, model, batch, steps=15, lr=0.02):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        opt.zero_grad()
        objective(model, batch, step).loss.backward()
        opt.step()
    return model


def mean_entropy(model, batch):
    p, _ = probs_of(model, batch)
    return -(p * p.log()).sum(-1).mean().item()


def test_entropy_penalty_raises_entropy(model, batch):
    mle = train(MLE(), copy.deepcopy(model), batch, lr=0.5)
    penalised = train(EntropyPenalty(lam=1.0), copy.deepcopy(model), batch, lr=0.5)
    assert mean_entropy(penalised, batch) > mean_entropy(mle, batch) + 0.05


def test_unlikelihood_lowers_candidate_probability(model, batch):
    from objectives.unlikelihood_token import candidate_mask

    mask = candidate_mask(batch[:, :-1], batch[:, 1:], V, None)

    def candidate_mass(m):
        p, _ = probs_of(m, batch)
        return (p * mask).sum(-1).mean().item()

    mle = train(MLE(), copy.deepcopy(model), batch, lr=0.5)
    ul = train(UnlikelihoodToken(alpha=3.0), copy.deepcopy(model), batch, lr=0.5)
    assert candidate_mass(ul) < 0.9 * candidate_mass(mle)


# ---- NCE ----
def nce_objective(model, k, counts=None, **kw):
    objective = NCE(k=k, **kw)
    counts = torch.arange(1, V + 1, dtype=torch.float64) if counts is None else counts
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32, unigram_counts=counts))
    return objective


def test_nce_noise_follows_unigram_power(model):
    counts = torch.tensor([0.0, 1, 4, 9, 16, 25] + [0.0] * (V - 6))
    objective = nce_objective(model, 200_000, counts, noise_power=0.5)
    drawn = torch.bincount(objective.sample_noise(torch.Generator().manual_seed(0)), minlength=V).double()
    expected = counts.sqrt() / counts.sqrt().sum()
    torch.testing.assert_close(drawn / drawn.sum(), expected.double(), atol=4e-3, rtol=0)
    assert drawn[0] == 0 and drawn[6:].sum() == 0  # unseen words are never noise


def test_nce_formula(model, batch):
    model.init_output_bias(torch.arange(V, dtype=torch.float64) ** 2)  # scores carry the output bias
    objective = nce_objective(model, 5, log_z=0.3)
    torch.manual_seed(3)
    loss = objective(model, batch, 0).loss.item()
    torch.manual_seed(3)
    noise = objective.sample_noise().tolist()
    with torch.no_grad():
        logits = model(batch[:, :-1]).double()
    q = objective.noise_probs.double()
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = batch[b, t + 1].item()
            delta = lambda w: logits[b, t, w].item() - 0.3 - math.log(5 * q[w].item())  # noqa: B023
            total += -math.log(1 / (1 + math.exp(-delta(y)))) - sum(
                math.log(1 / (1 + math.exp(delta(w)))) for w in noise
            )
            n += 1
    assert loss == pytest.approx(total / n, rel=1e-5)


def test_nce_gradient_agrees_with_mle_for_large_k(model, batch):
    # Self-normalised NCE's expected gradient approaches the MLE gradient as k grows (Mnih & Teh 2012),
    # for a model that is self-normalised (log Z ≈ 0).
    with torch.no_grad():
        model.lm_head.weight.mul_(0.01)  # near-uniform logits ≈ 0 → Σ exp(s) ≈ V
    objective = nce_objective(model, 4000, log_z=math.log(V))
    weight = model.lm_head.weight
    g_mle = torch.autograd.grad(mle_loss_tensor(model, batch), weight)[0].flatten()
    torch.manual_seed(0)
    g_nce = torch.autograd.grad(objective(model, batch, 0).loss, weight)[0].flatten()
    assert F.cosine_similarity(g_mle, g_nce, dim=0).item() > 0.9


def test_nce_learns_log_z_only_when_asked(model, batch):
    """learn_log_z: log Z is a parameter with a gradient, and a
    step of SGD moves it; fixed (the default) it gets none and stays where the config put it."""
    fixed = nce_objective(model, 8, log_z=0.5)
    assert not fixed.log_z.requires_grad
    fixed(model, batch, 0).loss.backward()
    assert fixed.log_z.grad is None and fixed.log_z.item() == 0.5
    learned = nce_objective(model, 8, log_z=0.5, learn_log_z=True)
    optimizer = torch.optim.SGD([learned.log_z], lr=0.1)
    torch.manual_seed(0)
    out = learned(model, batch, 0)
    out.loss.backward()
    grad = learned.log_z.grad.item()
    optimizer.step()
    assert grad != 0 and learned.log_z.item() == pytest.approx(0.5 - 0.1 * grad)
    assert out.logs["log_z"].item() == 0.5  # logged before the step
    assert "log_z" in dict(learned.named_parameters())  # so the optimiser of the system sees it


def mle_loss_tensor(model, batch):
    return MLE()(model, batch, 0).loss


def test_nce_full_softmax_nll_is_close_to_mle_after_a_short_run(tmp_path):
    """Validation is the full softmax whatever the objective; NCE at its defaults (k = 1024 shared noise
    words, the output bias from the log unigram) ends within 0.10 nats of MLE after 40 steps on a tiny
    source (0.024 when measured), where its self-normalised scores once put half the mass on rare words."""
    from conftest import TINY, TINY_SYNTHETIC

    from benchmarks.run import run

    short = ["trainer.max_steps=40", "trainer.val_check_interval=40", "data.batch_size=16"]
    short += ["trainer.limit_val_batches=8", "data.val_tokens=4000"]
    nll = {
        name: run(compose([*TINY, *TINY_SYNTHETIC, *short, f"objective={name}"]), tmp_path / name, name, (), False)[
            "metrics"
        ]["val/nll"]
        for name in ("mle", "nce")
    }
    assert abs(nll["nce"] - nll["mle"]) < 0.10, nll
    assert nll["mle"] < 3.2  # it learned (3.03 when measured)


# ---- scheduled sampling ----
class ConstantModel(torch.nn.Module):
    """Always predicts token c: every state is e_c, the output embedding scale·I."""

    def __init__(self, c: int, scale: float = 10.0) -> None:
        super().__init__()
        self.c = c
        self.output_embedding = scale * torch.eye(V)
        self.output_bias = None

    def hidden(self, idx):
        return F.one_hot(torch.full_like(idx, self.c), V).float()

    def forward(self, idx):
        return self.hidden(idx) @ self.output_embedding.T

    def map_logits(self, h, fn):  # as the model's: fn on (rows, V) logits
        return fn(h.flatten(0, -2) @ self.output_embedding.T).view(h.shape[:-1])


def test_scheduled_sampling_replaces_inputs_with_previous_predictions(batch):
    objective = ScheduledSampling(schedule="linear", k=0.0, c=0.0, min_gold=0.0)
    assert objective.gold_probability(100) == 0.0
    inputs = batch[:, :-1]
    mixed = objective.mix_inputs(ConstantModel(7), inputs, step=100)
    assert torch.equal(mixed[:, 0], inputs[:, 0])  # position 0 keeps the gold token
    assert (mixed[:, 1:] == 7).all()


def test_scheduled_sampling_shift_uses_the_prediction_made_at_t_minus_1(model, batch):
    objective = ScheduledSampling(schedule="linear", k=0.0, c=0.0, min_gold=0.0)
    inputs = batch[:, :-1]
    with torch.no_grad():
        predicted = model(inputs).argmax(-1)
    mixed = objective.mix_inputs(model, inputs, step=0)
    assert torch.equal(mixed[:, 1:], predicted[:, :-1])


def test_scheduled_sampling_mix_sample_draws_from_the_model(model, batch):
    """mix=sample: replacements are draws from p(· | x_<t): a model certain of token 7 gives 7 everywhere, an
    uncertain one gives draws that differ from its argmax somewhere, reproducibly under one generator."""
    objective = ScheduledSampling(schedule="linear", k=0.0, c=0.0, min_gold=0.0, mix="sample")
    inputs = batch[:, :-1]
    mixed = objective.mix_inputs(ConstantModel(7, scale=100.0), inputs, step=0)
    assert (mixed[:, 1:] == 7).all() and torch.equal(mixed[:, 0], inputs[:, 0])
    with torch.no_grad():
        argmax = model(inputs).argmax(-1)
    draws = [objective.mix_inputs(model, inputs, 0, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0][:, 1:], argmax[:, :-1])


def test_scheduled_sampling_schedules_and_gold_one_is_mle(model, batch):
    linear = ScheduledSampling(schedule="linear", k=1.0, c=0.01, min_gold=0.1)
    assert [linear.gold_probability(s) for s in (0, 50, 1000)] == pytest.approx([1.0, 0.5, 0.1])
    exponential = ScheduledSampling(schedule="exponential", k=0.99, min_gold=0.0)
    assert exponential.gold_probability(10) == pytest.approx(0.99**10)
    inverse = ScheduledSampling(schedule="inverse_sigmoid", k=10.0, min_gold=0.0)
    assert inverse.gold_probability(20) == pytest.approx(10 / (10 + math.exp(2)))
    always_gold = ScheduledSampling(schedule="linear", k=1.0, c=0.0, min_gold=1.0)
    assert always_gold(model, batch, 5).loss.item() == pytest.approx(mle_loss(model, batch), rel=1e-6)


# ---- sequence-level unlikelihood ----
def test_ngram_repeat_mask_marks_repeats_including_the_last_ngram():
    seq = torch.tensor([[1, 2, 3, 1, 2, 3, 9], [1, 2, 1, 2, 1, 2, 1]])
    mask = ngram_repeat_mask(seq, 2)
    # row 0: bigrams (1,2),(2,3) repeat at positions 3-4 and 4-5; row 1: every bigram from position 2 on repeats
    assert mask[0].tolist() == [False, False, False, True, True, True, False]
    assert mask[1].tolist() == [False, False, True, True, True, True, True]  # the last bigram (2,1) counts
    assert not ngram_repeat_mask(torch.arange(10)[None], 3).any()


def test_unlikelihood_seq_loss_formula(model, batch):
    objective = UnlikelihoodSeq(rate=1.0, prefix_len=4, cont_len=12, ngram=2)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    loss = objective(model, batch, 0).loss.item()
    prefix = batch[:, :4]
    cont = generate(model, prefix, 12, DecodingConfig())
    with torch.no_grad():
        total = 0.0
        for b in range(cont.shape[0]):
            seq = torch.cat([prefix[b], cont[b]])[None]
            mask = ngram_repeat_mask(cont[b : b + 1], 2)[0]
            for t in range(12):
                p = model(seq[:, : 4 + t]).double()[0, -1].softmax(-1)[cont[b, t]].item()
                total += -math.log(1 - p) * mask[t].item()
    assert loss == pytest.approx(total / cont.numel(), rel=1e-4)


# ---- preference ----
def preference(model, **kw):
    objective = Preference(prefix_len=4, cont_len=5, start_step=0, **kw)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    return objective


def test_dpo_is_log_2_when_policy_equals_reference(model, batch):
    objective = preference(model, loss="dpo", lam=1.0)
    out = objective(model, batch, 0)
    assert out.logs["pair_loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert out.loss.item() == pytest.approx(mle_loss(model, batch) + math.log(2), rel=1e-5)


def test_reference_gets_no_gradient_and_does_not_change(model, batch):
    objective = preference(model, loss="dpo", beta=0.5)
    frozen = copy.deepcopy(objective.reference.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        opt.zero_grad()
        objective(model, batch, step).loss.backward()
        opt.step()
    assert all(p.grad is None for p in objective.reference.parameters())
    for key, value in objective.reference.state_dict().items():
        assert torch.equal(value, frozen[key])
    assert not torch.equal(model.lm_head.weight, objective.reference.lm_head.weight)  # the policy moved


def test_pairs_come_from_the_right_spans(model, batch):
    prefix, chosen, rejected = preference(model, rejected="repeat", repeat_span=2).make_pairs(model, batch)
    assert torch.equal(prefix, batch[:, :4]) and torch.equal(chosen, batch[:, 4:9])
    assert torch.equal(rejected, torch.cat([batch[:, 4:6], batch[:, 4:6], batch[:, 4:5]], 1))
    _, _, greedy = preference(model, rejected="greedy").make_pairs(model, batch)
    assert torch.equal(greedy, generate(model, batch[:, :4], 5, DecodingConfig()))


def test_rejected_sample_is_the_models_own_sampled_continuation(model, batch):
    objective = preference(model, rejected="sample")
    torch.manual_seed(5)
    prefix, _, rejected = objective.make_pairs(model, batch)
    torch.manual_seed(5)
    expected = generate(model, batch[:, :4], 5, DecodingConfig(strategy="sample"))
    assert torch.equal(rejected, expected)
    greedy = generate(model, batch[:, :4], 5, DecodingConfig(strategy="greedy"))
    assert not torch.equal(rejected, greedy)  # an untrained model's draws are not its argmax


@pytest.mark.parametrize("loss_name", ["dpo", "ipo", "simpo", "orpo"])
def test_pairwise_formulas(model, batch, loss_name):
    objective = preference(model, loss=loss_name, beta=0.7, gamma=0.3, rejected="repeat")
    with torch.no_grad():
        for p in model.parameters():  # policy differs from the reference snapshot
            p.add_(0.05 * torch.randn_like(p))
    if objective.uses_reference:
        objective.take_reference_snapshot(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.3)
    prefix, chosen, rejected = objective.make_pairs(model, batch)

    def seq_logps(m, cont):  # loop over continuation tokens
        out = []
        for b in range(cont.shape[0]):
            total = []
            for t in range(cont.shape[1]):
                context = torch.cat([prefix[b], cont[b, :t]])[None]
                total.append(m(context).double()[0, -1].log_softmax(-1)[cont[b, t]].item())
            out.append(total)
        return torch.tensor(out, dtype=torch.float64)

    with torch.no_grad():
        pw, pl = seq_logps(model, chosen), seq_logps(model, rejected)
        reference = objective.reference if objective.uses_reference else model
        rw, rl = seq_logps(reference, chosen), seq_logps(reference, rejected)
    beta, gamma = 0.7, 0.3
    h = (pw.sum(1) - pl.sum(1)) - (rw.sum(1) - rl.sum(1))
    log_odds = lambda lp: lp.mean(1) - torch.log1p(-lp.mean(1).exp())  # noqa: E731
    expected = (
        {
            "dpo": -F.logsigmoid(beta * h),
            "ipo": (h - 1 / (2 * beta)) ** 2,
            "simpo": -F.logsigmoid(beta * (pw.mean(1) - pl.mean(1)) - gamma),
            "orpo": -F.logsigmoid(log_odds(pw) - log_odds(pl)),
        }[loss_name]
        .mean()
        .item()
    )
    assert objective(model, batch, 0).logs["pair_loss"].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_preference_is_mle_before_start_step(model, batch):
    objective = Preference(prefix_len=4, cont_len=5, start_step=10)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    assert objective(model, batch, 9).loss.item() == pytest.approx(mle_loss(model, batch))
    assert not bool(objective.reference_taken)


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
    }


def test_sequence_unlikelihood_closed_form_is_autograds():
    from objectives.unlikelihood_seq import repeat_loss, repeat_loss_and_grad

    g = torch.Generator().manual_seed(5)
    z = torch.randn(12, 37, generator=g, dtype=torch.float64) * 3
    z[0, :5] = 12.0
    tokens, mask = torch.randint(0, 37, (12,), generator=g), torch.rand(12, generator=g) < 0.5
    tokens[0] = 0  # the confident row's own token: 1 − p is clamped there
    closed = repeat_loss_and_grad(z.clone(), tokens, mask)
    leaf = z.clone().requires_grad_()
    auto = repeat_loss(leaf, tokens, mask)
    (auto_grad,) = torch.autograd.grad(auto.loss.sum(), leaf)
    assert torch.allclose(closed.grad, auto_grad, atol=1e-10)
    assert torch.allclose(closed.loss, auto.loss.detach(), atol=1e-12)


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


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_chunked_head_matches_full_logits(model, batch, bf16, monkeypatch):
    """Losses, and gradients for a non-uniform weighting of them (the output bias's too), equal those
    through model(x)."""
    import lit_modules.head as chunked

    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 3 * V)  # several chunks, the last one partial
    model.init_output_bias(torch.arange(V, dtype=torch.float64) ** 2)  # logits h·Eᵀ + b, b far from 0
    inputs, targets = batch[:, :-1], batch[:, 1:]
    weights = torch.rand(targets.shape, generator=torch.Generator().manual_seed(1))

    def grads(losses_of):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = losses_of()
        (losses * weights).sum().backward()
        return losses.detach(), [p.grad.clone() for p in model.parameters()]

    full, full_grads = grads(lambda: full_logits_nll(model(inputs), targets))
    fused, fused_grads = grads(lambda: model.nll(model.hidden(inputs), targets))
    tol = 1e-2 if bf16 else 1e-5
    assert torch.allclose(full, fused, rtol=tol, atol=tol)
    for a, b in zip(full_grads, fused_grads, strict=True):
        assert (a - b).norm() <= tol * a.norm() + 1e-8


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["mle", "entropy_penalty", "label_smoothing", "tailr", "unlikelihood_token"])
def test_compiled_chunk_loss_matches_eager(name, bf16, monkeypatch):
    """trainer.compile: the per-chunk loss compiled in the gradient's own memory gives the eager loss,
    logs and gradients (aot_eager: the graph capture and functionalisation, without inductor's C++ build)."""
    import lit_modules.head as chunked
    import lit_modules.kernels

    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 3 * V)  # eager: several chunks; compiled: one for the batch
    # the same attention both ways (compiled blocks keep SDPA): what differs is the loss, eager or compiled
    monkeypatch.setattr(lit_modules.kernels._PairedFlashAttention, "usable", staticmethod(lambda q: False))
    objective = {
        "mle": MLE(),
        "entropy_penalty": EntropyPenalty(lam=0.5),
        "label_smoothing": LabelSmoothing(eps=0.1),
        "tailr": TaiLr(gamma=0.4),
        "unlikelihood_token": UnlikelihoodToken(alpha=0.8),
    }[name]
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(2))
    results = []
    for compile_model in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=V, context=32, n_layer=1, n_head=2, d_model=16))
        if compile_model:
            model.compile_blocks(backend="aot_eager")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = objective(model, ids, 0)
        out.loss.backward()
        results.append((out, [p.grad for p in model.parameters()], len(model._compiled_losses)))
    (eager, eager_grads, _), (compiled, compiled_grads, n_compiled) = results
    assert n_compiled == 1  # the compiled path ran
    torch.testing.assert_close(compiled.loss, eager.loss)
    for key, value in eager.logs.items():
        torch.testing.assert_close(compiled.logs[key], value)
    for a, b in zip(eager_grads, compiled_grads, strict=True):
        torch.testing.assert_close(a, b)
