"""Decoding on the KV cache: equal to recomputation, the strategies' identities and filters, seeded sampling that
follows the model."""

import math

import pytest
import torch

from benchmarks.evaluation.metrics import seq_rep_n
from lit_modules.core.decoding import DecodingConfig, filter_logits, generate
from lit_modules.core.model import GPT, GPTConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, context=40, n_layer=2, n_head=2, d_model=32)).eval()


def greedy_without_cache(model, prompt, n):
    seq = prompt
    for _ in range(n):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompt.shape[1] :]


def test_greedy_with_cache_equals_full_recompute(model):
    prompt = torch.randint(0, 50, (3, 6))
    out = generate(model, prompt, 20, DecodingConfig(strategy="greedy"))
    assert out.shape == (3, 20)
    assert torch.equal(out, greedy_without_cache(model, prompt, 20))


def test_top_k_1_and_tiny_top_p_equal_greedy(model):
    prompt = torch.randint(0, 50, (4, 5))
    greedy = generate(model, prompt, 15, DecodingConfig(strategy="greedy"))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, prompt, 15, DecodingConfig(strategy="sample", top_k=1), g), greedy)
    assert torch.equal(generate(model, prompt, 15, DecodingConfig(strategy="sample", top_p=1e-6), g), greedy)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits(probs.log(), DecodingConfig(strategy="sample", top_p=0.8)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    kept = filter_logits(probs.log(), DecodingConfig(strategy="sample", top_p=0.81)).isfinite()
    assert kept.tolist() == [[True, True, True, False]]


def test_sampling_is_seeded(model):
    prompt = torch.randint(0, 50, (2, 4))
    cfg = DecodingConfig(strategy="sample", top_p=0.9)
    a = generate(model, prompt, 10, cfg, torch.Generator().manual_seed(1))
    b = generate(model, prompt, 10, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_too_long_is_an_error(model):
    with pytest.raises(ValueError, match="longer than model.context=40"):
        generate(model, torch.zeros(1, 30, dtype=torch.long), 11, DecodingConfig())


def test_bad_decoding_config():
    with pytest.raises(ValueError, match="decoding 'x': strategy='beamish' is not allowed"):
        DecodingConfig(name="x", strategy="beamish")
    with pytest.raises(ValueError, match="top_p=1.5 is not allowed"):
        DecodingConfig(strategy="sample", top_p=1.5)


@pytest.mark.parametrize(
    "cfg, tries",
    [
        (DecodingConfig(strategy="sample"), 32),
        (DecodingConfig(strategy="sample", top_p=0.6), 32),  # the rejection draw
        (DecodingConfig(strategy="sample", top_p=0.6), 0),  # the exact sort-based fallback
        (DecodingConfig(strategy="sample", top_k=20, top_p=0.7, temperature=0.8), 32),
        (DecodingConfig(strategy="sample", typical_p=0.5), 32),
        (DecodingConfig(strategy="sample", min_p=0.1), 32),
        (DecodingConfig(strategy="sample", eta=0.02, temperature=1.3), 32),
        (DecodingConfig(strategy="sample", top_nsigma=1.0), 32),
    ],
    ids=["plain", "top_p", "top_p-fallback", "top_k-top_p-temperature", "typical", "min_p", "eta", "top_nsigma"],
)
def test_sample_token_follows_the_filtered_distribution(cfg, tries, monkeypatch):
    """Frequencies of sample_token's draws match filter_logits's distribution (chi-square)."""
    import math

    import lit_modules.core.decoding as decoding

    monkeypatch.setattr(decoding, "NUCLEUS_TRIES", tries)
    V, n = 60, 40_000
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(2)) * 1.5
    drawn = decoding.sample_token(logits.expand(n, V), cfg, torch.Generator().manual_seed(3))
    counts = torch.bincount(drawn, minlength=V).double()
    expected = filter_logits(logits.double(), cfg)[0].softmax(-1) * n
    keep = expected > 0
    assert counts[~keep].sum() == 0  # nothing outside the filtered support
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    df = int(keep.sum()) - 1
    assert chi2 < df + 5 * math.sqrt(2 * df)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="oneDNN bf16 not supported here")
