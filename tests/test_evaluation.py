"""Metrics on hand-made sequences with known answers; agreement with torchmetrics; decoding
identities; ground truth with the source itself as the model; score.py."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torchmetrics
from conftest import ROOT

from benchmarks.evaluate import continuation_stats, teacher_forced
from benchmarks.metrics import (
    NgramIndex,
    copy_share,
    distinct_n,
    ends_in_loop,
    in_previous_targets,
    repeating_tail,
    self_bleu,
    seq_rep_n,
    uniq_seq,
    unique_ngram_share,
    zipf_coefficient,
)
from lit_modules.decoding import DecodingConfig, filter_logits, generate
from lit_modules.model import GPT, GPTConfig
from lit_modules.synthetic import HMMSource, SourceConfig

# ---- text metrics ----


def test_repeating_one_4gram():
    seq = torch.tensor([[1, 2, 3, 4] * 5])  # 17 4-grams, 4 distinct
    assert seq_rep_n(seq, 4) == pytest.approx(1 - 4 / 17)
    assert seq_rep_n(seq, 1) == pytest.approx(1 - 4 / 20)
    assert distinct_n(seq, 4) == pytest.approx(4 / 20)
    assert unique_ngram_share(seq, 4) == pytest.approx(4 / 17)
    assert uniq_seq(seq) == 4
    assert repeating_tail(seq).tolist() == [True]
    assert ends_in_loop(seq).tolist() == [True]


def test_loop_rate_counts_a_short_loop_that_the_repetition_rule_does_not():
    seq = torch.tensor([list(range(10, 50)) + [3, 4] * 28])  # a 2-token loop, 28 times: under degen's 51
    assert repeating_tail(seq).tolist() == [False]
    assert ends_in_loop(seq).tolist() == [True]
    assert not ends_in_loop(torch.arange(60)[None]).any()


def test_all_distinct_tokens():
    seqs = torch.arange(60).view(2, 30)
    for n in range(1, 5):
        assert seq_rep_n(seqs, n) == 0.0
        assert unique_ngram_share(seqs, n) == 1.0
        assert distinct_n(seqs, n) == pytest.approx((31 - n) / 30)
    assert uniq_seq(seqs) == 60
    assert not repeating_tail(seqs).any()


def test_distinct_pools_and_seq_rep_averages():
    seqs = torch.tensor([[5, 6, 5, 6], [5, 6, 7, 8]])  # bigrams: {56,65,56} and {56,67,78}
    assert seq_rep_n(seqs, 2) == pytest.approx(((1 - 2 / 3) + 0.0) / 2)
    assert unique_ngram_share(seqs, 2) == pytest.approx(4 / 6)


def test_zipf_recovers_the_exponent():
    counts = [round(100_000 * r**-1.3) for r in range(1, 51)]
    seqs = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])[None]
    assert zipf_coefficient(seqs) == pytest.approx(1.3, abs=0.01)


def test_self_bleu():
    same = torch.tensor([[1, 2, 3, 4, 5, 6]] * 3)
    assert self_bleu(same) == pytest.approx(1.0)
    distinct = torch.arange(18).view(3, 6)
    assert self_bleu(distinct) == 0.0
    # hand-computed: hypothesis [1,2,3,4,9] against reference [1,2,3,4,5]: p1..p4 = 4/5, 3/4, 2/3, 1/2
    pair = torch.tensor([[1, 2, 3, 4, 9], [1, 2, 3, 4, 5]])
    assert self_bleu(pair) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)


def test_copy_rate():
    train = torch.arange(100).view(4, 25)
    index = NgramIndex(train, 8)
    copied = train[1:3, 3:20]  # verbatim from the training data
    assert copy_share(copied, index).tolist() == [1.0, 1.0]
    novel = torch.arange(100, 120)[None]
    assert copy_share(novel, index).tolist() == [0.0]
    crossing = torch.arange(20, 35)[None]  # spans two training blocks: 8-grams crossing 24|25 are new
    assert 0 < copy_share(crossing, index).item() < 1


def test_rep_in_previous_targets():
    targets = torch.tensor([[2, 3, 4, 5, 6]])  # the block's first input token (1) is no earlier target
    predictions = torch.tensor([[1, 1, 9, 2, 3]])
    assert in_previous_targets(predictions, targets, 128).tolist() == [[False, False, False, True, True]]
    assert in_previous_targets(predictions, targets, 2).tolist() == [[False, False, False, False, False]]


# ---- teacher-forced metrics against torchmetrics ----


class LogitsModel(torch.nn.Module):
    """Returns fixed logits (for metric checks) or a source's exact log-conditionals."""

    def __init__(self, vocab_size, logits=None, source=None):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=vocab_size, context=256)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.logits, self.source = logits, source
        self.calls = 0

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


# ---- decoding identities ----


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, context=48, n_layer=2, n_head=2, d_model=32)).eval()


