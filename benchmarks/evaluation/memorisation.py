"""Memorisation of rare patterns: the exposure and extraction of the canaries a run's train split holds
(``data.canaries``; Carlini et al. 2019, "The Secret Sharer"), by how many times each was inserted: ``mem/``.

A sequence's log-perplexity is −Σ_{i≥2} log p(x_i | x_<i) (nats; the first token has no context and is the same
term for every sequence up to the model's unconditional guess, so it is left out). Exposure compares a canary's
log-perplexity with those of reference sequences drawn the same way and never inserted:

- ``exposure`` (extrapolation, the paper's §4.3): −log2 F(canary), F the CDF of a skew-normal distribution fitted
  to the references' log-perplexities, at most log2 of the number of possible canaries;
- ``exposure_rank`` (interpolation): log2 R − log2 rank, rank = 1 + the references with a lower log-perplexity
  (R references; at most log2 R).

Both as tensorflow-privacy's ``secret_sharer/exposures.py`` computes them. ``extracted``: the share of canaries whose
last length − prefix_len tokens greedy decoding reproduces from their first prefix_len.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from benchmarks.evaluation.teacher_forced import autocast_context, batches
from lit_modules.core.canaries import Canaries
from lit_modules.core.decoding import DecodingConfig, generate
from lit_modules.core.model import GPT


@torch.no_grad()
def log_perplexities(model: GPT, sequences: torch.Tensor, batch_size: int, bf16: bool) -> torch.Tensor:
    """−Σ_{i≥2} log p(x_i | x_<i) of each row of ``sequences`` (n, L) -> (n,) float64, nats."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for rows in batches(sequences, batch_size):
            with autocast_context(model, bf16):
                logits = model(rows[:, :-1])
            logp = logits.float().log_softmax(-1).gather(-1, rows[:, 1:, None]).squeeze(-1)
            out.append(-logp.double().sum(-1))
    finally:
        model.train(was_training)
    return torch.cat(out)


def exposure_extrapolated(canaries: np.ndarray, references: np.ndarray, most: float) -> np.ndarray:
    """−log2 F(x) per canary log-perplexity x, F the CDF of a skew-normal fitted to the references'; capped at
    ``most`` (log2 of the number of possible sequences)."""
    shape, loc, scale = stats.skewnorm.fit(references)
    bits = -stats.skewnorm.logcdf(canaries, shape, loc, scale) / math.log(2)
    return np.minimum(np.nan_to_num(bits, nan=most, posinf=most), most)


def exposure_interpolated(canaries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """log2 R − log2(1 + the references of lower log-perplexity), per canary (R = len(references))."""
    rank = 1 + np.searchsorted(np.sort(references), canaries, side="left")
    return np.log2(len(references)) - np.log2(rank)


def extracted(model: GPT, tokens: torch.Tensor, prefix_len: int, batch_size: int) -> torch.Tensor:
    """(n,) bool: greedy decoding from each canary's first ``prefix_len`` tokens reproduces the rest exactly."""
    prefix, secret = tokens[:, :prefix_len], tokens[:, prefix_len:]
    greedy = DecodingConfig()
    hits = [
        (generate(model, rows, secret.shape[1], greedy) == target).all(-1)
        for rows, target in zip(batches(prefix, batch_size), batches(secret, batch_size), strict=True)
    ]
    return torch.cat(hits)


def canary_metrics(model: GPT, canaries: Canaries, batch_size: int, bf16: bool) -> dict[str, float]:
    """Per insertion count c: ``mem/exposure_x<c>``, ``mem/exposure_rank_x<c>`` (means over its canaries, bits) and
    ``mem/extracted_x<c>`` (share); and the same over all canaries (``mem/exposure`` ...)."""
    device = next(model.parameters()).device
    tokens, references = canaries.tokens.to(device), canaries.references.to(device)
    canary_lp = log_perplexities(model, tokens, batch_size, bf16).cpu().numpy()
    reference_lp = log_perplexities(model, references, batch_size, bf16).cpu().numpy()
    exposure = exposure_extrapolated(canary_lp, reference_lp, canaries.space_bits)
    rank_exposure = exposure_interpolated(canary_lp, reference_lp)
    with autocast_context(model, bf16):
        hit = extracted(model, tokens, canaries.prefix_len, batch_size).cpu().numpy()
    counts = canaries.counts.numpy()
    out = {}
    for suffix, chosen in [*((f"_x{c}", counts == c) for c in sorted(set(counts.tolist()))), ("", counts > 0)]:
        out[f"mem/exposure{suffix}"] = float(exposure[chosen].mean())
        out[f"mem/exposure_rank{suffix}"] = float(rank_exposure[chosen].mean())
        out[f"mem/extracted{suffix}"] = float(hit[chosen].mean())
    return out
