"""Per-token losses over the full vocabulary without materialising the (N, V) logits.

Most objectives are a per-token function of the next-token logits: ℓ_t = f(z_t, y_t, ...) with
z_t = h_t · Eᵀ + b (h the final hidden state, E the tied output embedding, b the output bias if any). Written plainly,
``f(model(x))`` keeps the (N, V) logits, their fp32 copy, the log-softmax and its gradient in
memory: at the benchmark shape (N = 4096 tokens, V = 8192) that is four 134 MB tensors, and on a
CPU the passes over them cost more than the LM-head matmuls themselves.

``token_losses`` computes z in row chunks small enough for the cache, evaluates the objective's own
f on each chunk in fp32 and takes ∂ℓ/∂z of that chunk right away: with autograd, or from the
closed form an objective returns beside the loss (``TokenLoss.grad``; half the passes over the
chunk; each closed form is tested against autograd of the same loss). Only ∂ℓ/∂z is kept, in the
matmul dtype; the backward pass is two matmuls, ∂h = G·E and ∂E = Gᵀ·h, and ∂b = Σ_t G_t, G scaled by
the incoming per-token gradient.
Measured on this repository's benchmark shape (``benchmarks/perf.py``): the LM head + MLE
fwd/bwd takes ~150 ms instead of ~410 ms on a 2-core AMX CPU. Written here because no maintained
library offers a fused linear + arbitrary-loss kernel for CPUs (Liger's fused linear cross-entropy
is Triton, GPU only, and cross-entropy only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class TokenLoss:
    loss: torch.Tensor  # (r,) per-token loss, differentiable in z
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # (r,) each, logged, no gradient
    grad: torch.Tensor | None = None  # (r, V) ∂loss/∂z in closed form; None: autograd takes it


# f(z (r, V) fp32 logits, *per_token (r, ...)) -> TokenLoss; with ``closed_form`` it sets ``grad``
TokenFn = Callable[..., TokenLoss]

CHUNK_ELEMENTS = 1 << 21  # logits per chunk on a CPU: 8 MB in fp32 (measured best of 0.5-2 M at V = 8192)
# On a GPU the chunks are there for memory only and every chunk costs ~10 kernel launches: 64 M logits
# (256 MB in fp32) is ~1,300 rows of GPT-2's 50k vocabulary, ~13 chunks for 16 x 1024 tokens.
GPU_CHUNK_ELEMENTS = 1 << 26


def token_losses(
    model: nn.Module, h: torch.Tensor, fn: TokenFn, *per_token: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token losses fn(h_t · Eᵀ, *per_token_t) for states h (..., D) -> losses (...), stats (...).

    ``per_token`` tensors have h's leading shape (...) and are cut into the same chunks. The losses
    carry gradients to h and to the output embedding; the stats are detached.
    """
    lead = h.shape[:-1]
    weight, bias = model.output_embedding, model.output_bias  # (V, D), (V,) or None
    flat_h = h.reshape(-1, h.shape[-1])
    flat_extra = [x.reshape(flat_h.shape[0], *x.shape[len(lead) :]) for x in per_token]
    rows = _chunk_rows(weight)
    stats: dict[str, torch.Tensor] = {}
    trains = weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and (flat_h.requires_grad or trains):
        compiled = _compiled_chunk(model, fn)
        losses = _ChunkedHead.apply(flat_h, weight, bias, fn, compiled, rows, stats, *flat_extra)
    else:
        losses = _forward(flat_h, weight, bias, fn, None, rows, stats, flat_extra, keep_grad=False)[0]
    return losses.view(lead), {k: v.view(lead) for k, v in stats.items()}


