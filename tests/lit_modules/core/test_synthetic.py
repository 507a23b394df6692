import itertools
import math

import torch

from lit_modules.core.synthetic import HMMSource, ShiftedSource, SourceConfig, word

SMALL = SourceConfig(vocab_size=6, n_states=3, succ=2, emit=3, zipf_s=1.0, smoothing=0.01, seed=3)


def joint_probability(src: HMMSource, tokens: list[int]) -> float:
    """P(x_0..x_{n-1}) by summing over every hidden path (brute force)."""
    total = 0.0
    K = src.cfg.n_states
    for path in itertools.product(range(K), repeat=len(tokens)):
        p = src.initial[path[0]].item()
        for t, s in enumerate(path):
            p *= src.emissions[s, tokens[t]].item()
            if t + 1 < len(path):
                p *= src.transitions[s, path[t + 1]].item()
        total += p
    return total


def test_conditionals_match_brute_force():
    src = HMMSource(SMALL)
    tokens = src.sample(1, 5, seed=0)[0].tolist()
    logp = src.log_conditionals(torch.tensor([tokens]), dtype=torch.float64)[0]
    for t in range(len(tokens)):
        expected = joint_probability(src, tokens[: t + 1]) / (joint_probability(src, tokens[:t]) if t else 1.0)
        assert math.isclose(logp[t, tokens[t]].exp().item(), expected, rel_tol=1e-9)


def test_conditionals_sum_to_one():
    src = HMMSource(SourceConfig(vocab_size=128, n_states=16, emit=8, seed=1))
    tokens = src.sample(4, 20, seed=0)
    probs = src.log_conditionals(tokens, dtype=torch.float64).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 20, dtype=torch.float64))
    assert (probs > 0).all()  # smoothing keeps full support: both KLs are finite


def test_samples_agree_with_conditionals():
    # The empirical NLL of the source's own samples estimates its conditional entropy.
    src = HMMSource(SourceConfig(vocab_size=256, n_states=32, emit=12, seed=2))
    tokens = src.sample(400, 40, seed=7)
    logp = src.log_conditionals(tokens, dtype=torch.float64)
    nll = -logp.gather(-1, tokens[..., None]).mean().item()
    entropy = src.conditional_entropy(tokens).mean().item()
    assert abs(nll - entropy) < 0.03 * entropy


def test_language_like():
    src = HMMSource(SourceConfig())  # the default preset
    tokens = src.sample(200, 129, seed=0)
    rate = src.conditional_entropy(tokens)[:, 20:].mean().item()
    assert rate < 0.8 * src.unigram_entropy()  # context matters
    counts = torch.bincount(tokens.flatten(), minlength=src.cfg.vocab_size).double().sort(descending=True).values
    ranks = torch.arange(1, 201, dtype=torch.float64).log()
    slope = (
        torch.linalg.lstsq(torch.stack([ranks, torch.ones(200, dtype=torch.float64)], 1), counts[:200].log()[:, None])
        .solution[0]
        .item()
    )
    assert -1.6 < slope < -0.5  # Zipf-like


def test_seeded():
    a, b = HMMSource(SMALL), HMMSource(SMALL)
    assert torch.equal(a.sample(5, 10, seed=1), b.sample(5, 10, seed=1))
    assert not torch.equal(a.sample(5, 10, seed=1), a.sample(5, 10, seed=2))
    other = HMMSource(SourceConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not torch.equal(a.emissions, other.emissions)


def test_pseudo_words_are_unique_and_short_for_frequent_ids():
    words = [word(i) for i in range(4096)]
    assert len(set(words)) == 4096
    assert len(word(0)) == 2 and len(word(4000)) == 4


def test_a_shifted_source_mixes_every_row_and_samples_what_it_predicts():
    import pytest

    from lit_modules.core.errors import ConfigError

    config = SourceConfig(vocab_size=256, n_states=32, emit=12, seed=2)
    base, other = HMMSource(config), HMMSource(SourceConfig(vocab_size=256, n_states=32, emit=12, seed=3))
    tokens = base.sample(3, 10, seed=0)
    for rho, same_as in ((0.0, base), (1.0, other)):
        shifted = ShiftedSource(base, rho, other_seed=3)
        torch.testing.assert_close(
            shifted.log_conditionals(tokens, torch.float64), same_as.log_conditionals(tokens, torch.float64)
        )
    half = ShiftedSource(base, 0.5, other_seed=3)
    torch.testing.assert_close(half.emissions, 0.5 * (base.emissions + other.emissions))
    torch.testing.assert_close(half.transitions, 0.5 * (base.transitions + other.transitions))
    assert half.fingerprint() != base.fingerprint() and half.fingerprint().endswith("-shift0.5-to3")
    # its samples' NLL under its exact conditionals estimates their conditional entropy (and not the base's)
    sample = half.sample(400, 40, seed=7)
    nll = -half.log_conditionals(sample, torch.float64).gather(-1, sample[..., None]).mean().item()
    assert abs(nll - half.conditional_entropy(sample).mean().item()) < 0.03 * nll
    base_nll = -base.log_conditionals(sample, torch.float64).gather(-1, sample[..., None]).mean().item()
    assert base_nll > nll + 0.3
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ConfigError, match="rho"):
            ShiftedSource(base, bad, other_seed=3)


def test_target_log_probs_are_the_conditionals_at_the_tokens():
    # the filter's normaliser, without the (B, T, V) table: what the frontier, the continuations' true NLL and
    # MRT's oracle cost read; the same values on a shifted source, whose tables are its own
    src = HMMSource(SourceConfig(vocab_size=128, n_states=16, emit=8, seed=1))
    for source in (src, ShiftedSource(src, 0.5, other_seed=2)):
        tokens = source.sample(5, 30, seed=3)
        table = source.log_conditionals(tokens, dtype=torch.float64)
        got = source.target_log_probs(tokens)
        assert got.dtype == torch.float64 and got.shape == (5, 30)
        torch.testing.assert_close(got, table.gather(-1, tokens[..., None]).squeeze(-1), rtol=0, atol=1e-12)
