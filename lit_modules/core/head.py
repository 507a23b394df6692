"""The LM head's per-token losses over the full vocabulary without materialising the (N, V) logits.

Most objectives are a per-token function of the next-token logits: ℓ_t = f(z_t, y_t, ...) with
z_t = h_t · Eᵀ + b (h the final hidden state, E the tied output embedding, b the output bias if any).
Written plainly, ``f(model(x))`` keeps the (N, V) logits, their fp32 copy, the log-softmax and its
gradient in memory: at N = 4096 tokens and V = 8192 that is four 134 MB tensors, and on a CPU the
passes over them cost more than the LM-head matmuls themselves.

``token_losses`` computes z in row chunks small enough for the cache, evaluates f on each chunk in fp32
and takes ∂ℓ/∂z of that chunk right away: by autograd of f, or from a closed form given beside it
(``grad_fn``: it returns ``TokenLoss.grad`` and may overwrite its logits; half the passes over the chunk).
Only ∂ℓ/∂z is kept, in the matmul dtype; the backward pass is two matmuls, ∂h = G·E and ∂E = Gᵀ·h, and
∂b = Σ_t G_t, G scaled by the incoming per-token gradient. Σ_t G_t is summed chunk by chunk in fp32 while each
chunk's gradient is still in the cache: when the incoming gradient is one value for every token (a mean or a
sum), ∂b is that sum scaled, with no pass over the (N, V) gradient in the backward. ``GPT.token_losses`` is
the entry point.
Written here because no maintained library offers a fused linear + arbitrary-loss kernel for CPUs
(Liger's fused linear cross-entropy is Triton, GPU only, and cross-entropy only); its cost against the
plain head is in ``benchmarks/results/PERFORMANCE.md``.

The in-place helpers at the end (``softmax_nll_``, ``minus_onehot_``, ...) are for writing closed forms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lit_modules.core import kernels


@dataclass
class TokenLoss:
    loss: torch.Tensor  # (r,) per-token loss
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # (r,) each, logged, no gradient
    grad: torch.Tensor | None = None  # (r, V) ∂loss/∂z, set by a closed form only


# loss_fn(z (r, V) fp32 logits, *per_token (r, ...)) -> TokenLoss; a grad_fn returns the same with ``grad``
TokenFn = Callable[..., TokenLoss]

CHUNK_ELEMENTS = 1 << 21  # logits per chunk on a CPU: 8 MB in fp32 (the best of 0.5-2 M at V = 8192)
# On a GPU the chunks are there for memory only and every chunk costs ~10 kernel launches: 64 M logits
# (256 MB in fp32) is ~1,300 rows of GPT-2's 50k vocabulary, ~13 chunks for 16 x 1024 tokens.
GPU_CHUNK_ELEMENTS = 1 << 26


def token_losses(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    h: torch.Tensor,
    loss_fn: TokenFn,
    per_token: tuple[torch.Tensor, ...] = (),
    grad_fn: TokenFn | None = None,
    compiled: Callable | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token losses loss_fn(h_t · Eᵀ + b, *per_token_t) for states h (..., D) -> losses (...), stats (...).

    ``weight`` E (V, D), ``bias`` b (V,) or None. ``per_token`` tensors have h's leading shape (...) and are
    cut into the same chunks. The losses carry gradients to h, E and b (through ``grad_fn`` when given,
    else autograd of ``loss_fn``); the stats are detached. ``compiled``: ``grad_fn`` compiled by
    ``compiled_chunk`` (the model's, when its blocks are compiled).
    """
    lead = h.shape[:-1]
    flat_h = h.reshape(-1, h.shape[-1])
    flat_extra = [x.reshape(flat_h.shape[0], *x.shape[len(lead) :]) for x in per_token]
    stats: dict[str, torch.Tensor] = {}
    trains = weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and (flat_h.requires_grad or trains):
        fns = (loss_fn, grad_fn, compiled if grad_fn is not None else None)
        losses = _ChunkedHead.apply(flat_h, weight, bias, fns, stats, *flat_extra)
    else:
        losses = _forward(flat_h, weight, bias, (loss_fn, None, None), stats, flat_extra, keep_grad=False)[0]
    return losses.view(lead), {k: v.view(lead) for k, v in stats.items()}