@torch.no_grad()
def map_logits(model: nn.Module, h: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn(h_t · Eᵀ + b) over states h (..., D) in the same row chunks, no gradient -> fn's (...) output.

    For per-position decisions over the vocabulary (argmax, a draw) without the (N, V) logits.
    """
    lead = h.shape[:-1]
    weight, bias = model.output_embedding, model.output_bias
    flat_h = h.reshape(-1, h.shape[-1])
    dtype = _compute_dtype(flat_h)
    rows = _chunk_rows(weight)
    with torch.autocast(h.device.type, enabled=False):
        h_c, w_t = flat_h.to(dtype), _transposed(weight.to(dtype))
        out = [fn(_logits(h_c[start : start + rows] @ w_t, bias)) for start in range(0, flat_h.shape[0], rows)]
    return torch.cat(out).view(lead)


def _compiled_chunk(model: nn.Module, fn: TokenFn) -> Callable | None:
    """For a model whose blocks are compiled (``trainer.compile=true``) and a closed-form ``fn``: one
    compiled function that turns a chunk's logits z (r, V), in the matmul dtype, into ∂ℓ/∂z in the same
    memory and returns (ℓ, stats). The upcast, the objective's passes over the vocabulary and the
    downcast fuse into one kernel over z instead of ~6 passes: fused this way (in 1,334-row chunks), the GPT-2
    preset's LM head + NLL forward and backward took 9.6 instead of 19.8 ms on an H100 (2026-11-26).
    Else None (eager)."""
    options = getattr(model, "compile_options", None)
    if options is None or not getattr(fn, "closed_form", False):
        return None
    if fn not in model.compiled_losses:  # a bound method equals another of the same object and function

        def chunk(z: torch.Tensor, bias: torch.Tensor | None, *extra: torch.Tensor) -> tuple[torch.Tensor, dict]:
            out = fn(_logits(z, bias), *extra)
            z.copy_(out.grad)
            return out.loss, out.stats

        model.compiled_losses[fn] = torch.compile(chunk, **{"dynamic": False, **options})
    return model.compiled_losses[fn]


def _chunk_rows(weight: torch.Tensor) -> int:
    """Rows per chunk: about ``CHUNK_ELEMENTS`` (CPU) or ``GPU_CHUNK_ELEMENTS`` logits of a (V, D) embedding."""
    elements = CHUNK_ELEMENTS if weight.device.type == "cpu" else GPU_CHUNK_ELEMENTS
    return max(16, elements // weight.shape[0])


def _transposed(w: torch.Tensor) -> torch.Tensor:
    """Eᵀ (D, V) as the right operand of h·Eᵀ. On a CPU it is copied to a contiguous (D, V) once per call:
    oneDNN's bf16 matmul with a transposed right operand repacks it at every chunk (h·Eᵀ at N = 4096,
    V = 8192, D = 256 in 256-row chunks: 56 vs 25 ms on this project's CPU; 205 vs 118 ms at V = 32768).
    fp32 (MKL) and GPUs read the transposed view at no cost."""
    return w.T.contiguous() if _onednn_bf16(w) else w.T


def _onednn_bf16(t: torch.Tensor) -> bool:
    """A bf16 matmul on a CPU (oneDNN): the layouts above matter there, not for fp32 (MKL: within noise,
    (hᵀ·G)ᵀ even 1.2x slower) or on GPUs."""
    return t.device.type == "cpu" and t.dtype == torch.bfloat16


def _logits(z: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The chunk's fp32 logits from h·Eᵀ in the matmul dtype: upcast, and the bias added in the same pass."""
    return z.float() if bias is None else torch.add(z, bias.detach().float())


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would pick for the LM head, else h's own."""
    device = h.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return h.dtype


def _forward(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    fn: TokenFn,
    compiled: Callable | None,
    rows: int,
    stats: dict[str, torch.Tensor],
    extra: list[torch.Tensor],
    keep_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    dtype = _compute_dtype(h)
    closed = getattr(fn, "closed_form", False)
    with torch.autocast(h.device.type, enabled=False):
        h_c, w_c = h.detach().to(dtype), weight.detach().to(dtype)
        w_t = _transposed(w_c)  # (D, V)
        N, V = h.shape[0], weight.shape[0]
        losses = torch.empty(N, dtype=torch.float32, device=h.device)
        grad_logits = torch.empty(N, V, dtype=dtype, device=h.device) if keep_grad else None
        if compiled is not None:  # one fused pass per row keeps no (r, V) temporaries: one chunk, one launch
            rows = N
        for start in range(0, N, rows):
            end = min(start + rows, N)
            chunk_extra = [x[start:end] for x in extra]
            if compiled is not None:  # the logits are written where their gradient goes, then turned into it
                z = torch.mm(h_c[start:end], w_t, out=grad_logits[start:end])
                loss, chunk_stats = compiled(z, bias, *chunk_extra)
            else:
                z = _logits(h_c[start:end] @ w_t, bias)  # (r, V) fp32
                if keep_grad and not closed:
                    with torch.enable_grad():
                        z.requires_grad_(True)
                        out = fn(z, *chunk_extra)
                        out.grad = torch.autograd.grad(out.loss.sum(), z)[0]
                else:
                    out = fn(z, *chunk_extra)
                if keep_grad:
                    grad_logits[start:end] = out.grad
                loss, chunk_stats = out.loss, out.stats
            losses[start:end] = loss.detach()
            for key, value in chunk_stats.items():
                if key not in stats:
                    stats[key] = torch.empty(N, dtype=torch.float32, device=h.device)
                stats[key][start:end] = value.detach()
    return losses, grad_logits, h_c, w_c


class _ChunkedHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, fn, compiled, rows, stats, *extra):  # type: ignore[override]
        out = _forward(h, weight, bias, fn, compiled, rows, stats, list(extra), keep_grad=True)
        losses, grad_logits, h_c, w_c = out
        ctx.save_for_backward(grad_logits, h_c, w_c)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):  # type: ignore[override]
        grad_logits, h_c, w_c = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        with torch.autocast(h_c.device.type, enabled=False):
            # a mean or a sum: scale after the matmuls. A mean's gradient is one value expanded
            # (stride 0): known without reading it, so no wait for the device there
            if grad_losses.stride(0) == 0 or bool((grad_losses == grad_losses[0]).all()):
                scale = grad_losses[0]
            else:
                scale = None
                grad_logits = (grad_logits.float() * grad_losses[:, None]).to(grad_logits.dtype)  # one rounding
            grad_h = (grad_logits @ w_c).to(h_dtype)  # (N, D)
            grad_w = _weight_grad(grad_logits, h_c).contiguous().to(w_dtype)  # (V, D)
            grad_b = None if b_dtype is None else grad_logits.sum(0, dtype=torch.float32)  # (V,)
            if scale is not None:
                grad_h.mul_(scale)
                grad_w.mul_(scale)
                if grad_b is not None:
                    grad_b.mul_(scale)
            if grad_b is not None:
                grad_b = grad_b.to(b_dtype)
        return grad_h, grad_w, grad_b, *([None] * (len(ctx.needs_input_grad) - 3))


