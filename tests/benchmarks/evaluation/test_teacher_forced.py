"""Teacher-forced metrics against torchmetrics; ground truth with the source itself as the model; the source's
conditionals computed once per test split."""

import pytest
import torch
import torchmetrics

from benchmarks.evaluation.generation import continuation_stats
from benchmarks.evaluation.teacher_forced import teacher_forced
from lit_modules.core.head import map_logits
from lit_modules.core.model import GPT, GPTConfig
from lit_modules.core.synthetic import HMMSource, SourceConfig


class LogitsModel(torch.nn.Module):
    """Returns fixed logits (for metric checks) or a source's exact log-conditionals."""

    def __init__(self, vocab_size, logits=None, source=None):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=vocab_size, context=256)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.logits, self.source = logits, source
        self.calls = 0

    def hidden(self, idx):  # the logits stand in for the states; map_logits multiplies them by I
        return self(idx)

    def map_logits(self, h, fn, *per_token, rows=None):
        return map_logits(torch.eye(h.shape[-1]), None, h, fn, per_token, rows)

    def forward(self, idx):
        if self.source is not None:
            full = torch.cat([idx, idx[:, -1:]], dim=1)  # conditionals of positions 1..T given the prefix
            return self.source.log_conditionals(full)[:, 1:]
        out = self.logits[self.calls : self.calls + idx.shape[0], : idx.shape[1]]
        self.calls += idx.shape[0]
        return out


def test_ppl_and_ece_agree_with_torchmetrics():
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 11, (6, 9), generator=g)
    logits = 2 * torch.randn(6, 8, 11, generator=g)
    tf = teacher_forced(LogitsModel(11, logits), blocks, batch_size=4, bf16=False)
    targets = blocks[:, 1:]
    ppl = torchmetrics.text.Perplexity()(logits, targets).item()
    assert tf.metrics["tf/ppl"] == pytest.approx(ppl, rel=1e-5)
    ece = torchmetrics.functional.classification.multiclass_calibration_error(
        logits.softmax(-1).flatten(0, 1), targets.flatten(), num_classes=11, n_bins=15
    ).item()
    assert tf.metrics["tf/ece"] == pytest.approx(ece, rel=1e-5)
    bins = tf.reliability  # the bins behind the reliability diagram give the same ECE
    n = sum(bins["count"])
    from_bins = sum(
        c / n * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
    )
    assert from_bins == pytest.approx(ece, rel=1e-4)
    argmax = logits.argmax(-1)
    assert tf.metrics["tf/acc"] == pytest.approx((argmax == targets).double().mean().item())
    assert tf.metrics["tf/uniq"] == argmax.unique().numel()
    assert tf.metrics["tf/abs_log_z"] == pytest.approx(logits.double().logsumexp(-1).abs().mean().item(), rel=1e-5)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, context=48, n_layer=2, n_head=2, d_model=32)).eval()


def test_source_as_model_has_zero_kl_and_sample_nll_near_the_entropy_rate():
    source = HMMSource(SourceConfig(vocab_size=128, n_states=16, emit=8, seed=5))
    blocks = source.sample(64, 33, seed=1)
    oracle = LogitsModel(128, source=source)
    tf = teacher_forced(oracle, blocks, batch_size=32, bf16=False, source=source)
    assert tf.metrics["gt/forward_kl"] == pytest.approx(0.0, abs=1e-5)
    assert tf.metrics["gt/reverse_kl"] == pytest.approx(0.0, abs=1e-5)
    assert tf.metrics["tf/nll"] == pytest.approx(tf.metrics["gt/entropy_rate"], rel=0.05)
    samples = source.sample(400, 40, seed=2)
    stats = continuation_stats(oracle, samples[:, :8], samples[:, 8:], 100, False, source)
    true_entropy = source.conditional_entropy(samples)[:, 8:].mean().item()
    assert stats["sample_nll"].mean().item() == pytest.approx(true_entropy, rel=0.03)
    assert stats["entropy"].mean().item() == pytest.approx(true_entropy, rel=0.01)


def test_kl_is_never_negative(model):
    source = HMMSource(SourceConfig(vocab_size=40, n_states=8, emit=6, seed=1))
    tf = teacher_forced(model, source.sample(8, 20, seed=0), batch_size=4, bf16=False, source=source)
    assert tf.metrics["gt/forward_kl"] > 0 and tf.metrics["gt/reverse_kl"] > 0


