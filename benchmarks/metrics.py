"""Text and prediction metrics as pure, vectorised functions over token ids.

No Python loop over tokens or the vocabulary: n-grams are ``unfold`` views, counted with
``torch.unique``. Names follow DESIGN §6, and each docstring gives the definition and its paper,
because "rep-n", "distinct-n" and "diversity" mean different things in different papers.
"""

from __future__ import annotations

import torch

# ---- n-gram helpers ------------------------------------------------------------------------


def ngrams(seqs: torch.Tensor, n: int) -> torch.Tensor:
    """(N, L) token ids -> (N, L-n+1, n) sliding n-grams."""
    return seqs.unfold(1, n, 1)


def ngram_hash(grams: torch.Tensor) -> torch.Tensor:
    """(..., n) int64 n-grams -> (...) int64 keys: a polynomial hash mod 2^64 (wrapping multiply).

    Collisions are possible in principle, negligible in practice (2^64 buckets).
    """
    key = torch.zeros(grams.shape[:-1], dtype=torch.int64, device=grams.device)
    for i in range(grams.shape[-1]):  # n is small (<= 8)
        key = key * 1_000_003 + grams[..., i] + 1
    return key


def _unique_per_row(grams: torch.Tensor) -> torch.Tensor:
    """(N, G, n) -> number of distinct n-grams in each row (N,)."""
    N, G, _ = grams.shape
    keys = ngram_hash(grams)  # (N, G)
    keys = keys.sort(dim=1).values
    new = torch.ones_like(keys, dtype=torch.bool)
    new[:, 1:] = keys[:, 1:] != keys[:, :-1]
    return new.sum(1)


# ---- generation metrics (continuations (N, L)) -------------------------------------------------


def seq_rep_per_row(seqs: torch.Tensor, n: int) -> torch.Tensor:
    """1 − |unique n-grams| / |n-grams| of each continuation (N,) (Welleck et al. 2019)."""
    grams = ngrams(seqs, n)
    if grams.shape[1] == 0:
        return torch.zeros(seqs.shape[0], dtype=torch.float64)
    return 1.0 - _unique_per_row(grams).double() / grams.shape[1]


def seq_rep_n(seqs: torch.Tensor, n: int) -> float:
    """Mean over continuations of 1 − |unique n-grams| / |n-grams| (Welleck et al. 2019)."""
    return seq_rep_per_row(seqs, n).mean().item()


def distinct_n(seqs: torch.Tensor, n: int) -> float:
    """|unique n-grams| / |n-grams| pooled over all continuations (Li et al. 2016)."""
    keys = ngram_hash(ngrams(seqs, n)).flatten()
    if keys.numel() == 0:
        return 0.0
    return torch.unique(keys).numel() / keys.numel()


def uniq_seq(seqs: torch.Tensor) -> int:
    """Number of distinct tokens over all continuations (Welleck et al. 2019)."""
    return int(torch.unique(seqs).numel())


def zipf_coefficient(seqs: torch.Tensor, top: int = 1000) -> float:
    """−slope of log count against log rank over the ``top`` most frequent tokens (Holtzman et al. 2020).

    Least squares in log-log space; the source-like value is about 1.
    """
    counts = torch.unique(seqs, return_counts=True)[1].double().sort(descending=True).values[:top]
    if counts.numel() < 2:
        return 0.0
    log_rank = torch.arange(1, counts.numel() + 1, dtype=torch.float64).log()
    x = log_rank - log_rank.mean()
    y = counts.log() - counts.log().mean()
    return float(-(x * y).sum() / (x * x).sum())


def self_bleu(seqs: torch.Tensor, max_n: int = 4) -> float:
    """Mean BLEU-n of each continuation against all the others as references (Zhu et al. 2018).

    BLEU (Papineni et al. 2002): geometric mean of clipped n-gram precisions (n = 1..max_n), each
    hypothesis n-gram count clipped by its largest count in any single reference, times the brevity
    penalty (1 here: all continuations have the same length). No smoothing. Identical
    continuations give 1.
    """
    N, L = seqs.shape
    if N < 2:
        return 0.0
    log_precision = torch.zeros(N, dtype=torch.float64)
    for n in range(1, max_n + 1):
        if n > L:
            return 0.0
        keys = ngram_hash(ngrams(seqs, n))  # (N, G)
        _, ids = torch.unique(keys, return_inverse=True)
        U = int(ids.max()) + 1
        counts = torch.zeros(N, U, dtype=torch.float64).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float64))
        # the largest count among the *other* rows: the top-2 of each column
        top2 = counts.topk(2, dim=0)
        best, second, best_row = top2.values[0], top2.values[1], top2.indices[0]
        is_best = best_row[None, :] == torch.arange(N)[:, None]  # (N, U)
        max_other = torch.where(is_best, second[None, :], best[None, :])
        clipped = torch.minimum(counts, max_other).sum(1)
        log_precision += (clipped / keys.shape[1]).log()
    return float((log_precision / max_n).exp().mean())