@torch.no_grad()
def map_logits(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    h: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    per_token: tuple[torch.Tensor, ...] = (),
    rows: int | None = None,
) -> torch.Tensor:
    """fn(h_t · Eᵀ + b, *per_token_t) over states h (..., D) in row chunks, no gradient -> fn's output, (...) or
    (..., k) when fn returns (r, k) per chunk of r rows.

    For per-position decisions over the vocabulary (argmax, a draw) and per-token statistics (the evaluation's)
    without the (N, V) logits. ``per_token`` tensors have h's leading shape and are cut into the same chunks;
    ``rows`` per chunk: the head's default unless given (a few hundred keep a chunk's fp32 passes in the cache).
    """
    lead = h.shape[:-1]
    flat_h = h.reshape(-1, h.shape[-1])
    flat_extra = [x.reshape(flat_h.shape[0], *x.shape[len(lead) :]) for x in per_token]
    dtype = _compute_dtype(flat_h)
    rows = rows or _chunk_rows(weight)
    with torch.autocast(h.device.type, enabled=False):
        h_c, w_t = flat_h.to(dtype), kernels.right_operand(weight.to(dtype))
        out = [
            fn(_logits(h_c[start : start + rows] @ w_t, bias), *[x[start : start + rows] for x in flat_extra])
            for start in range(0, flat_h.shape[0], rows)
        ]
    out = torch.cat(out)
    return out.view(*lead, *out.shape[1:])


def compiled_chunk(grad_fn: TokenFn, options: dict) -> Callable:
    """One compiled function that turns a chunk's logits z (r, V), in the matmul dtype, into ∂ℓ/∂z in the
    same memory and returns (ℓ, stats, Σ_t ∂ℓ_t/∂z_t in fp32): the upcast, the closed form's passes over the
    vocabulary and the downcast fuse into one kernel over z instead of ~6 passes (for models whose blocks are
    compiled)."""

    def chunk(z: torch.Tensor, bias: torch.Tensor | None, *extra: torch.Tensor) -> tuple:
        out = grad_fn(_logits(z, bias), *extra)
        z.copy_(out.grad)
        return out.loss, out.stats, out.grad.sum(0)

    return torch.compile(chunk, **{"dynamic": False, **options})


def _chunk_rows(weight: torch.Tensor) -> int:
    """Rows per chunk: about ``CHUNK_ELEMENTS`` (CPU) or ``GPU_CHUNK_ELEMENTS`` logits of a (V, D) embedding."""
    elements = CHUNK_ELEMENTS if weight.device.type == "cpu" else GPU_CHUNK_ELEMENTS
    return max(16, elements // weight.shape[0])


def _logits(z: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The chunk's fp32 logits from h·Eᵀ in the matmul dtype: upcast, then the bias added in place (two
    passes, faster on a CPU than one ``torch.add`` of a bf16 and an fp32 tensor, whose mixed-dtype loop is slow;
    the same fp32 sums)."""
    if bias is None:
        return z.float()
    if z.dtype == torch.float32:
        return z + bias.detach()
    return z.float().add_(bias.detach().float())


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
    fns: tuple[TokenFn, TokenFn | None, Callable | None],
    stats: dict[str, torch.Tensor],
    extra: list[torch.Tensor],
    keep_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Losses (N,), the logits' gradient G (N, V) in the matmul dtype (``keep_grad``), the matmul operands,
    and Σ_t G_t in fp32 (V,) when there is a trained bias."""
    loss_fn, grad_fn, compiled = fns
    dtype = _compute_dtype(h)
    rows = _chunk_rows(weight)
    with torch.autocast(h.device.type, enabled=False):
        h_c, w_c = h.detach().to(dtype), weight.detach().to(dtype)
        w_t = kernels.right_operand(w_c)  # (D, V)
        N, V = h.shape[0], weight.shape[0]
        losses = torch.empty(N, dtype=torch.float32, device=h.device)
        grad_logits = torch.empty(N, V, dtype=dtype, device=h.device) if keep_grad else None
        trains_bias = keep_grad and bias is not None and bias.requires_grad
        grad_sum = torch.zeros(V, dtype=torch.float32, device=h.device) if trains_bias else None
        if compiled is not None:  # one fused pass per row keeps no (r, V) temporaries: one chunk, one launch
            rows = N
        for start in range(0, N, rows):
            end = min(start + rows, N)
            chunk_extra = [x[start:end] for x in extra]
            if compiled is not None:  # the logits are written where their gradient goes, then turned into it
                z = torch.mm(h_c[start:end], w_t, out=grad_logits[start:end])
                loss, chunk_stats, chunk_grad_sum = compiled(z, bias, *chunk_extra)
                if grad_sum is not None:
                    grad_sum += chunk_grad_sum
            else:
                z = _logits(h_c[start:end] @ w_t, bias)  # (r, V) fp32
                if not keep_grad:
                    out = loss_fn(z, *chunk_extra)
                elif grad_fn is not None:
                    out = grad_fn(z, *chunk_extra)
                else:
                    with torch.enable_grad():
                        z.requires_grad_(True)
                        out = loss_fn(z, *chunk_extra)
                        out.grad = torch.autograd.grad(out.loss.sum(), z)[0]
                if keep_grad:
                    grad_logits[start:end] = out.grad
                if grad_sum is not None:
                    grad_sum += out.grad.sum(0)
                loss, chunk_stats = out.loss, out.stats
            losses[start:end] = loss.detach()
            for key, value in chunk_stats.items():
                if key not in stats:
                    stats[key] = torch.empty(N, dtype=torch.float32, device=h.device)
                stats[key][start:end] = value.detach()
    return losses, grad_logits, h_c, w_c, grad_sum


class _ChunkedHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, fns, stats, *extra):  # type: ignore[override]
        losses, grad_logits, h_c, w_c, grad_sum = _forward(h, weight, bias, fns, stats, list(extra), keep_grad=True)
        ctx.save_for_backward(grad_logits, h_c, w_c, grad_sum)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):  # type: ignore[override]
        grad_logits, h_c, w_c, grad_sum = ctx.saved_tensors
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
            grad_w = kernels.weight_grad(grad_logits, h_c).contiguous().to(w_dtype)  # (V, D)
            if b_dtype is None:
                grad_b = None
            elif scale is not None and grad_sum is not None:
                grad_b = grad_sum.clone()  # summed in the forward pass; scaled below
            else:
                grad_b = grad_logits.sum(0, dtype=torch.float32)  # (V,), of the scaled G
            if scale is not None:
                grad_h.mul_(scale)
                grad_w.mul_(scale)
                if grad_b is not None:
                    grad_b.mul_(scale)
            if grad_b is not None:
                grad_b = grad_b.to(b_dtype)
        return grad_h, grad_w, grad_b, *([None] * (len(ctx.needs_input_grad) - 3))