def test_decoding_identities_equal_greedy(model):
    prompt = torch.randint(0, 40, (3, 6), generator=torch.Generator().manual_seed(2))
    greedy = generate(model, prompt, 16, DecodingConfig(strategy="greedy"))
    g = torch.Generator().manual_seed(0)
    same = {
        "beam size 1": DecodingConfig(strategy="beam", beam_size=1),
        "top_k 1": DecodingConfig(strategy="sample", top_k=1),
        "top_p -> 0": DecodingConfig(strategy="sample", top_p=1e-9),
        "contrastive alpha 0": DecodingConfig(strategy="contrastive", top_k=5, penalty_alpha=0.0),
    }
    for name, cfg in same.items():
        assert torch.equal(generate(model, prompt, 16, cfg, g), greedy), name


def test_typical_filter_keeps_the_most_typical_tokens():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    entropy = -(probs * probs.log()).sum().item()  # 1.1437
    surprise_gap = [abs(-math.log(p) - entropy) for p in probs[0].tolist()]  # 0.45, 0.06, 0.75, 1.85
    assert sorted(range(4), key=surprise_gap.__getitem__) == [1, 0, 2, 3]
    kept = filter_logits(probs.log(), DecodingConfig(strategy="sample", typical_p=0.7)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.3 (most typical), then 0.5 reaches 0.7
    kept = filter_logits(probs.log(), DecodingConfig(strategy="sample", typical_p=0.2)).isfinite()
    assert kept.tolist() == [[False, True, False, False]]


def sequence_logprob(model, prompt, cont):
    with torch.no_grad():
        logp = model(torch.cat([prompt, cont], 1)[:, :-1]).log_softmax(-1)[:, prompt.shape[1] - 1 :]
    return logp.gather(-1, cont[..., None]).squeeze(-1).sum(-1)


def test_beam_search_finds_a_sequence_at_least_as_probable_as_greedy(model):
    prompt = torch.randint(0, 40, (4, 5), generator=torch.Generator().manual_seed(3))
    greedy = generate(model, prompt, 10, DecodingConfig(strategy="greedy"))
    beam = generate(model, prompt, 10, DecodingConfig(strategy="beam", beam_size=4))
    assert (sequence_logprob(model, prompt, beam) >= sequence_logprob(model, prompt, greedy) - 1e-5).all()


def test_contrastive_search_penalises_repetition(model):
    prompt = torch.randint(0, 40, (4, 5), generator=torch.Generator().manual_seed(4))
    greedy = generate(model, prompt, 30, DecodingConfig(strategy="greedy"))
    contrastive = generate(model, prompt, 30, DecodingConfig(strategy="contrastive", top_k=8, penalty_alpha=0.9))
    assert not torch.equal(contrastive, greedy)
    assert seq_rep_n(contrastive, 2) <= seq_rep_n(greedy, 2)


def test_sampling_frequencies_match_the_model(model):
    n = 20_000
    prompt = torch.randint(0, 40, (1, 5), generator=torch.Generator().manual_seed(5)).expand(n, 5)
    with torch.no_grad():
        probs = model(prompt[:1])[0, -1].double().softmax(-1)
    for cfg in (DecodingConfig(strategy="sample"), DecodingConfig(strategy="sample", top_k=3)):
        drawn = generate(model, prompt, 1, cfg, torch.Generator().manual_seed(6))[:, 0]
        counts = torch.bincount(drawn, minlength=40).double()
        expected = filter_logits(probs.log()[None], cfg)[0].softmax(-1) * n
        keep = expected > 0
        assert counts[~keep].sum() == 0
        chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
        df = int(keep.sum()) - 1
        assert chi2 < df + 5 * math.sqrt(2 * df)  # far in the tail of chi²(df)


# ---- ground truth ----


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
    import benchmarks.evaluate as evaluate

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
    other = source.sample(8, 20, seed=1)  # another split: computed anew, the old entry dropped
    teacher_forced(model, other, batch_size=4, bf16=False, source=source)
    assert len(calls) == 4 and len(evaluate._TRUTH_CACHE) == 1


# ---- score.py ----


def test_score_malformed_line_names_its_number(tmp_path):
    path = tmp_path / "samples.jsonl"
    good = json.dumps({"decoding": "greedy", "continuation": [1, 2, 3]})
    path.write_text(f"{good}\n{good}\n{{not json\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "score.py"), str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f'error: {path}:3: malformed sample; expected a JSON object with "decoding" (a name), "continuation" (a '
        "list of at least 2 token ids, integers in [0, 2^31)) and numbers for entropy, sample_nll, copy_rate_8 "
        "where present"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"continuation": [1, -2, 3]},
        {"continuation": [1, True, 3]},
        {"continuation": []},
        {"continuation": [5]},
        {"continuation": [1, 10**30]},
        {"continuation": [1, 2, 3], "entropy": "high"},
    ],
    ids=["negative id", "boolean id", "empty", "one token", "huge id", "text entropy"],
)
def test_score_refuses_bad_ids_and_values_in_one_line(bad, tmp_path, capsys):
    from benchmarks.score import main

    path = tmp_path / "samples.jsonl"
    path.write_text(
        json.dumps({"decoding": "greedy", "continuation": [1, 2, 3]})
        + "\n"
        + json.dumps({"decoding": "greedy", **bad})
        + "\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {path}:2: malformed sample")


def test_score_json_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    from benchmarks.score import main

    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"decoding": "greedy", "continuation": [1, 2, 3, 1]}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--json", str(path / "s.json")])  # under a file: no directory can be made there
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --json {path / 's.json'}: cannot write it (")
    assert len(err.splitlines()) == 1
