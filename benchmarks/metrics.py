"""Text metrics as pure, vectorised functions over token ids (no Python loop over tokens).

Names follow DESIGN §6; each docstring gives the definition and its paper, because "rep-n",
"distinct-n" and "diversity" mean different things in different papers.
"""

from __future__ import annotations

import torch


def ngrams(seqs: torch.Tensor, n: int) -> torch.Tensor:
    """(N, L) token ids -> (N, L-n+1, n) sliding n-grams."""
    return seqs.unfold(1, n, 1)


def _unique_per_row(grams: torch.Tensor) -> torch.Tensor:
    """(N, G, n) -> number of distinct n-grams in each row (N,)."""
    N, G, n = grams.shape
    rows = torch.arange(N, device=grams.device).repeat_interleave(G)[:, None]
    keyed = torch.cat([rows, grams.reshape(N * G, n)], dim=1)  # (N·G, n+1): row id + n-gram
    uniq = torch.unique(keyed, dim=0)
    return torch.bincount(uniq[:, 0], minlength=N)


def seq_rep_n(seqs: torch.Tensor, n: int) -> float:
    """Mean over continuations of 1 − |unique n-grams| / |n-grams| (Welleck et al. 2019)."""
    grams = ngrams(seqs, n)
    if grams.shape[1] == 0:
        return 0.0
    return (1.0 - _unique_per_row(grams).double() / grams.shape[1]).mean().item()


def distinct_n(seqs: torch.Tensor, n: int) -> float:
    """|unique n-grams| / |n-grams| pooled over all continuations (Li et al. 2016)."""
    grams = ngrams(seqs, n).reshape(-1, n)
    if grams.shape[0] == 0:
        return 0.0
    return torch.unique(grams, dim=0).shape[0] / grams.shape[0]


def uniq_seq(seqs: torch.Tensor) -> int:
    """Number of distinct tokens over all continuations (Welleck et al. 2019)."""
    return int(torch.unique(seqs).numel())


def generation_metrics(seqs: torch.Tensor) -> dict[str, float]:
    """The text metrics of a set of continuations (N, L)."""
    out: dict[str, float] = {}
    for n in range(1, 5):
        out[f"seq_rep_{n}"] = seq_rep_n(seqs, n)
    for n in range(1, 5):
        out[f"distinct_{n}"] = distinct_n(seqs, n)
    out["uniq_seq"] = float(uniq_seq(seqs))
    return out