# ---- the token NLL, the loss every objective and the evaluation share ----
def at_targets(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """values[..., y] of every row: (..., V) values and (...) token ids -> (...)."""
    return values.gather(-1, targets[..., None]).squeeze(-1)


def nll_loss(z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
    """ℓ_t = −log softmax(z_t)[y_t]."""
    return TokenLoss(-at_targets(z.log_softmax(-1), targets))


def nll_loss_and_grad(z: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
    """The same ℓ_t, and ∂ℓ/∂z = p − onehot(y); z is overwritten."""
    p, nll = softmax_nll_(z, targets)
    return TokenLoss(nll, grad=minus_onehot_(p, targets))


# ---- helpers for closed forms: each overwrites its input, which no autograd graph reads ----
def calibration_stats(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row of fp32 logits z (r, V) and targets (r,) -> (r, 3): the predictive entropy −Σ p log p, the top
    probability (the confidence of top-label calibration) and whether the argmax is the target (1.0 or 0.0)."""
    logp = torch.log_softmax(z, dim=-1)
    entropy = -torch.linalg.vecdot(logp.exp(), logp)
    top_logp, argmax = logp.max(dim=-1)
    return torch.stack([entropy, top_logp.exp(), (argmax == targets).float()], dim=-1)


def log_softmax_nll_(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (r, V) fp32 -> log p (r, V), ℓ = −log p[y] (r,); log p in z's own memory: fewer (r, V) buffers
    through the cache (benchmarks/results/PERFORMANCE.md)."""
    logp = torch.ops.aten._log_softmax.out(z, -1, False, out=z)  # a row's output is written after its reads
    return logp, -at_targets(logp, targets)


def softmax_nll_(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (r, V) fp32 -> p (r, V), ℓ = −log p[y] (r,); p in z's own memory (log p's, then exp in place)."""
    logp, nll = log_softmax_nll_(z, targets)
    return logp.exp_(), nll


def minus_onehot_(grad: torch.Tensor, targets: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """grad[t, y_t] −= scale (in place); returns grad."""
    if torch.compiler.is_compiling():  # a pointwise form fuses with the passes before it; a scatter does not
        onehot = torch.arange(grad.shape[-1], device=grad.device) == targets[:, None]
        scale = scale[:, None] if torch.is_tensor(scale) and scale.dim() else scale
        return grad.sub_(onehot * scale)
    if not torch.is_tensor(scale):
        scale = torch.tensor(scale, dtype=grad.dtype, device=grad.device)
    return grad.scatter_add_(-1, targets[:, None], -scale.expand(targets.shape[0])[:, None].to(grad.dtype))
