"""Batched incremental decoding on the backbone's KV cache.

One loop serves every strategy: the prompt is run once (prefill), then each step feeds only the
newest token and computes the LM head on the last position only. A strategy is a
``DecodingConfig``: greedy, or sampling with temperature, top-k (Fan et al. 2018) and
top-p / nucleus (Holtzman et al. 2020) filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lit_modules.model import GPT

STRATEGIES = ("greedy", "sample")


@dataclass
class DecodingConfig:
    name: str = "greedy"
    strategy: str = "greedy"  # greedy | sample
    temperature: float = 1.0
    top_k: int | None = None  # keep the k most probable tokens
    top_p: float | None = None  # keep the smallest set with cumulative probability >= top_p

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"decoding.strategy={self.strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
        if self.temperature <= 0:
            raise ValueError(f"decoding.temperature={self.temperature} is not allowed; use > 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"decoding.top_k={self.top_k} is not allowed; use an integer >= 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"decoding.top_p={self.top_p} is not allowed; use 0 < top_p <= 1")


def filter_logits(logits: torch.Tensor, cfg: DecodingConfig) -> torch.Tensor:
    """Apply temperature, top-k and top-p to logits (B, V); removed tokens get -inf."""
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.size(-1):
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (keeps >= 1 token)
        drop_sorted = probs.cumsum(dim=-1) - probs >= cfg.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: torch.Tensor, cfg: DecodingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Logits (B, V) of the last position -> next token ids (B,)."""
    if cfg.strategy == "greedy":
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), cfg).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue prompts (B, P) by ``max_new_tokens`` tokens -> continuations (B, max_new_tokens).

    No early stop: every row gets exactly ``max_new_tokens`` tokens.
    """
    B, P = prompt.shape
    total = P + max_new_tokens
    if total > model.cfg.context:
        raise ValueError(
            f"prompt ({P}) + continuation ({max_new_tokens}) = {total} tokens is longer than "
            f"model.context={model.cfg.context}"
        )
    was_training = model.training
    model.eval()
    cache = model.new_cache(total)
    out = prompt.new_empty(B, max_new_tokens)
    logits = model(prompt, cache=cache, last_only=True)[:, -1]  # prefill: (B, V)
    for t in range(max_new_tokens):
        token = next_token(logits, cfg, generator)  # (B,)
        out[:, t] = token
        if t + 1 < max_new_tokens:
            logits = model(token[:, None], cache=cache, last_only=True)[:, -1]
    model.train(was_training)
    return out
