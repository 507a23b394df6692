"""Text and prediction metrics as pure, vectorised functions over token ids.

No Python loop over tokens or the vocabulary: n-grams are ``unfold`` views, counted with
``torch.unique``. Each docstring gives the definition and its paper (and docs/metrics.md which released code it equals),
because "rep-n", "distinct-n" and "diversity" mean different things in different papers.
"""

from __future__ import annotations

import math

import torch

# ---- n-gram helpers ------------------------------------------------------------------------


def ngrams(seqs: torch.Tensor, n: int) -> torch.Tensor:
    """(N, L) token ids -> (N, L-n+1, n) sliding n-grams; none, (N, 0, n), in rows shorter than n."""
    if seqs.shape[1] < n:
        return seqs.new_empty((seqs.shape[0], 0, n))
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
    """|distinct n-grams| / |generated tokens|, pooled over all continuations (Li et al. 2016, §4.3:
    "the number of distinct unigrams and bigrams divided by total number of generated words")."""
    keys = ngram_hash(ngrams(seqs, n)).flatten()
    if seqs.numel() == 0:
        return 0.0
    return torch.unique(keys).numel() / seqs.numel()


def unique_ngram_share(seqs: torch.Tensor, n: int) -> float:
    """|distinct n-grams| / |n-grams|, pooled over all continuations (objbench's own definition: the form
    most code calls "distinct-n"; unlike Li et al.'s, identical text of any length scores 1/|n-grams|·|types|)."""
    keys = ngram_hash(ngrams(seqs, n)).flatten()
    if keys.numel() == 0:
        return 0.0
    return torch.unique(keys).numel() / keys.numel()


def hapax_share(seqs: torch.Tensor, n: int) -> float:
    """|n-grams that occur exactly once| / |n-grams|, pooled over all continuations: what Holtzman et al.
    (2020)'s released ``metrics/distinct_n.py`` (ari-holtzman/degen) computes and calls distinct-n."""
    keys = ngram_hash(ngrams(seqs, n)).flatten()
    if keys.numel() == 0:
        return 0.0
    counts = torch.unique(keys, return_counts=True)[1]
    return (counts == 1).sum().item() / keys.numel()


def uniq_seq(seqs: torch.Tensor) -> int:
    """Number of distinct tokens over all continuations (Welleck et al. 2019)."""
    return int(torch.unique(seqs).numel())


ZIPF_TOP = 5000  # ranks in the fit, as Holtzman et al. (2020)'s metrics/zipf.py


def zipf_coefficient(seqs: torch.Tensor, top: int = ZIPF_TOP) -> float:
    """−slope of log count against log rank over the ``top`` most frequent tokens (Holtzman et al. 2020).

    Least squares in log-log space over ranks 1..min(types, top); the source-like value is about 1.
    """
    counts = torch.unique(seqs, return_counts=True)[1].double().sort(descending=True).values[:top]
    if counts.numel() < 2:
        return 0.0
    log_rank = torch.arange(1, counts.numel() + 1, dtype=torch.float64).log()
    x = log_rank - log_rank.mean()
    y = counts.log() - counts.log().mean()
    return float(-(x * y).sum() / (x * x).sum())


BLEU_EPSILON = 0.1  # smoothing "method 1" (Chen & Cherry 2014): a zero count of matches becomes 0.1


def self_bleu(seqs: torch.Tensor, max_n: int = 4) -> float:
    """Mean BLEU-``max_n`` of each continuation against all the others as references (Zhu et al. 2018).

    As Texygen's ``SelfBleu`` and Holtzman et al.'s ``metrics/self_bleu.py`` compute it with NLTK's
    ``sentence_bleu``: uniform weights over n = 1..max_n, each hypothesis n-gram count clipped by its
    largest count in any single reference, smoothing method 1 (a precision with no match counts as
    0.1 / |n-grams|), BLEU 0 when not one unigram matches, brevity penalty 1 (equal lengths).
    Identical continuations give 1.
    """
    N, L = seqs.shape
    if N < 2 or L == 0:
        return 0.0
    log_precision = torch.zeros(N, dtype=torch.float64)
    no_unigram_match = torch.zeros(N, dtype=torch.bool)
    for n in range(1, max_n + 1):
        keys = ngram_hash(ngrams(seqs, n))  # (N, G)
        G = keys.shape[1]
        if G == 0:  # a hypothesis shorter than n: NLTK's 0 / max(1, 0) → smoothed 0.1
            log_precision += math.log(BLEU_EPSILON)
            continue
        _, ids = torch.unique(keys, return_inverse=True)
        U = int(ids.max()) + 1
        # counts are small integers: float32 is exact and halves the (N, U) table
        counts = torch.zeros(N, U).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
        # the largest count among the *other* rows: the top-2 of each column
        top2 = counts.topk(2, dim=0)
        best, second, best_row = top2.values[0], top2.values[1], top2.indices[0]
        is_best = best_row[None, :] == torch.arange(N)[:, None]  # (N, U)
        max_other = torch.where(is_best, second[None, :], best[None, :])
        clipped = torch.minimum(counts, max_other).sum(1).double()
        if n == 1:
            no_unigram_match = clipped == 0
        log_precision += torch.where(clipped > 0, clipped, torch.full_like(clipped, BLEU_EPSILON)).log() - math.log(G)
    bleu = (log_precision / max_n).exp().masked_fill(no_unigram_match, 0.0)
    return float(bleu.mean())


