"""Batched incremental decoding on the backbone's KV cache.

Every strategy runs the prompt once (prefill), then feeds only the newest token per step with the
LM head on the last position only. Strategies (``DecodingConfig.strategy``):
- ``greedy``: argmax;
- ``sample``: ancestral sampling with temperature and optional filters, top-k (Fan et al. 2018),
  top-p / nucleus (Holtzman et al. 2020), typical (Meister et al. 2023), ε- and η-sampling (Hewitt et al.
  2022), min-p (Nguyen et al. 2024), top-nσ (Tang et al. 2025);
- ``beam``: beam search, fixed length, the most probable beam is returned;
- ``contrastive``: contrastive search (Su et al. 2022): among the top-k tokens pick
  argmax (1−α)·p(v) − α·max_j cos(h_v, h_j), h the final hidden states of the context.
No early stop: every row gets exactly ``max_new_tokens`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lit_modules.core import kernels
from lit_modules.core.errors import ConfigError
from lit_modules.core.model import GPT

STRATEGIES = ("greedy", "sample", "beam", "contrastive")
THRESHOLDS = ("min_p", "epsilon", "eta", "top_nsigma")  # the truncations that cut at a per-row threshold


@dataclass
class DecodingConfig:
    name: str = "greedy"
    strategy: str = "greedy"
    temperature: float = 1.0
    top_k: int | None = None  # sample: keep the k most probable tokens; contrastive: candidates
    top_p: float | None = None  # keep the smallest set with cumulative probability >= top_p
    typical_p: float | None = None  # keep the most typical tokens up to this mass
    min_p: float | None = None  # keep tokens of probability >= min_p · the top token's
    epsilon: float | None = None  # ε-sampling: keep tokens of probability >= ε (and the top one)
    eta: float | None = None  # η-sampling: keep tokens of probability >= min(η, √η · exp(−entropy)) (and the top)
    top_nsigma: float | None = None  # keep tokens whose logit >= max − n · std of the logits
    beam_size: int = 4
    penalty_alpha: float = 0.6  # contrastive search's degeneration penalty weight

    def __post_init__(self) -> None:
        def bad(knob: str, allowed: str) -> ConfigError:
            return ConfigError(f"decoding {self.name!r}: {knob}={getattr(self, knob)!r} is not allowed; {allowed}")

        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"choose one of {', '.join(STRATEGIES)}")
        if not self.temperature > 0:
            raise bad("temperature", "use > 0")
        if self.top_k is not None and not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise bad("top_k", "use an integer >= 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "use 0 < top_p <= 1")
        if self.typical_p is not None and not 0.0 < self.typical_p <= 1.0:
            raise bad("typical_p", "use 0 < typical_p <= 1")
        if self.min_p is not None and not 0.0 < self.min_p <= 1.0:
            raise bad("min_p", "use 0 < min_p <= 1")
        for knob in ("epsilon", "eta"):
            if getattr(self, knob) is not None and not 0.0 < getattr(self, knob) < 1.0:
                raise bad(knob, f"use 0 < {knob} < 1")
        if self.top_nsigma is not None and not self.top_nsigma > 0.0:
            raise bad("top_nsigma", "use top_nsigma > 0")
        if not (isinstance(self.beam_size, int) and self.beam_size >= 1):
            raise bad("beam_size", "use an integer >= 1")
        if not 0.0 <= self.penalty_alpha <= 1.0:
            raise bad("penalty_alpha", "use 0 <= penalty_alpha <= 1")
        if self.strategy == "contrastive" and self.top_k is None:
            self.top_k = 8


def filter_logits(logits: torch.Tensor, cfg: DecodingConfig) -> torch.Tensor:
    """Apply temperature, top-k, top-p and typical filtering to logits (B, V); removed tokens get -inf."""
    if cfg.temperature != 1.0:  # x / 1 is x: one pass over (B, V) fewer at every decoding step
        logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.size(-1):
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        logits = _keep_mass(logits, -logits, cfg.top_p)  # most probable first
    if cfg.typical_p is not None and cfg.typical_p < 1.0:
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
        logits = _keep_mass(logits, (-logp - entropy).abs(), cfg.typical_p)  # most typical first
    if cfg.min_p is not None:  # transformers' MinPLogitsWarper: below min_p · max p (the top token stays)
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < cfg.min_p * probs.amax(-1, keepdim=True), float("-inf"))
    if cfg.epsilon is not None:  # transformers' EpsilonLogitsWarper
        logits = _drop_below(logits, logits.softmax(-1), cfg.epsilon)
    if cfg.eta is not None:  # transformers' EtaLogitsWarper: η = min(ε, √ε · e^(−H)), H the entropy of the row
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
        cutoff = torch.clamp(math.sqrt(cfg.eta) * torch.exp(-entropy), max=cfg.eta)
        logits = _drop_below(logits, logp.exp(), cutoff)
    if cfg.top_nsigma is not None:
        logits = _top_nsigma(logits, cfg.top_nsigma)
    return logits


def _drop_below(logits: torch.Tensor, probs: torch.Tensor, cutoff: float | torch.Tensor) -> torch.Tensor:
    """Tokens of probability below ``cutoff`` get −inf, except those tied with the row's top logit."""
    drop = (probs < cutoff) & (logits < logits.amax(-1, keepdim=True))
    return logits.masked_fill(drop, float("-inf"))


