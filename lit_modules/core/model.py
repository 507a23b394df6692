"""The shared GPT backbone: a plain ``nn.Module`` that returns logits and never a loss.

GPT-2 shaped (Radford et al. 2019): token + learned position embeddings, pre-LN blocks, causal
self-attention through ``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU),
tied input/output embeddings, GPT-2 init with residual projections scaled by 1/sqrt(2·n_layer), and an
output bias (``head_bias``) that starts at the train split's log unigram (``init_output_bias``).

What objectives use: ``hidden(idx)`` (final-layer states), ``token_losses`` / ``nll`` / ``map_logits``
(the LM head in chunks, ``lit_modules/head.py``), ``head(h)`` (logits), ``output_embedding`` (the tied (V, D)
matrix, to score a few rows) and ``forward(idx, cache=...)`` for decoding with a KV cache. The speed tricks
(attention kernels, layouts) live in ``lit_modules/kernels.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lit_modules.core import head, kernels
from lit_modules.core.errors import ConfigError
from lit_modules.core.head import TokenFn
from lit_modules.core.kv_cache import KVCache

# model.activation -> F.gelu's ``approximate``: the exact GELU, or GPT-2's tanh form (Hendrycks & Gimpel 2016), which
# Hugging Face names gelu_new; a pretrained GPT-2 is imported with the form it was trained with
ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    context: int = 128  # longest sequence the position table covers
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True
    head_bias: bool = True  # an output bias b: logits h·Eᵀ + b, b set to the data's log unigram (init_output_bias)
    activation: str = "gelu"  # the MLP's: "gelu" exact (erf), "gelu_tanh" GPT-2's tanh form (its checkpoints)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}={value!r} is not allowed; use a positive integer")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} is not allowed; use 0 <= dropout < 1")
        if self.activation not in ACTIVATIONS:
            allowed = ", ".join(ACTIVATIONS)
            raise ConfigError(f"model.activation={self.activation!r} is not allowed; use one of: {allowed}")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.is_residual_projection = True  # scaled init, see GPT._init_weights
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        # (B, T, D) -> (B, H, T, hd)
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = kernels.causal_attention(q, k, v, dropout)
        else:  # decoding: the new queries attend to the cached keys and their own
            past = cache.length
            k, v = cache.update(layer, k, v)
            y = self._attend_cached(q, k, v, past, dropout)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, H, T, hd) -> (B, T, D)
        return self.proj(y)

    @staticmethod
    def _attend_cached(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, dropout: float) -> torch.Tensor:
        T = q.shape[2]
        if past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        if T == 1:  # one new query attends to every cached position
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        # a chunk after a prefix: query i sees keys 0 .. past+i
        mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(cfg.dropout)
        # the exact (erf) GELU by default, as nanoGPT: faster than GPT-2's tanh form on CPUs
        # (benchmarks/results/PERFORMANCE.md); the tanh form for GPT-2's own checkpoints
        self.approximate = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.ln_1(x), cache, layer))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.head_bias)
        self.lm_head.weight = self.wte.weight  # tied input/output embeddings
        self.apply(self._init_weights)
        self.compiled_blocks: list[nn.Module] | None = None  # see compile_blocks; a plain list: no extra state
        self.compile_options: dict | None = None
        self._compiled_losses: dict = {}  # closed-form LM-head losses compiled with compile_options

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` the blocks for passes without a KV cache, and the closed-form losses of
        ``token_losses``. Decoding stays eager: its lengths change at every step."""
        self.compiled_blocks = [torch.compile(block, **options) for block in self.blocks]
        self.compile_options = options

    def __getstate__(self) -> dict:
        # copies (e.g. a frozen reference model) and pickles carry the eager blocks only
        return {**self.__dict__, "compiled_blocks": None, "compile_options": None, "_compiled_losses": {}}

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2: N(0, 0.02), zero biases, residual projections N(0, 0.02/sqrt(2·n_layer)).
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * self.cfg.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def output_embedding(self) -> torch.Tensor:
        """The tied (V, D) output embedding: row v scores token v as h · e_v (+ b_v)."""
        return self.lm_head.weight

    @property
    def output_bias(self) -> torch.Tensor | None:
        """The output bias (V,), or None (``head_bias=false``)."""
        return self.lm_head.bias

    @torch.no_grad()
    def init_output_bias(self, unigram_counts: torch.Tensor) -> None:
        """b = log of the train split's add-one unigram distribution: the untrained model predicts the unigram
        (Karpathy 2019, "init well"; Labeau & Allauzen 2018 for NCE). docs/recipe.md says what it changed."""
        if self.lm_head.bias is not None:
            counts = unigram_counts.double().clamp_min(0) + 1.0
            self.lm_head.bias.copy_((counts / counts.sum()).log().to(self.lm_head.bias))

    def num_params(self, non_embedding: bool = True) -> int:  # as nanoGPT: position embeddings aside
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) -> final-layer states (B, T, D), after the last LayerNorm."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.context:
            raise ValueError(f"sequence of {start + T} tokens is longer than model.context={self.cfg.context}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, D)
        blocks = self.compiled_blocks if cache is None and self.compiled_blocks is not None else self.blocks
        for layer, block in enumerate(blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """States (..., D) -> logits (..., V)."""
        return self.lm_head(h)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V), or (B, 1, V) with ``last_only`` (decoding)."""
        h = self.hidden(idx, cache)
        if last_only:
            h = h[:, -1:]
        return self.head(h)

    def token_losses(
        self, h: torch.Tensor, loss_fn: TokenFn, *per_token: torch.Tensor, grad_fn: TokenFn | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-token losses loss_fn(logits_t, *per_token_t) of states h (..., D) -> losses (...), stats (...),
        with the head's logits computed in chunks and never kept (``lit_modules/head.py``). ``grad_fn``: the
        same loss with its gradient in closed form, used for training instead of autograd."""
        compiled = None
        if self.compile_options is not None and grad_fn is not None:
            if grad_fn not in self._compiled_losses:  # a bound method equals another of the same object
                self._compiled_losses[grad_fn] = head.compiled_chunk(grad_fn, self.compile_options)
            compiled = self._compiled_losses[grad_fn]
        return head.token_losses(self.output_embedding, self.output_bias, h, loss_fn, per_token, grad_fn, compiled)

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """States (..., D), next tokens (...) -> −log p(target) (...), through the chunked head."""
        return self.token_losses(h, head.nll_loss, targets, grad_fn=head.nll_loss_and_grad)[0]

    def map_logits(self, h: torch.Tensor, fn, *per_token: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """fn(logits, *per_token) over states h (..., D) in the head's chunks, no gradient (argmax, a draw, the
        evaluation's per-token statistics)."""
        return head.map_logits(self.output_embedding, self.output_bias, h, fn, per_token, rows)

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return KVCache(self.cfg.n_layer, max_len or self.cfg.context)