REPETITION_MAX_PHRASE = 90  # Holtzman et al. (2020)'s metrics/repetition.py: max_n


def repeating_tail(seqs: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the continuation ends in a repeated phrase, by the rule of Holtzman et al. (2020)'s
    released ``metrics/repetition.py`` (ari-holtzman/degen): for every phrase length n ≤ 90, count how
    many times the last n tokens occur back to back at the end; take the n with the most repeats (the
    shortest on ties); flag the text when that phrase repeats (count > 1) and is at least 3 tokens long
    or repeats more than 50 times.
    """
    N, L = seqs.shape
    reverse = seqs.flip(1)  # reverse[:, j] = the j-th token from the end
    j = torch.arange(L, device=seqs.device)
    repeats = torch.ones(N, REPETITION_MAX_PHRASE, dtype=torch.long, device=seqs.device)
    for n in range(1, min(REPETITION_MAX_PHRASE, L // 2) + 1):
        periodic = reverse == reverse[:, j % n]  # (N, L): token j equals the one n·k places nearer the end
        run = periodic.long().cumprod(1).sum(1)  # length of the periodic tail
        repeats[:, n - 1] = run // n  # complete copies of the last n tokens
    best = repeats.argmax(1)  # the first maximum: the shortest phrase
    count = repeats.gather(1, best[:, None]).squeeze(1)
    return (count > 1) & ((best + 1 >= 3) | (count > 50))


def ends_in_loop(seqs: torch.Tensor, max_period: int = 25, min_span: int = 16) -> torch.Tensor:
    """(N,) bool: the continuation ends in a cycle (objbench's own rule): for some period p ≤ ``max_period``
    the last max(2p, ``min_span``) tokens repeat with period p. Unlike ``repeating_tail`` it counts a short
    loop (a 2-token one) at any length of text."""
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
    """Share of continuations that end in a repeated phrase (see ``repeating_tail``; Holtzman et al. 2020
    report their number)."""
    return repeating_tail(seqs).double().mean().item()


_INDEXES: dict[tuple, NgramIndex] = {}  # one entry: the last split's index (NgramIndex.of)


class NgramIndex:
    """The set of n-grams of a corpus (hashed, sorted) for verbatim-copy look-ups."""

    def __init__(self, blocks: torch.Tensor, n: int = 8) -> None:
        self.n = n
        keys = ngram_hash(ngrams(blocks.cpu(), n)).flatten()  # n-grams never cross blocks
        self.keys = torch.unique(keys)  # sorted

    @classmethod
    def of(cls, blocks: torch.Tensor, n: int = 8) -> NgramIndex:
        """The index of a split, built once per process: a suite's jobs, which share one train split, build it
        for the first job only. Kept for the last split asked for."""
        key = (blocks.shape, n, hash(blocks.cpu().numpy().tobytes()))
        if key not in _INDEXES:
            _INDEXES.clear()
            _INDEXES[key] = cls(blocks, n)
        return _INDEXES[key]

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
        out[f"unique_ngram_share_{n}"] = unique_ngram_share(seqs, n)
        out[f"hapax_share_{n}"] = hapax_share(seqs, n)
    out["zipf"] = zipf_coefficient(seqs)
    out["self_bleu_4"] = self_bleu(seqs[:SELF_BLEU_SUBSET], 4)
    out["rep_rate"] = rep_rate(seqs)
    out["loop_rate"] = ends_in_loop(seqs).double().mean().item()
    return out


def per_continuation(seqs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generation metrics that are a mean over continuations, per continuation (N,): what the
    report's intervals resample by prompt."""
    out = {f"seq_rep_{n}": seq_rep_per_row(seqs, n) for n in range(1, 5)}
    out["rep_rate"] = repeating_tail(seqs).double()
    out["loop_rate"] = ends_in_loop(seqs).double()
    return out


SELF_BLEU_SUBSET = 500  # self-BLEU over the first 500 continuations, as Texygen's get_bleu_fast: O(N²) references


# ---- teacher-forced metrics ---------------------------------------------------------------------


def in_previous_targets(predictions: torch.Tensor, targets: torch.Tensor, window: int) -> torch.Tensor:
    """(B, T) bool: predictions[b, t] occurs among targets[b, t-window .. t-1], the ``window`` gold next
    tokens before position t of the block (none at t = 0).

    Welleck et al. (2019)'s next-token repetition, as their released ``custom/metrics.py``
    (``TrainingMetrics.repeat_at_1``, facebookresearch/unlikelihood_training) computes it per block: the
    block's first input token, which is no earlier target, does not count.
    """
    T = targets.shape[1]
    same = predictions[:, :, None] == targets[:, None, :]  # (B, T, T): [b, t, s]
    t = torch.arange(T, device=targets.device)
    band = (t[None, :] < t[:, None]) & (t[None, :] >= t[:, None] - window)  # s in [t-window, t)
    return (same & band).any(-1)