def _top_nsigma(logits: torch.Tensor, n: float) -> torch.Tensor:
    """Top-nσ (Tang et al. 2025): logits below max − n·σ get −inf, the max, mean and population standard deviation
    over the row's finite logits, as llama.cpp's ``llama_sampler_top_n_sigma_apply`` (src/llama-sampling.cpp)
    computes them; a row of one finite logit is left as it is."""
    finite = torch.isfinite(logits)
    count = finite.sum(-1, keepdim=True)
    values = logits.masked_fill(~finite, 0.0)
    mean = values.sum(-1, keepdim=True) / count
    std = (((values - mean) * finite).square().sum(-1, keepdim=True) / count).sqrt()
    cut = logits.masked_fill(~finite, float("-inf")).amax(-1, keepdim=True) - n * std
    return logits.masked_fill((logits < cut) & (count > 1), float("-inf"))


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs (B, V) (weights, need not sum to 1) by inverse CDF -> (B,).

    The same distribution as ``torch.multinomial(probs, 1)``, which draws an exponential variate per
    vocabulary entry and is much slower on a CPU (benchmarks/results/PERFORMANCE.md).
    """
    cdf = probs.double().cumsum(-1)  # (B, V)
    u = (1.0 - torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_max(probs.shape[-1] - 1)  # u ∈ (0, total]: p > 0 only


NUCLEUS_TRIES = 32  # rejection rounds before the exact sort-based filter takes the rows still pending


def sample_token(logits: torch.Tensor, cfg: DecodingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from logits (B, V) filtered as ``filter_logits`` says -> (B,).

    Top-p without sorting the vocabulary (a sort costs more than the step on a CPU): draw v from the
    whole distribution and keep it iff the mass of the tokens strictly more probable than v is
    below top_p, i.e. v is in the nucleus; redraw the rows that were not. Accepted draws follow p
    restricted to the nucleus and renormalised: exactly top-p sampling (tokens tied at the nucleus
    boundary are all kept). A round is accepted with probability >= top_p.
    """
    logits = logits.float()
    if any(getattr(cfg, knob) is not None for knob in ("typical_p", *THRESHOLDS)):
        return draw(filter_logits(logits, cfg).softmax(-1), generator)
    probs = filter_logits(logits, DecodingConfig(temperature=cfg.temperature, top_k=cfg.top_k)).softmax(-1)
    token = draw(probs, generator)
    if cfg.top_p is None or cfg.top_p >= 1.0:
        return token
    rows = None  # the rows still pending; None: all of them, read in place (no copy of probs)
    for _ in range(NUCLEUS_TRIES):
        pending, drawn = (probs, token) if rows is None else (probs[rows], token[rows])  # (R, V), (R,)
        p_token = pending.gather(-1, drawn[:, None])  # (R, 1)
        mass_before = (pending * (pending > p_token)).sum(-1)  # strictly more probable tokens
        outside = mass_before >= cfg.top_p  # drawn outside the nucleus
        rows = outside.nonzero().squeeze(-1) if rows is None else rows[outside]
        if rows.numel() == 0:
            return token
        token[rows] = draw(probs[rows], generator)
    rows = slice(None) if rows is None else rows  # None: no round ran (NUCLEUS_TRIES = 0)
    token[rows] = draw(filter_logits(logits[rows], cfg).softmax(-1), generator)
    return token