def ends_in_loop(seqs: torch.Tensor, max_period: int = 25, min_span: int = 16) -> torch.Tensor:
    """(N,) bool: the continuation ends in a repeating loop (Holtzman et al. 2020's "repetition").

    True when for some period p <= ``max_period`` the last max(2p, ``min_span``) tokens are periodic
    with period p (x_t = x_{t−p}), i.e. the text has settled into a cycle that it keeps repeating.
    """
    N, L = seqs.shape
    looping = torch.zeros(N, dtype=torch.bool, device=seqs.device)
    for p in range(1, min(max_period, L // 2) + 1):
        span = max(2 * p, min_span)
        if span > L:
            break
        tail = seqs[:, L - span :]
        looping |= (tail[:, p:] == tail[:, :-p]).all(1)
    return looping


def rep_rate(seqs: torch.Tensor) -> float:
    """Share of continuations that end in a repeating loop (see ``ends_in_loop``)."""
    return ends_in_loop(seqs).double().mean().item()


class NgramIndex:
    """The set of n-grams of a corpus (hashed, sorted) for verbatim-copy look-ups."""

    def __init__(self, blocks: torch.Tensor, n: int = 8) -> None:
        self.n = n
        keys = ngram_hash(ngrams(blocks.cpu(), n)).flatten()  # n-grams never cross blocks
        self.keys = torch.unique(keys)  # sorted

    def contains(self, grams: torch.Tensor) -> torch.Tensor:
        keys = ngram_hash(grams).flatten()
        pos = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == keys


def copy_share(seqs: torch.Tensor, index: NgramIndex) -> torch.Tensor:
    """Per continuation (N,): share of its n-grams (n = index.n, 8 by default) found verbatim in the
    training data. Their mean is ``copy_rate_8`` (memorisation)."""
    grams = ngrams(seqs.cpu(), index.n)  # (N, G, n)
    if grams.shape[1] == 0:
        return torch.zeros(seqs.shape[0], dtype=torch.float64)
    return index.contains(grams).view(grams.shape[:2]).double().mean(1)


def generation_metrics(seqs: torch.Tensor) -> dict[str, float]:
    """The text metrics of a set of continuations (N, L), keyed by name (without ``gen/<decoding>/``)."""
    out: dict[str, float] = {}
    for n in range(1, 5):
        out[f"seq_rep_{n}"] = seq_rep_n(seqs, n)
    out["uniq_seq"] = float(uniq_seq(seqs))
    for n in range(1, 5):
        out[f"distinct_{n}"] = distinct_n(seqs, n)
    out["zipf"] = zipf_coefficient(seqs)
    out["self_bleu_4"] = self_bleu(seqs[:SELF_BLEU_SUBSET], 4)
    out["rep_rate"] = rep_rate(seqs)
    return out


def per_continuation(seqs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generation metrics that are a mean over continuations, per continuation (N,): what the
    report's intervals resample by prompt."""
    out = {f"seq_rep_{n}": seq_rep_per_row(seqs, n) for n in range(1, 5)}
    out["rep_rate"] = ends_in_loop(seqs).double()
    return out


SELF_BLEU_SUBSET = 100  # self-BLEU on the first continuations only: O(N²) references


# ---- teacher-forced metrics ---------------------------------------------------------------------


def in_recent_context(predictions: torch.Tensor, inputs: torch.Tensor, window: int) -> torch.Tensor:
    """(B, T) bool: predictions[b, t] occurs among inputs[b, t-window+1 .. t] (the gold tokens so far).

    Welleck et al. (2019)'s next-token repetition: a prediction at t is a repeat when it is among
    the previous ``window`` gold tokens.
    """
    T = inputs.shape[1]
    same = predictions[:, :, None] == inputs[:, None, :]  # (B, T, T): [b, t, s]
    t = torch.arange(T, device=inputs.device)
    band = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window)  # s in (t-window, t]
    return (same & band).any(-1)
