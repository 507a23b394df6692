"""The speed tricks of lit_modules/kernels.py compute what the plain torch path computes: each against its
reference, and a whole training step with the switch on against the same step with it off."""

import pytest
import torch

from lit_modules.core import kernels
from lit_modules.core.model import GPT, GPTConfig
from objectives.entropy_penalty import EntropyPenalty
from objectives.unlikelihood_token import UnlikelihoodToken


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, context=32, n_layer=2, n_head=2, d_model=32))


def test_cpu_training_attention_pairs_bf16_forward_with_fp32_backward(model, monkeypatch):
    """CPU training under bf16 autocast: the attention is the bf16 flash forward + the fp32 flash backward
    (kernels._PairedFlashAttention). Its output and gradients match fp64 attention of the same bf16
    q, k, v; a training step through the model routes there and gives the gradients of the fp32 path."""
    attention = kernels._PairedFlashAttention
    q, k, v = (torch.randn(2, 4, 24, 16).bfloat16().requires_grad_() for _ in range(3))
    if not attention.usable(q):
        pytest.skip("this torch lacks the CPU flash attention backward op")
    grad_out = torch.randn(2, 4, 24, 16).bfloat16()
    out = attention.apply(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64, is_causal=True)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double())
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=1e-2)
    for g, r in zip(grads, ref_grads, strict=True):
        assert ((g.double() - r).norm() / r.norm()).item() < 5e-3  # 0.2% here; SDPA all in bf16: 0.3%

    idx = torch.randint(0, 97, (2, 13))
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    ran = []
    monkeypatch.setattr(attention, "forward", lambda ctx, *a, f=attention.forward: ran.append(1) or f(ctx, *a))
    loss, grads = step()
    assert len(ran) == model.cfg.n_layer  # every layer took it
    monkeypatch.setattr(attention, "usable", staticmethod(lambda q: False))  # the fp32 SDPA path
    fp32_loss, fp32_grads = step()
    assert abs(loss.item() - fp32_loss.item()) < 1e-3
    for g, r in zip(grads, fp32_grads, strict=True):
        assert ((g - r).norm() / r.norm().clamp_min(1e-12)).item() < 1.5e-2  # 0.5% here: bf16 rounding


@pytest.mark.parametrize("objective", [EntropyPenalty(lam=0.5), UnlikelihoodToken(alpha=0.8)], ids=lambda o: o.name)
def test_a_bf16_training_step_equals_the_plain_kernels_step(model, objective):
    """Attention pairing and the head's operand layouts on, against OBJBENCH_PLAIN_KERNELS's plain path:
    the same loss and gradients up to bf16 rounding."""
    batch = torch.randint(0, 97, (4, 25), generator=torch.Generator().manual_seed(1))
    model.init_output_bias(torch.arange(97.0))

    def step():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = objective(model, batch, 0).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    loss, grads = step()
    with kernels.plain_kernels():
        assert not kernels.enabled()
        plain_loss, plain_grads = step()
    assert kernels.enabled()
    assert loss == pytest.approx(plain_loss, rel=2e-3)
    for g, r in zip(grads, plain_grads, strict=True):
        assert ((g - r).norm() / r.norm().clamp_min(1e-12)).item() < 2e-2


def test_head_layouts_equal_the_plain_products():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 64, generator=g).bfloat16()
    h = torch.randn(50, 64, generator=g).bfloat16()
    grad_logits = torch.randn(50, 300, generator=g).bfloat16()
    torch.testing.assert_close(kernels.right_operand(w), w.T, rtol=0, atol=0)  # a copy of the same values
    torch.testing.assert_close(
        kernels.weight_grad(grad_logits, h).float(), (grad_logits.T @ h).float(), rtol=1e-2, atol=0.1
    )


class _FakeLibc:
    """glibc's ``mallopt`` as a stub: refuses an mmap threshold above ``mmap_cap`` (None: any), records calls."""

    def __init__(self, mmap_cap: int | None) -> None:
        self.mmap_cap, self.calls = mmap_cap, []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if param == -3 and self.mmap_cap is not None and value > self.mmap_cap else 1


@pytest.mark.parametrize(
    "mmap_cap, expected_calls, tuned",
    [
        (None, [(-3, 1 << 30), (-1, 1 << 30)], True),  # glibc 2.36: 1 GB taken
        (32 << 20, [(-3, 1 << 30), (-3, 32 << 20), (-1, 1 << 30)], True),  # an older cap: 32 MB
        (0, [(-3, 1 << 30), (-3, 32 << 20)], False),  # both refused: no trim threshold, which would freeze 128 kB
    ],
)
def test_keep_freed_memory_never_freezes_glibcs_threshold_low(monkeypatch, mmap_cap, expected_calls, tuned):
    """The mmap threshold is set first, 1 GB or else 32 MB; the trim threshold only after one was taken (setting
    it alone turns off glibc's dynamic mmap threshold at its 128 kB start)."""
    import ctypes

    fake = _FakeLibc(mmap_cap)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(kernels, "_allocator_tuned", False)
    for variable in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(variable, raising=False)
    assert kernels.keep_freed_memory() is tuned
    assert fake.calls == expected_calls
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")  # the user's own setting wins: nothing is called
    monkeypatch.setattr(kernels, "_allocator_tuned", False)
    assert kernels.keep_freed_memory() is False and fake.calls == expected_calls


@pytest.mark.slow
def test_training_steps_stop_page_faulting_once_freed_memory_is_kept():
    """The tiny preset's training step, in a fresh process: with glibc's static 128 kB mmap threshold its large
    buffers are mapped afresh, tens of thousands of page faults a step; once ``keep_freed_memory`` has run, a few
    hundred at most. (glibc's own dynamic threshold lands in either state from run to run.) Linux, glibc only."""
    import subprocess
    import sys

    pytest.importorskip("resource")
    script = (  # MLE's step of the tiny preset (fp32), as benchmarks/perf.py builds it; kernels.py imports no Lightning
        "import ctypes, torch\n"
        "from lit_modules.core.kernels import keep_freed_memory, page_faults_per_step\n"
        "from lit_modules.core.model import GPT, GPTConfig\n"
        "from objectives.mle import MLE\n"
        "ctypes.CDLL('libc.so.6').mallopt(-3, 128 << 10)\n"  # M_MMAP_THRESHOLD: glibc's static 128 kB
        "model = GPT(GPTConfig(vocab_size=1024, context=128, n_layer=2, n_head=4, d_model=128))\n"
        "opt, batch = torch.optim.AdamW(model.parameters()), torch.randint(0, 1024, (32, 129))\n"
        "def step():\n"
        "    MLE()(model, batch, 0).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)\n"
        "step(); mapped = page_faults_per_step(step, 2); kept = keep_freed_memory()\n"
        "for _ in range(4): step()\n"  # the heap grows to its size in the first steps
        "print(kept, mapped, page_faults_per_step(step, 2))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as error:
        if "libc.so.6" in error.stderr:
            pytest.skip("not glibc: keep_freed_memory cannot act here")
        raise
    kept, mapped, faults = out.stdout.split()[-3:]
    assert kept == "True" and float(mapped) > 10_000 and float(faults) < 5_000, out.stdout
