"""The shared GPT backbone: a plain ``nn.Module`` that returns logits and never a loss.

GPT-2 shaped (Radford et al. 2019): token + learned position embeddings, pre-LN blocks, causal
self-attention through ``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU),
tied input/output embeddings, GPT-2 init with residual projections scaled by 1/sqrt(2·n_layer), and an
output bias (``head_bias``) that starts at the train split's log unigram (``init_output_bias``).

What objectives use: ``hidden(idx)`` (final-layer states after the last LayerNorm), ``head(h)``
(logits), ``output_embedding`` (the tied (V, D) matrix, for objectives that score a few rows) and
``forward(idx, cache=...)`` for incremental decoding with a KV cache.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lit_modules.util import ConfigError


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

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}={value!r} is not allowed; use a positive integer")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} is not allowed; use 0 <= dropout < 1")


class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions.

    ``length`` is the number of positions already written; the next forward call writes
    positions ``length .. length+T-1``. ``reorder`` selects batch rows (beam search).
    """

    def __init__(self, n_layer: int, max_len: int) -> None:
        self.n_layer = n_layer
        self.max_len = max_len
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, hd) at the current position; return all keys/values so far."""
        B, H, T, hd = k.shape
        if self.keys[layer] is None:
            self.keys[layer] = k.new_empty(B, H, self.max_len, hd)
            self.values[layer] = v.new_empty(B, H, self.max_len, hd)
        keys, values = self.keys[layer], self.values[layer]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len={self.max_len}")
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (LongTensor of size B'), e.g. surviving beams."""
        for i in range(self.n_layer):
            if self.keys[i] is not None:
                self.keys[i] = self.keys[i].index_select(0, rows)
                self.values[i] = self.values[i].index_select(0, rows)