def test_prepacked_decoding_weights_match_autocast(monkeypatch):
    from torch import nn

    from lit_modules.core import kernels

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, context=40, n_layer=2, n_head=4, d_model=256)).eval()  # MLP K = 1024
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 4 + 1  # qkv, proj, fc, proj per block, the head

    def packed(m):
        return "forward" in vars(m)  # the instance's own forward: the prepacked product

    for rows in (16, 128):  # at 128 rows oneDNN sums K = 1024 in another order than for the plain weight
        prompt = torch.randint(0, 300, (rows, 1))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            plain = model(prompt)
            with kernels.prepacked_weights(model, rows=rows):
                assert all(packed(m) for m in linears)
                prepacked = model(prompt)
            with kernels.plain_kernels(), kernels.prepacked_weights(model, rows=rows):  # the switch: off
                assert not any(packed(m) for m in linears)
        assert not any(packed(m) for m in linears)  # released on exit
        assert prepacked.dtype == plain.dtype == torch.bfloat16
        # the same bf16 products summed in fp32: at most a rounding apart (one bf16 step is 2^-7 relative)
        torch.testing.assert_close(prepacked.float(), plain.float(), rtol=2**-6, atol=1e-2)
    with kernels.prepacked_weights(model, rows=4):  # with gradients, or without autocast: untouched
        assert not any(packed(m) for m in linears)

    packs = []
    real = kernels._packed_forward
    monkeypatch.setattr(kernels, "_packed_forward", lambda w, b: packs.append(w) or real(w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        generate(model, torch.randint(0, 300, (3, 4)), 5, DecodingConfig(strategy="greedy"))
    assert len(packs) == len(linears)  # generate packs every linear layer
    generate(model, torch.randint(0, 300, (3, 4)), 5, DecodingConfig(strategy="greedy"))  # fp32: no packing
    assert len(packs) == len(linears)


def test_decoding_identities_equal_greedy(model):
    prompt = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(2))
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
    prompt = torch.randint(0, 50, (4, 5), generator=torch.Generator().manual_seed(3))
    greedy = generate(model, prompt, 10, DecodingConfig(strategy="greedy"))
    beam = generate(model, prompt, 10, DecodingConfig(strategy="beam", beam_size=4))
    assert (sequence_logprob(model, prompt, beam) >= sequence_logprob(model, prompt, greedy) - 1e-5).all()


def test_contrastive_search_penalises_repetition(model):
    prompt = torch.randint(0, 50, (4, 5), generator=torch.Generator().manual_seed(4))
    greedy = generate(model, prompt, 30, DecodingConfig(strategy="greedy"))
    contrastive = generate(model, prompt, 30, DecodingConfig(strategy="contrastive", top_k=8, penalty_alpha=0.9))
    assert not torch.equal(contrastive, greedy)
    assert seq_rep_n(contrastive, 2) <= seq_rep_n(greedy, 2)


def test_sampling_frequencies_match_the_model(model):
    n = 20_000
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(5)).expand(n, 5)
    with torch.no_grad():
        probs = model(prompt[:1])[0, -1].double().softmax(-1)
    for cfg in (DecodingConfig(strategy="sample"), DecodingConfig(strategy="sample", top_k=3)):
        drawn = generate(model, prompt, 1, cfg, torch.Generator().manual_seed(6))[:, 0]
        counts = torch.bincount(drawn, minlength=50).double()
        expected = filter_logits(probs.log()[None], cfg)[0].softmax(-1) * n
        keep = expected > 0
        assert counts[~keep].sum() == 0
        chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
        df = int(keep.sum()) - 1
        assert chi2 < df + 5 * math.sqrt(2 * df)  # far in the tail of chi²(df)