def _weight_grad(grad_logits: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """∂E = Gᵀ·h (V, D) for G (N, V), h (N, D). On a CPU in bf16 taken as (hᵀ·G)ᵀ with hᵀ contiguous: oneDNN's
    bf16 kernel with a transposed left operand is ~1.8x slower (57 vs 32 ms at N = 4096, V = 8192,
    D = 256; 287 vs 158 ms at V = 32768). The same sums of the same bf16 products in fp32; only the
    summation order differs (runs once moved with it, chaotically: README, "Why the rows no longer flip").
    The caller makes it contiguous before the upcast: torch's 2-D transposing copy is fast within one dtype
    only (transpose, then upcast: 5.2 ms; both in one copy: 11.4 ms at V = 8192, D = 256 on this CPU)."""
    if _onednn_bf16(h):
        return (h.T.contiguous() @ grad_logits).T
    return grad_logits.T @ h


def closed_form(fn: TokenFn) -> TokenFn:
    """Mark a ``TokenFn`` that returns ``TokenLoss.grad``: autograd is not used for it."""
    fn.closed_form = True
    return fn


def log_softmax_nll_(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (r, V) fp32 -> log p (r, V), ℓ = −log p[y] (r,); log p in z's own memory: z is consumed.

    On the training path (z needs no gradient) the log-softmax runs in place: fewer (r, V) buffers
    through the cache, ~30% less time in the chunk's elementwise passes on this project's CPU. With
    autograd (the tests take it of the same function to check each closed form) z is left alone."""
    if z.requires_grad:
        logp = z.log_softmax(-1)
    else:
        logp = torch.ops.aten._log_softmax.out(z, -1, False, out=z)  # a row's output is written after its reads
    return logp, -logp.gather(-1, targets[:, None]).squeeze(-1)


def softmax_nll_(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (r, V) fp32 -> p (r, V), ℓ = −log p[y] (r,); p in z's own memory (log p's, then exp in place)."""
    logp, nll = log_softmax_nll_(z, targets)
    return (logp.exp() if logp.requires_grad else logp.exp_()), nll


def scratch(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, to overwrite, when no autograd graph reads it (the training path); else a copy
    (the tests take autograd of the same function to check its closed form)."""
    return t.detach().clone() if t.requires_grad else t


def minus_onehot_(grad: torch.Tensor, targets: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """grad[t, y_t] −= scale (in place); returns grad."""
    if torch.compiler.is_compiling():  # a pointwise form fuses with the passes before it; a scatter does not
        onehot = torch.arange(grad.shape[-1], device=grad.device) == targets[:, None]
        scale = scale[:, None] if torch.is_tensor(scale) and scale.dim() else scale
        return grad.sub_(onehot * scale)
    if not torch.is_tensor(scale):
        scale = torch.tensor(scale, dtype=grad.dtype, device=grad.device)
    return grad.scatter_add_(-1, targets[:, None], -scale.expand(targets.shape[0])[:, None].to(grad.dtype))


@closed_form
def nll_fn(z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
    """ℓ_t = −log softmax(z_t)[y_t], the token NLL; ∂ℓ/∂z = p − onehot(y)."""
    p, nll = softmax_nll_(z, targets)
    return TokenLoss(nll, grad=minus_onehot_(p, targets))
