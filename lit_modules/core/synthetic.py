"""A seeded hidden Markov source whose next-token distribution is known exactly.

K hidden states; state i moves to one of ``succ`` random successors and emits one of ``emit``
words, the words drawn (without replacement) from a Zipf prior p(v) ∝ (v+1)^(-zipf_s) over V ids,
transition and emission weights from a symmetric Dirichlet. A small share ``smoothing`` of every
emission row is spread uniformly over the vocabulary, so every token has non-zero probability and
both KL directions stay finite. Sequences start in the stationary distribution.

Exact conditionals by forward filtering: with b_t(k) = P(s_t = k | x_<t),
``P(x_t = v | x_<t) = (b_t @ E)[v]``, then b_{t+1} ∝ (b_t ⊙ E[:, x_t]) @ A.
Frequent words (low ids) render as short pseudo-words, so samples read like text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from lit_modules.core.errors import ConfigError

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]


@dataclass(frozen=True)
class SourceConfig:
    vocab_size: int = 1024
    n_states: int = 64
    succ: int = 3
    emit: int = 16
    zipf_s: float = 1.0
    concentration: float = 1.0  # symmetric Dirichlet parameter of transition / emission weights
    smoothing: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ConfigError:
            return ConfigError(f"data.source.{name}={getattr(self, name)!r} is not allowed; {allowed}")

        for name in ("vocab_size", "n_states", "succ", "emit", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                raise bad(name, "use an integer >= 0" if name == "seed" else "use an integer >= 1")
        for name in ("zipf_s", "concentration", "smoothing"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise bad(name, "use a number")
        if self.vocab_size < 2:  # one word: nothing to predict, every NLL 0
            raise bad("vocab_size", "use an integer >= 2 (a source of one word has nothing to predict)")
        if self.emit > self.vocab_size:
            raise bad("emit", f"it is larger than data.source.vocab_size={self.vocab_size}")
        if self.succ > self.n_states:
            raise bad("succ", f"it is larger than data.source.n_states={self.n_states}")
        if self.zipf_s < 0:
            raise bad("zipf_s", "use zipf_s >= 0")
        if self.concentration <= 0:
            raise bad("concentration", "use concentration > 0")
        if not 0.0 < self.smoothing < 1.0:
            raise bad("smoothing", "use 0 < smoothing < 1")
        if len(_SYLLABLES) * (1 + len(_SYLLABLES)) < self.vocab_size:
            raise bad("vocab_size", "it is too large to render; use <= 4970")


def word(token_id: int) -> str:
    """A unique pseudo-word for a token id; low ids (frequent words) get one syllable."""
    n = len(_SYLLABLES)
    if token_id < n:
        return _SYLLABLES[token_id]
    a, b = divmod(token_id - n, n)
    return _SYLLABLES[a] + _SYLLABLES[b]


class HMMSource:
    """The source: sparse tables for sampling, dense (K, K) and (K, V) tables for filtering."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        K, V = cfg.n_states, cfg.vocab_size
        # Sparse transitions: successor ids (K, succ) and their weights.
        self.succ_ids = torch.stack([torch.randperm(K, generator=g)[: cfg.succ] for _ in range(K)])
        self.succ_w = _dirichlet(cfg.concentration, (K, cfg.succ), g)
        # Sparse emissions: words (K, emit) from the Zipf prior, weights.
        prior = (torch.arange(V, dtype=torch.float64) + 1.0) ** (-cfg.zipf_s)
        self.emit_ids = torch.multinomial(prior.expand(K, V), cfg.emit, replacement=False, generator=g)
        self.emit_w = _dirichlet(cfg.concentration, (K, cfg.emit), g)
        # Dense tables, float64 for filtering accuracy.
        self.transitions = torch.zeros(K, K, dtype=torch.float64).scatter_(1, self.succ_ids, self.succ_w)
        sparse = torch.zeros(K, V, dtype=torch.float64).scatter_(1, self.emit_ids, self.emit_w)
        self.emissions = (1.0 - cfg.smoothing) * sparse + cfg.smoothing / V
        self.initial = _stationary(self.transitions)

    def fingerprint(self) -> str:
        return "hmm-" + "-".join(f"{k}{v}" for k, v in asdict(self.cfg).items())

    @property
    def unigram(self) -> torch.Tensor:
        """Stationary token distribution (V,)."""
        return self.initial @ self.emissions

    def unigram_entropy(self) -> float:
        return _entropy(self.unigram).item()

    # ---- sampling -------------------------------------------------------------------------
    def sample(self, n_seqs: int, length: int, seed: int) -> torch.Tensor:
        """n_seqs independent sequences (n_seqs, length), int64; vectorised over sequences."""
        g = torch.Generator().manual_seed(seed)
        succ_cum = self.succ_w.cumsum(1)
        emit_cum = self.emit_w.cumsum(1)
        V = self.cfg.vocab_size
        state = torch.multinomial(self.initial, n_seqs, replacement=True, generator=g)  # (N,)
        out = torch.empty(n_seqs, length, dtype=torch.int64)
        for t in range(length):
            u = torch.rand(n_seqs, 1, dtype=torch.float64, generator=g)
            slot = torch.searchsorted(emit_cum[state], u).clamp_max_(self.cfg.emit - 1)
            token = self.emit_ids[state].gather(1, slot).squeeze(1)
            uniform = torch.rand(n_seqs, generator=g) < self.cfg.smoothing
            token = torch.where(uniform, torch.randint(V, (n_seqs,), generator=g), token)
            out[:, t] = token
            u = torch.rand(n_seqs, 1, dtype=torch.float64, generator=g)
            slot = torch.searchsorted(succ_cum[state], u).clamp_max_(self.cfg.succ - 1)
            state = self.succ_ids[state].gather(1, slot).squeeze(1)
        return out

    # ---- exact conditionals ---------------------------------------------------------------
    def log_conditionals(self, tokens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Token ids (B, T) -> log P(x_t = v | x_<t) for every v: (B, T, V).

        Position t conditions on tokens[:, :t] only (position 0 is the stationary marginal).
        """
        probs = torch.stack(list(self._filter(tokens)), dim=1)
        return probs.clamp_min_(1e-300).log().to(dtype)

    def target_log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> log P(x_t | x_<t) of the tokens themselves (B, T), float64: the normaliser of each
        filtering update, without the (B, T, V) table of ``log_conditionals`` (what scoring a text needs)."""
        likelihoods = torch.stack([likelihood for _, likelihood in self._beliefs(tokens)], dim=1)
        return likelihoods.clamp_min_(1e-300).log_()

    def predictive(self, tokens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Token ids (B, T) -> P(x_t = v | x_<t) (B, T, V) in ``dtype``: the filter's beliefs in float64, then one
        product with the emissions for every position (``log_conditionals`` makes one per position, in float64)."""
        beliefs = torch.stack([belief for belief, _ in self._beliefs(tokens)], dim=1)  # (B, T, K)
        return beliefs.to(dtype) @ self.emissions.to(dtype)

    def conditional_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) true entropy H(P(· | x_<t)) in nats."""
        return torch.stack([_entropy(pred) for pred in self._filter(tokens)], dim=1)

    def _filter(self, tokens: torch.Tensor):
        """Yield the predictive distribution (B, V) at each position of tokens (B, T)."""
        for belief, _ in self._beliefs(tokens):
            yield belief @ self.emissions  # (B, V)

    def _beliefs(self, tokens: torch.Tensor):
        """Yield, at each position of tokens (B, T), the state distribution given x_<t (B, K) and the probability
        P(x_t | x_<t) of the token there (B,): the forward algorithm, normalised at every step."""
        tokens = tokens.cpu()
        belief = self.initial.expand(tokens.shape[0], -1)  # (B, K)
        emissions_t = self.emissions.T  # (V, K)
        for t in range(tokens.shape[1]):
            post = belief * emissions_t[tokens[:, t]]  # (B, K)
            likelihood = post.sum(1, keepdim=True)  # (B, 1)
            yield belief, likelihood.squeeze(1)
            belief = (post / likelihood) @ self.transitions

    # ---- rendering ------------------------------------------------------------------------
    def render(self, ids: list[int] | torch.Tensor) -> str:
        return " ".join(word(int(i)) for i in ids)


class ShiftedSource(HMMSource):
    """The source moved toward another one: every transition and emission row (1 − ρ)·this source's + ρ·that of
    the source of the same settings and seed ``other_seed``. The same vocabulary, states and Zipf prior; ρ = 0 is
    the source itself, ρ = 1 the other. Its conditionals are exact, as the source's (the mixed rows are an HMM).

    Sampling draws each step's emission and transition from one of the two sources' rows, the other's with
    probability ρ: a draw from the mixed row."""

    def __init__(self, base: HMMSource, rho: float, other_seed: int) -> None:
        if not (isinstance(rho, (int, float)) and not isinstance(rho, bool) and 0.0 <= rho <= 1.0):
            raise ConfigError(f"shift rho={rho!r} is not allowed; use a number in [0, 1]")
        self.cfg, self.rho, self.other_seed = base.cfg, float(rho), other_seed
        self.parts = (base, HMMSource(replace(base.cfg, seed=other_seed)))
        self.transitions = (1.0 - rho) * base.transitions + rho * self.parts[1].transitions
        self.emissions = (1.0 - rho) * base.emissions + rho * self.parts[1].emissions
        self.initial = _stationary(self.transitions)

    def fingerprint(self) -> str:
        return f"{self.parts[0].fingerprint()}-shift{self.rho:g}-to{self.other_seed}"

    def sample(self, n_seqs: int, length: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        V, cfg = self.cfg.vocab_size, self.cfg
        succ_ids = torch.stack([p.succ_ids for p in self.parts])  # (2, K, succ)
        succ_cum = torch.stack([p.succ_w.cumsum(1) for p in self.parts])
        emit_ids = torch.stack([p.emit_ids for p in self.parts])  # (2, K, emit)
        emit_cum = torch.stack([p.emit_w.cumsum(1) for p in self.parts])
        state = torch.multinomial(self.initial, n_seqs, replacement=True, generator=g)  # (N,)
        out = torch.empty(n_seqs, length, dtype=torch.int64)
        for t in range(length):
            part = (torch.rand(n_seqs, generator=g) < self.rho).long()  # whose emission row
            u = torch.rand(n_seqs, 1, dtype=torch.float64, generator=g)
            slot = torch.searchsorted(emit_cum[part, state], u).clamp_max_(cfg.emit - 1)
            token = emit_ids[part, state].gather(1, slot).squeeze(1)
            uniform = torch.rand(n_seqs, generator=g) < cfg.smoothing
            out[:, t] = torch.where(uniform, torch.randint(V, (n_seqs,), generator=g), token)
            part = (torch.rand(n_seqs, generator=g) < self.rho).long()  # whose transition row
            u = torch.rand(n_seqs, 1, dtype=torch.float64, generator=g)
            slot = torch.searchsorted(succ_cum[part, state], u).clamp_max_(cfg.succ - 1)
            state = succ_ids[part, state].gather(1, slot).squeeze(1)
        return out


def _dirichlet(alpha: float, shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    # Gamma(alpha) via torch's sampler with an explicit generator: torch._standard_gamma takes
    # none, so draw through -log(U) for alpha == 1 and a Marsaglia-Tsang free path otherwise.
    if alpha == 1.0:
        gam = -torch.rand(shape, dtype=torch.float64, generator=g).clamp_min(1e-300).log()
    else:
        gam = _gamma(alpha, shape, g)
    return gam / gam.sum(-1, keepdim=True)


def _gamma(alpha: float, shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Gamma(alpha, 1) samples by Marsaglia & Tsang (2000), vectorised rejection."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = math.prod(shape)
    out = torch.empty(0, dtype=torch.float64)
    while out.numel() < n:
        x = torch.randn(2 * n, dtype=torch.float64, generator=g)
        u = torch.rand(2 * n, dtype=torch.float64, generator=g)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (u.clamp_min(1e-300).log() < 0.5 * x**2 + d - d * v + d * v.clamp_min(1e-300).log())
        out = torch.cat([out, (d * v)[ok]])
    out = out[:n].view(shape)
    if boost:
        out = out * torch.rand(shape, dtype=torch.float64, generator=g) ** (1.0 / alpha)
    return out


def _stationary(transitions: torch.Tensor, iters: int = 10_000) -> torch.Tensor:
    """Stationary distribution of a row-stochastic matrix by power iteration (lazy chain)."""
    K = transitions.shape[0]
    lazy = 0.5 * (transitions + torch.eye(K, dtype=transitions.dtype))  # same fixed point, aperiodic
    pi = torch.full((K,), 1.0 / K, dtype=transitions.dtype)
    for _ in range(iters):
        nxt = pi @ lazy
        if (nxt - pi).abs().max() < 1e-15:
            break
        pi = nxt
    return pi / pi.sum()


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-300).log()).sum(-1)


NOISE_KINDS = ("uniform", "source")


@dataclass
class NoiseConfig:
    """Noisy training data (``data.noise``): a share of the training rows replaced, validation and test left clean,
    the exact truth still the clean source's. ``uniform``: every token drawn uniformly from the vocabulary (the
    corruption loss truncation and error-norm truncation are tested on); ``source``: rows of another source of
    the same settings (seed + 2: the shifted sources of the OOD tests use seed + 1), fluent but wrong text."""

    share: float = 0.0  # of the training rows, in [0, 1)
    kind: str = "uniform"

    def __post_init__(self) -> None:
        ok = isinstance(self.share, (int, float)) and not isinstance(self.share, bool) and 0.0 <= self.share < 1.0
        if not ok:
            raise ConfigError(f"data.noise.share={self.share!r} is not allowed; use a number in [0, 1)")
        if self.kind not in NOISE_KINDS:
            raise ConfigError(f"data.noise.kind={self.kind!r} is not allowed; use one of: {', '.join(NOISE_KINDS)}")


def add_noise(
    blocks: torch.Tensor, noise: NoiseConfig, source: HMMSource, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(blocks with round(share · rows) of their rows replaced by noise, the replaced rows' indices, sorted):
    the rows a seeded permutation picks first, so that a higher share replaces a superset of a lower one's."""
    n, length = blocks.shape
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=g)[: round(noise.share * n)].sort().values
    if noise.kind == "uniform":
        replacement = torch.randint(source.cfg.vocab_size, (len(rows), length), generator=g)
    else:
        other = HMMSource(replace(source.cfg, seed=source.cfg.seed + 2))
        replacement = other.sample(len(rows), length, seed=seed + 1)
    out = blocks.clone()
    out[rows] = replacement
    return out, rows
