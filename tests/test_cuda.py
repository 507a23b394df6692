"""The CUDA path, where a GPU is present (skipped elsewhere, CI included; ``make gpu-check`` runs it): every
deterministic objective gives the CPU's loss and gradients on the GPU, the chunked head equals the plain logits
under bf16 autocast, and a run trains and evaluates on the GPU with bf16 and compiled blocks."""

import math

import pytest
import torch

from lit_modules.core.model import GPT, GPTConfig
from objectives.entropy_penalty import EntropyPenalty
from objectives.label_smoothing import LabelSmoothing
from objectives.mixce import MixCE
from objectives.mle import MLE
from objectives.simctg import SimCTG
from objectives.tailr import TaiLr
from objectives.unlikelihood_token import UnlikelihoodToken

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

V = 509  # not a multiple of anything: partial chunks and odd strides


def small_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, context=64, n_layer=2, n_head=2, d_model=32))


def batch() -> torch.Tensor:
    return torch.randint(0, V, (4, 41), generator=torch.Generator().manual_seed(1))


DETERMINISTIC = {  # objectives that draw nothing: CPU and GPU must agree to rounding
    "mle": MLE,
    "entropy_penalty": lambda: EntropyPenalty(lam=0.5),
    "label_smoothing": lambda: LabelSmoothing(eps=0.1),
    "mixce": lambda: MixCE(eta=0.3),
    "tailr": lambda: TaiLr(gamma=0.4),
    "simctg": SimCTG,
    "unlikelihood_token": lambda: UnlikelihoodToken(alpha=0.8),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_objective_on_the_gpu_equals_the_cpu(name, monkeypatch):
    import lit_modules.core.head as chunked

    monkeypatch.setattr(chunked, "GPU_CHUNK_ELEMENTS", 7 * V)  # several chunks on the GPU, the last partial
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # fp32 against fp32
    results = {}
    for device in ("cpu", "cuda"):
        model, objective = small_model().to(device), DETERMINISTIC[name]().to(device)
        loss = objective(model, batch().to(device), 0).loss
        loss.backward()
        results[device] = (loss.item(), [p.grad.cpu() for p in model.parameters()])
    (cpu_loss, cpu_grads), (gpu_loss, gpu_grads) = results["cpu"], results["cuda"]
    assert math.isclose(cpu_loss, gpu_loss, rel_tol=1e-4), (cpu_loss, gpu_loss)
    for a, b in zip(cpu_grads, gpu_grads, strict=True):
        assert (a - b).norm() <= 1e-3 * a.norm() + 1e-7


def test_chunked_head_under_bf16_autocast_matches_full_logits(monkeypatch, full_logits_nll):
    import lit_modules.core.head as chunked

    monkeypatch.setattr(chunked, "GPU_CHUNK_ELEMENTS", 7 * V)
    model, ids = small_model().cuda(), batch().cuda()
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def grads(losses_of):
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses = losses_of()
        losses.mean().backward()
        return losses.detach(), [p.grad.clone() for p in model.parameters()]

    full, full_grads = grads(lambda: full_logits_nll(model(inputs), targets))
    fused, fused_grads = grads(lambda: model.nll(model.hidden(inputs), targets))
    assert torch.allclose(full, fused, rtol=1e-2, atol=1e-2)
    for a, b in zip(full_grads, fused_grads, strict=True):
        assert (a - b).norm() <= 1e-2 * a.norm() + 1e-8


def test_run_trains_on_the_gpu_in_bf16_with_compiled_blocks(tmp_path, run_tiny):
    results = run_tiny(["trainer.max_steps=30", "trainer.val_check_interval=30", "compile=true"], tmp_path)
    assert results["timing"]["precision"] == "bf16-mixed"
    assert results["timing"]["steps"] == 30
    assert 1 < results["metrics"]["tf/ppl"] < 256  # learned something: below the uniform 256
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name", ["mle", "label_smoothing", "unlikelihood_token"])
def test_compiled_chunk_loss_on_the_gpu_matches_eager(name, monkeypatch):
    """compile=true on a GPU: the per-chunk loss fused by inductor (Triton) gives the eager loss and gradients."""
    import lit_modules.core.head as chunked

    monkeypatch.setattr(chunked, "GPU_CHUNK_ELEMENTS", 7 * V)
    results = []
    for compile_model in (False, True):
        model, objective = small_model().cuda(), DETERMINISTIC[name]().cuda()
        if compile_model:
            model.compile_blocks()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = objective(model, batch().cuda(), 0).loss
        loss.backward()
        results.append((loss.item(), [p.grad for p in model.parameters()], len(model._compiled_losses)))
    (eager, eager_grads, _), (compiled, compiled_grads, n_compiled) = results
    assert n_compiled == 1
    assert math.isclose(eager, compiled, rel_tol=1e-3), (eager, compiled)
    for a, b in zip(eager_grads, compiled_grads, strict=True):
        assert (a - b).norm() <= 2e-2 * a.norm() + 1e-6