class Linear(nn.Linear):
    """``nn.Linear`` that can hold, while a model decodes on a CPU under bf16 autocast, a copy of its weight
    prepacked in oneDNN's blocked layout (``GPT.decoding_weights``). Autocast's ``F.linear`` hands oneDNN
    the (out, in) weight, which it re-lays out at every call; at one token per row that is most of the
    product's time (16 rows: 53 µs packed vs 75 µs for 256 -> 768, 217 vs 317 µs for the head): 0.90x
    the time of a top-p decoding at the perf shape (8 alternating pairs). The same bf16 products summed in
    fp32, for some shapes in another order (K = 1024 at 128 rows: 0.4% of the logits one bf16 step apart)."""

    packed: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (weight, bias) in bf16, oneDNN layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return super().forward(x)
        weight, bias = self.packed
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "none", [], "")

    def pack(self, rows: int) -> None:
        """Prepack the weight for inputs of about ``rows`` rows."""
        weight = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach().to(torch.bfloat16), rows)
        bias = None if self.bias is None else self.bias.detach().to(torch.bfloat16)
        self.packed = (weight, bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.is_residual_projection = True  # scaled init, see GPT._init_weights
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        # (B, T, D) -> (B, H, T, hd)
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        out_dtype = q.dtype
        # CPU under bf16 autocast, when a backward pass follows: the bf16 flash forward with the fp32 flash
        # backward (_CPUCausalAttention); where that pairing is not available (dropout, torch.compile,
        # another torch) the whole kernel in fp32. Without gradients (evaluation, decoding) bf16, and the
        # KV cache stays bf16.
        training_on_cpu = q.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.is_grad_enabled()
        if training_on_cpu and cache is None and dropout == 0.0 and _CPUCausalAttention.usable(q):
            y = _CPUCausalAttention.apply(q, k, v)
        else:
            if training_on_cpu:
                q, k, v = q.float(), k.float(), v.float()
            past = 0
            if cache is not None:
                past = cache.length
                k, v = cache.update(layer, k, v)
            with torch.autocast("cpu", enabled=False) if training_on_cpu else contextlib.nullcontext():
                y = self._attend(q, k, v, past, dropout)
        y = y.to(out_dtype).transpose(1, 2).reshape(B, T, D)  # (B, H, T, hd) -> (B, T, D)
        return self.proj(y)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, dropout: float) -> torch.Tensor:
        T = q.shape[2]
        if past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        if T == 1:  # one new query attends to every cached position
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        # a chunk after a prefix: query i sees keys 0 .. past+i
        mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class _CPUCausalAttention(torch.autograd.Function):
    """Causal attention softmax(q·kᵀ/√d)·v for training on a CPU under bf16 autocast: the bf16 flash
    kernel's forward (fp32 accumulation, its log-sum-exp kept) and the fp32 flash kernel's backward on
    the same bf16 values. torch's own kernels, paired differently: SDPA runs both passes in the dtype
    of its inputs, and on this project's 2-core AMX CPU the bf16 forward is 2.2x faster than the fp32
    one while the bf16 backward is 1.3x slower than the fp32 one (B=16 H=4 T=256 hd=64): 0.964x the
    whole training step's time against fp32 both ways (12 alternating pairs of 3-step windows)."""

    @staticmethod
    def usable(q: torch.Tensor) -> bool:
        return (
            q.dtype == torch.bfloat16
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward")
            and not torch.compiler.is_compiling()  # compiled blocks keep SDPA, which inductor knows
        )

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        ctx.save_for_backward(q, k, v, out, logsumexp)
        return out  # (B, H, T, hd) bf16

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        q, k, v, out, logsumexp = ctx.saved_tensors
        fp32 = [t.float() for t in (grad_out, q, k, v, out)]
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(*fp32, logsumexp, 0.0, True)
        return tuple(g.to(q.dtype) for g in grads)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.proj = Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU, as nanoGPT: 2.5x faster than GPT-2's tanh form on this project's CPU
        return self.dropout(self.proj(F.gelu(self.fc(x))))


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
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size, bias=cfg.head_bias)
        self.lm_head.weight = self.wte.weight  # tied input/output embeddings
        self.apply(self._init_weights)
        self.compiled_blocks: list[nn.Module] | None = None  # see compile_blocks; a plain list: no extra state
        self.compile_options: dict | None = None  # set by compile_blocks: the LM-head losses compile too
        self.compiled_losses: dict = {}  # per-chunk loss functions compiled by objectives.chunked_head

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` each block for the passes without a KV cache (training, teacher-forced
        evaluation), and from then on the objectives' per-chunk LM-head losses (objectives/chunked_head.py)
        with the same options. Decoding keeps the eager blocks: its lengths change at every step, and
        one decoding step is too small for compilation to pay off."""
        self.compiled_blocks = [torch.compile(block, **options) for block in self.blocks]
        self.compile_options = options

    def __getstate__(self) -> dict:
        # copies (e.g. a frozen reference model) and pickles carry the eager blocks only
        return {**self.__dict__, "compiled_blocks": None, "compile_options": None, "compiled_losses": {}}

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
        """b = log of the train split's unigram distribution (add-one smoothed), so that the untrained
        model already predicts the unigram ("init well", Karpathy 2019; for NCE, Labeau & Allauzen 2018
        initialise the output bias from the noise distribution). Without it every objective first spends
        ~100 steps on a unigram plateau whose end is chaotic (README, "Why the rows no longer flip"); a
        bias that starts at zero made that plateau longer, not shorter."""
        if self.lm_head.bias is not None:
            counts = unigram_counts.double().clamp_min(0) + 1.0
            self.lm_head.bias.copy_((counts / counts.sum()).log().to(self.lm_head.bias))

    def num_params(self, non_embedding: bool = True) -> int:
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
            cache.advance(T)
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

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return KVCache(self.cfg.n_layer, max_len or self.cfg.context)

    @contextlib.contextmanager
    def decoding_weights(self, rows: int):
        """While decoding (no gradients) on a CPU under bf16 autocast, where oneDNN can: every Linear
        multiplies with its weight prepacked for ``rows`` rows (``Linear``); elsewhere nothing changes.
        The weights must not change inside."""
        linears = [m for m in self.modules() if isinstance(m, Linear)]
        usable = (
            self.output_embedding.device.type == "cpu"
            and not torch.is_grad_enabled()
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
        try:
            # a oneDNN build without this layout (not x86) raises: the layers not packed stay plain autocast
            with contextlib.suppress(RuntimeError):
                for linear in linears if usable else []:
                    linear.pack(rows)
            yield
        finally:
            for linear in linears:
                linear.packed = None

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        strategy: str = "greedy",
        generator: torch.Generator | None = None,
        **sampling,
    ) -> torch.Tensor:
        """KV-cache decoding for objectives that decode: prompts (B, P) -> continuations (B, N).

        ``strategy`` greedy or sample, ``sampling`` temperature / top_k / top_p (lit_modules.decoding).
        """
        from lit_modules.decoding import DecodingConfig, generate

        return generate(self, prompt, max_new_tokens, DecodingConfig(strategy=strategy, **sampling), generator)