def _keep_mass(logits: torch.Tensor, order_key: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep tokens in ascending ``order_key`` until their probability reaches ``mass`` (>= 1 token)."""
    order = torch.argsort(order_key, dim=-1)
    probs = logits.softmax(-1).gather(-1, order)
    # drop a token when the mass strictly before it already reaches ``mass``
    drop_sorted = probs.cumsum(dim=-1) - probs >= mass
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue prompts (B, P) by ``max_new_tokens`` tokens -> continuations (B, max_new_tokens)."""
    B, P = prompt.shape
    total = P + max_new_tokens
    if total > model.cfg.context:
        raise ConfigError(
            f"prompt ({P}) + continuation ({max_new_tokens}) = {total} tokens is longer than "
            f"model.context={model.cfg.context}"
        )
    was_training = model.training
    model.eval()
    device = prompt.device.type
    # Keep autocast's bf16 weight copies across the decoding steps: Lightning's training-step
    # autocast turns that cache off, and then every step of every linear re-casts its weight.
    recast = torch.autocast(
        device, dtype=torch.get_autocast_dtype(device), enabled=torch.is_autocast_enabled(device), cache_enabled=True
    )
    try:
        with recast, kernels.prepacked_weights(model, rows=B):
            return _decode(model, prompt, max_new_tokens, cfg, generator)
    finally:
        model.train(was_training)


def _decode(model: GPT, prompt: torch.Tensor, max_new_tokens: int, cfg: DecodingConfig, generator) -> torch.Tensor:
    if cfg.strategy == "beam":
        return _beam_search(model, prompt, max_new_tokens, cfg.beam_size)
    if cfg.strategy == "contrastive":
        return _contrastive_search(model, prompt, max_new_tokens, cfg.top_k, cfg.penalty_alpha)
    return _ancestral(model, prompt, max_new_tokens, cfg, generator)


def _ancestral(model: GPT, prompt: torch.Tensor, n: int, cfg: DecodingConfig, generator) -> torch.Tensor:
    cache = model.new_cache(prompt.shape[1] + n)
    out = prompt.new_empty(prompt.shape[0], n)
    logits = model(prompt, cache=cache, last_only=True)[:, -1]  # prefill: (B, V)
    for t in range(n):
        if cfg.strategy == "greedy":
            token = logits.argmax(dim=-1)
        else:
            token = sample_token(logits, cfg, generator)
        out[:, t] = token
        if t + 1 < n:
            logits = model(token[:, None], cache=cache, last_only=True)[:, -1]
    return out


def _beam_search(model: GPT, prompt: torch.Tensor, n: int, beam_size: int) -> torch.Tensor:
    B, P = prompt.shape
    K = beam_size
    cache = model.new_cache(P + n)
    logits = model(prompt.repeat_interleave(K, dim=0), cache=cache, last_only=True)[:, -1]  # (B·K, V)
    V = logits.shape[-1]
    scores = torch.full((B, K), float("-inf"), device=prompt.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    tokens = prompt.new_empty(B * K, 0)
    rows = torch.arange(B, device=prompt.device)[:, None] * K  # (B, 1) first row of each prompt's beams
    for t in range(n):
        candidates = scores[..., None] + logits.float().log_softmax(-1).view(B, K, V)  # (B, K, V)
        scores, flat = candidates.view(B, K * V).topk(K, dim=-1)  # (B, K)
        parent = (rows + flat // V).flatten()  # (B·K,) row of the beam each survivor extends
        token = (flat % V).flatten()
        tokens = torch.cat([tokens[parent], token[:, None]], dim=1)
        if t + 1 < n:
            cache.reorder(parent)
            logits = model(token[:, None], cache=cache, last_only=True)[:, -1]
    best = scores.argmax(-1)  # equal lengths: no length penalty needed
    return tokens.view(B, K, n)[torch.arange(B), best]


def _contrastive_search(model: GPT, prompt: torch.Tensor, n: int, k: int, alpha: float) -> torch.Tensor:
    B, P = prompt.shape
    cache = model.new_cache(P + n)
    h = model.hidden(prompt, cache=cache)  # (B, P, D)
    context = F.normalize(h.float(), dim=-1)  # unit hidden states of every position so far
    logits = model.head(h[:, -1])  # (B, V)
    out = prompt.new_empty(B, n)
    batch = torch.arange(B, device=prompt.device)
    for t in range(n):
        probs = logits.float().softmax(-1)
        top_p, top_ids = probs.topk(k, dim=-1)  # (B, k)
        # run every candidate one step: the cache is expanded to B·k rows
        cache.reorder(batch.repeat_interleave(k))
        h_cand = model.hidden(top_ids.reshape(B * k, 1), cache=cache)[:, -1]  # (B·k, D)
        unit = F.normalize(h_cand.float(), dim=-1).view(B, k, -1)
        penalty = (unit @ context.transpose(1, 2)).max(-1).values  # (B, k) max cosine to the context
        score = (1 - alpha) * top_p - alpha * penalty
        choice = score.argmax(-1)  # (B,)
        out[:, t] = top_ids[batch, choice]
        chosen_rows = batch * k + choice
        cache.reorder(chosen_rows)
        chosen_h = h_cand[chosen_rows]  # (B, D)
        context = torch.cat([context, unit[batch, choice][:, None]], dim=1)
        if t + 1 < n:
            logits = model.head(chosen_h)
    return out
