"""Speed tricks for the backbone, kept out of ``model.py``: one switch turns all of them off.

Every function here computes what its plain torch counterpart computes (the same products, summed in
fp32, sometimes in another order) and only changes how. With ``OBJBENCH_PLAIN_KERNELS=1`` in the
environment, or ``plain_kernels()`` around the code, each one takes the plain path instead: a check
that a result does not hinge on them, and the reference that ``tests/test_kernels.py`` compares
against. Each was kept because it measured faster with ``benchmarks/perf.py``'s paired windows (the trick
against the plain path, alternating windows of the same step) and ``--profile`` (torch.profiler, op by
op); the numbers are in ``benchmarks/results/PERFORMANCE.md``.

- ``causal_attention``: on a CPU under bf16 autocast with gradients, torch's bf16 flash forward paired
  with its fp32 flash backward (SDPA runs both passes in its inputs' dtype; on AMX CPUs the bf16
  forward is the faster one and the bf16 backward the slower one).
- ``prepacked_weights``: while decoding on a CPU under bf16 autocast, every ``nn.Linear`` multiplies with
  its weight prepacked in oneDNN's blocked layout, instead of oneDNN re-laying it out at each call.
- ``right_operand`` / ``weight_grad``: operand layouts of the LM head's bf16 matmuls on a CPU for which
  oneDNN does not repack a transposed operand at every call.
- ``keep_freed_memory``: glibc keeps large freed blocks, so a training step does not page-fault and
  zero-fill the same buffers again at every step (``page_faults_per_step`` counts them).
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

_enabled = os.environ.get("OBJBENCH_PLAIN_KERNELS", "") in ("", "0")


def enabled() -> bool:
    """Whether the tricks are on (the default; ``OBJBENCH_PLAIN_KERNELS=1`` turns them off)."""
    return _enabled


@contextlib.contextmanager
def plain_kernels() -> Iterator[None]:
    """Inside, every function of this module takes its plain torch path."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved


# ---- attention ----
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """softmax(q·kᵀ/√d + causal mask)·v for q, k, v (B, H, T, hd) -> (B, H, T, hd) in q's dtype.

    On a CPU under bf16 autocast with gradients: the paired flash kernels (``_PairedFlashAttention``), or
    where they cannot run (dropout, torch.compile, an older torch) the whole kernel in fp32, whose
    backward is faster there than bf16's. Elsewhere torch's SDPA as it is."""
    training_on_cpu = q.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.is_grad_enabled()
    if not (_enabled and training_on_cpu):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    if dropout == 0.0 and _PairedFlashAttention.usable(q):
        return _PairedFlashAttention.apply(q, k, v)
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout, is_causal=True)
    return y.to(q.dtype)


class _PairedFlashAttention(torch.autograd.Function):
    """The bf16 flash kernel's forward (fp32 accumulation, its log-sum-exp kept) and the fp32 flash
    kernel's backward on the same bf16 values: torch's own CPU kernels, paired differently."""

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


# ---- decoding: prepacked weights ----
@contextlib.contextmanager
def prepacked_weights(model: nn.Module, rows: int) -> Iterator[None]:
    """While decoding (no gradients) on a CPU under bf16 autocast, where oneDNN can: every ``nn.Linear`` of
    ``model`` multiplies with its weight prepacked for about ``rows`` rows. Autocast's ``F.linear`` hands
    oneDNN the (out, in) weight, which it re-lays out at every call: at one token a row that is most of
    the product's time. Elsewhere nothing changes. The weights must not change inside."""
    usable = (
        _enabled
        and next(model.parameters()).device.type == "cpu"
        and not torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    patched: list[nn.Linear] = []
    try:
        # a oneDNN build without this layout (not x86) raises: the layers not packed stay plain autocast
        with contextlib.suppress(RuntimeError):
            for linear in (m for m in model.modules() if isinstance(m, nn.Linear)) if usable else ():
                weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(torch.bfloat16), rows)
                bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
                linear.forward = types.MethodType(_packed_forward(weight, bias), linear)  # the instance's own
                patched.append(linear)
        yield
    finally:
        for linear in patched:
            del linear.forward  # the class's forward again


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None):
    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "none", [], "")

    return forward


# ---- LM head layouts ----
def _onednn_bf16(t: torch.Tensor) -> bool:
    """A bf16 matmul on a CPU goes to oneDNN, where operand layouts matter; fp32 (MKL) and GPUs read a
    transposed view at no cost."""
    return _enabled and t.device.type == "cpu" and t.dtype == torch.bfloat16


def right_operand(w: torch.Tensor) -> torch.Tensor:
    """Eᵀ (D, V) of an embedding E (V, D), as the right operand of h·Eᵀ. oneDNN's bf16 matmul repacks a
    transposed right operand at every call: there it is copied to a contiguous (D, V) once instead."""
    return w.T.contiguous() if _onednn_bf16(w) else w.T


def weight_grad(grad_logits: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """∂E = Gᵀ·h (V, D) for G (N, V), h (N, D). With oneDNN in bf16 it is taken as (hᵀ·G)ᵀ with hᵀ contiguous
    (its kernel with a transposed left operand is slower): the same sums of the same bf16 products in fp32,
    in another order. The caller makes the result contiguous before any upcast (torch's transposing copy
    is fast within one dtype only)."""
    if _onednn_bf16(h):
        return (h.T.contiguous() @ grad_logits).T
    return grad_logits.T @ h


# ---- what the CPU can do ----
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AMX or AVX512-BF16), where bf16 autocast pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# ---- allocator ----
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Let glibc keep large freed blocks for reuse instead of returning them to the OS; True when it does.

    glibc serves every block above its mmap threshold with a fresh mmap and unmaps it on free, so a training
    step that allocates the same large buffers again (logits gradients, activations) page-faults and
    zero-fills them at every step: MLE's tiny-preset step 8% slower, and the objectives with more (r, V)
    buffers than MLE's more so (benchmarks/results/PERFORMANCE.md). Raising the mmap and trim thresholds
    (``mallopt``) keeps them in the heap, as jemalloc or tcmalloc would. The mmap threshold goes first: a glibc
    that refuses 1 GB (older ones cap it at 32 MB) gets 32 MB, and one that refuses both keeps its own
    dynamic threshold, which setting the trim threshold alone would freeze at 128 kB. A no-op off glibc, with
    the switch off, or when the user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (their
    choice wins).
    """
    global _allocator_tuned
    user_set = "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
    if not _enabled or user_set:
        return False
    if _allocator_tuned:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers; 1 on success
        if not any(libc.mallopt(m_mmap_threshold, threshold) == 1 for threshold in (1 << 30, 32 << 20)):
            return False
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):  # not Linux / not glibc
        return False
    _allocator_tuned = True
    return True


def page_faults_per_step(fn: Callable[[], object], steps: int, sync: Callable[[], None] = lambda: None) -> float | None:
    """Minor page faults of this process per call of ``fn`` over ``steps`` calls (None where the OS does not count
    them): near 0 while glibc keeps freed blocks for reuse (``keep_freed_memory``); thousands where every step
    maps its large buffers afresh, each page faulted and zero-filled, a cost that falls on the objectives with
    more buffers than MLE's and so moves their step-cost ratios (benchmarks/results/PERFORMANCE.md)."""
    try:
        import resource
    except ImportError:  # not Unix
        return None
    sync()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        fn()
    sync()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