def test_exact_conditionals_of_a_test_split_are_computed_once_per_process(model, monkeypatch):
    """A suite evaluates every run on one test split: the source's conditionals are computed for the first
    run only, and the metrics are the same to the bit either way."""
    import benchmarks.evaluation.teacher_forced as evaluate

    source = HMMSource(SourceConfig(vocab_size=40, n_states=8, emit=6, seed=1))
    blocks = source.sample(8, 20, seed=0)
    evaluate._TRUTH_CACHE.clear()
    calls = []
    original = source.log_conditionals
    monkeypatch.setattr(source, "log_conditionals", lambda tokens: calls.append(1) or original(tokens))
    first = teacher_forced(model, blocks, batch_size=4, bf16=False, source=source)
    assert len(calls) == 2  # two batches
    second = teacher_forced(model, blocks, batch_size=4, bf16=False, source=source)
    assert len(calls) == 2 and second.metrics == first.metrics
    other = source.sample(8, 20, seed=1)  # another split (a shifted one): computed anew, both kept
    teacher_forced(model, other, batch_size=4, bf16=False, source=source)
    teacher_forced(model, blocks, batch_size=4, bf16=False, source=source)
    assert len(calls) == 4 and len(evaluate._TRUTH_CACHE) == 2
    # beyond the cache's bytes the least recently used split goes first ("other": "blocks" was read after it)
    monkeypatch.setattr(evaluate, "TRUTH_CACHE_BYTES", 3 * 4 * 19 * 40 * 4)  # three batches' tables
    third = source.sample(4, 20, seed=2)
    teacher_forced(model, third, batch_size=4, bf16=False, source=source)
    kept = [key[2] for key in evaluate._TRUTH_CACHE]
    assert len(calls) == 5 and kept == [hash(blocks.numpy().tobytes()), hash(third.numpy().tobytes())]  # not "other"


def test_bf16_metrics_come_from_the_heads_fp32_logits(model):
    """Under bf16 the teacher-forced metrics read the chunked head's logits (the bias added in fp32, as in
    training), not bf16 logits: they equal the metrics of fp64 logits of the same states within bf16's
    precision, with a bias far from 0 (bf16 logits, whose bias is rounded to 0.06, are 3-100x further off)."""
    model.init_output_bias(torch.arange(40, dtype=torch.float64) ** 3)  # log-unigram biases down to -13
    blocks = torch.randint(0, 40, (6, 17), generator=torch.Generator().manual_seed(3))
    tf = teacher_forced(model, blocks, batch_size=4, bf16=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = model.hidden(blocks[:, :-1])
    z = h.double() @ model.output_embedding.double().T + model.output_bias.double()
    logp = z.log_softmax(-1)
    nll = -logp.gather(-1, blocks[:, 1:, None]).mean().item()
    entropy = -(logp.exp() * logp).sum(-1).mean().item()
    assert tf.metrics["tf/nll"] == pytest.approx(nll, abs=1.5e-4)
    assert tf.metrics["tf/entropy"] == pytest.approx(entropy, abs=1.5e-4)
    assert tf.metrics["tf/abs_log_z"] == pytest.approx(z.logsumexp(-1).abs().mean().item(), abs=2e-5)


def test_frequency_buckets_cut_the_train_mass_at_half_and_nine_tenths():
    from benchmarks.evaluation.teacher_forced import frequency_buckets

    # shares 0.40, 0.20, 0.15, 0.15, 0.06, 0.04, 0 of the train tokens; the mass before each type: 0, .40, .60,
    # .75, .90, .96, 1.0 -> frequent, frequent, middle, middle, rare, rare, rare (never seen)
    counts = torch.tensor([15.0, 4.0, 0.0, 40.0, 20.0, 15.0, 6.0])
    assert frequency_buckets(counts).tolist() == [1, 2, 2, 0, 0, 1, 2]


def test_nll_and_ece_by_frequency_bucket_are_those_of_the_buckets_tokens():
    from benchmarks.evaluation.teacher_forced import frequency_buckets

    g = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 11, (6, 9), generator=g)
    logits = 2 * torch.randn(6, 8, 11, generator=g)
    counts = torch.arange(11, 0, -1).double() ** 2  # token 0 the most frequent
    tf = teacher_forced(LogitsModel(11, logits), blocks, batch_size=4, bf16=False, train_counts=counts)
    targets = blocks[:, 1:].flatten()
    logp = logits.flatten(0, 1).log_softmax(-1)
    bucket = frequency_buckets(counts)[targets]
    for index, name in enumerate(("frequent", "middle", "rare")):
        mask = bucket == index
        assert mask.any()
        nll = -logp[mask].gather(1, targets[mask, None]).mean().item()
        assert tf.metrics[f"tf/nll_{name}"] == pytest.approx(nll, rel=1e-5)
        ece = torchmetrics.functional.classification.multiclass_calibration_error(
            logp[mask].exp(), targets[mask], num_classes=11, n_bins=15
        ).item()
        assert tf.metrics[f"tf/ece_{name}"] == pytest.approx(ece, rel=1e-5)
    assert "tf/nll_rare" not in teacher_forced(LogitsModel(11, logits), blocks, batch_size=4, bf16=False).metrics
