"""The truncation samplers since typical sampling against their references on fixed logits: min-p, ε- and η-sampling
against Hugging Face transformers' ``MinPLogitsWarper``, ``EpsilonLogitsWarper`` and ``EtaLogitsWarper`` (checked
with transformers 5.25.0, generation/logits_process.py, min_tokens_to_keep=1); top-nσ against llama.cpp's rule
(src/llama-sampling.cpp, ``llama_sampler_top_n_sigma_apply``) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from lit_modules.core.decoding import DecodingConfig, filter_logits

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
)


def logits_cases() -> torch.Tensor:
    """(rows, 50) logits: peaked, flat, heavy-tailed, with ties at the top, and with −inf entries."""
    g = torch.Generator().manual_seed(0)
    rows = [scale * torch.randn(50, generator=g) for scale in (0.3, 1.0, 3.0, 8.0)]
    tied = torch.randn(50, generator=g)
    tied[[3, 7]] = tied.max() + 1.0
    rows.append(tied)
    holes = 2 * torch.randn(50, generator=g)
    holes[::5] = float("-inf")
    rows.append(holes)
    rows.append(torch.zeros(50))
    return torch.stack(rows)


@pytest.mark.parametrize(
    "cfg, reference",
    [
        *[(DecodingConfig(strategy="sample", min_p=m), MinPLogitsWarper(m)) for m in (0.02, 0.1, 0.5, 1.0)],
        *[(DecodingConfig(strategy="sample", epsilon=e), EpsilonLogitsWarper(e)) for e in (3e-4, 0.01, 0.05, 0.3)],
        *[(DecodingConfig(strategy="sample", eta=e), EtaLogitsWarper(e)) for e in (3e-4, 2e-3, 0.02, 0.3)],
    ],
    ids=lambda x: repr(x) if isinstance(x, DecodingConfig) else "",
)
def test_threshold_samplers_equal_transformers_warpers(cfg, reference):
    logits = logits_cases()
    ours = filter_logits(logits.clone(), cfg)
    theirs = reference(None, logits.clone())
    assert torch.equal(ours.isfinite(), theirs.isfinite())
    assert torch.equal(ours[ours.isfinite()], theirs[theirs.isfinite()])


def test_eta_cutoff_is_the_smaller_of_eta_and_its_entropy_scaled_root():
    """Peaked row: √η·e^(−H) > η, the cutoff is η; flat row: the entropy term is smaller."""
    peaked = torch.tensor([[10.0, 0.0, -1.0, -9.0]])
    p = peaked.softmax(-1)
    kept = filter_logits(peaked, DecodingConfig(strategy="sample", eta=0.01)).isfinite()
    assert kept.tolist() == (p >= 0.01).tolist()
    flat = torch.zeros(1, 1000)
    flat[0, 0] = 1.0
    cutoff = math.sqrt(0.5) * math.exp(-torch.distributions.Categorical(logits=flat).entropy().item())
    kept = filter_logits(flat, DecodingConfig(strategy="sample", eta=0.5)).isfinite()
    assert kept.tolist() == (flat.softmax(-1) >= min(0.5, cutoff)).tolist()


def test_top_nsigma_on_hand_computed_cases():
    """[0, 1, 2, 3]: mean 1.5, σ = √1.25 = 1.118 (population): n = 1 cuts at 1.882, n = 2 at 0.764. With −inf
    entries the statistics are over the finite logits only: [0, 4] has mean 2, σ 2. One finite logit: unchanged."""
    row = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    kept = lambda logits, n: filter_logits(logits, DecodingConfig(strategy="sample", top_nsigma=n)).isfinite()  # noqa: E731
    assert kept(row, 1.0).tolist() == [[False, False, True, True]]
    assert kept(row, 2.0).tolist() == [[False, True, True, True]]
    assert kept(row, 1.3416).tolist() == [[False, False, True, True]]  # 3 − 1.3416·1.118 = 1.5000 < 2 only
    holes = torch.tensor([[float("-inf"), 0.0, 4.0]])
    assert kept(holes, 1.0).tolist() == [[False, False, True]]  # cut at 4 − 2 = 2
    assert kept(holes, 2.5).tolist() == [[False, True, True]]  # cut at −1
    single = torch.tensor([[float("-inf"), 1.0, float("-inf")]])
    assert kept(single, 1.0).tolist() == [[False, True, False]]
    # the kept set does not depend on the temperature (max and σ scale together)
    logits = logits_cases()
    for t in (0.5, 2.0):
        hot = filter_logits(logits, DecodingConfig(strategy="sample", top_nsigma=1.0, temperature=t)).isfinite()
        assert torch.equal(hot, kept(logits, 1.0))


@pytest.mark.parametrize(
    "knob, value, allowed",
    [
        ("min_p", 0.0, "0 < min_p <= 1"),
        ("min_p", 1.5, "0 < min_p <= 1"),
        ("epsilon", 1.0, "0 < epsilon < 1"),
        ("epsilon", 0.0, "0 < epsilon < 1"),
        ("eta", -0.1, "0 < eta < 1"),
        ("top_nsigma", 0.0, "top_nsigma > 0"),
        ("top_nsigma", -1.0, "top_nsigma > 0"),
    ],
)
def test_thresholds_out_of_range_are_one_line(knob, value, allowed):
    with pytest.raises(ValueError, match=f"decoding 'x': {knob}={value!r} is not allowed; use {allowed}"):
        DecodingConfig(name="x", strategy="sample", **{knob: value})
