"""The chunked LM head: its losses and gradients equal those of the full logits, eager and compiled."""

import pytest
import torch

from lit_modules.core.model import GPT, GPTConfig
from objectives.entropy_penalty import EntropyPenalty
from objectives.label_smoothing import LabelSmoothing
from objectives.mle import MLE
from objectives.tailr import TaiLr
from objectives.unlikelihood_token import UnlikelihoodToken

V = 23  # the vocabulary of the model fixture


@pytest.fixture
def batch():
    return torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("uniform", [False, True], ids=["weighted", "mean"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_chunked_head_matches_full_logits(model, batch, bf16, uniform, monkeypatch, full_logits_nll):
    """Losses, and gradients for a non-uniform weighting of them or their mean (the output bias's too: for a
    mean it is summed in the forward pass), equal those through model(x)."""
    import lit_modules.core.head as chunked

    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 3 * V)  # several chunks, the last one partial
    model.init_output_bias(torch.arange(V, dtype=torch.float64) ** 2)  # logits h·Eᵀ + b, b far from 0
    inputs, targets = batch[:, :-1], batch[:, 1:]
    weights = torch.rand(targets.shape, generator=torch.Generator().manual_seed(1))
    if uniform:
        weights = torch.full(targets.shape, 1 / targets.numel())

    def grads(losses_of):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = losses_of()
        (losses * weights).sum().backward()
        return losses.detach(), [p.grad.clone() for p in model.parameters()]

    full, full_grads = grads(lambda: full_logits_nll(model(inputs), targets))
    fused, fused_grads = grads(lambda: model.nll(model.hidden(inputs), targets))
    tol = 1e-2 if bf16 else 1e-5
    assert torch.allclose(full, fused, rtol=tol, atol=tol)
    for a, b in zip(full_grads, fused_grads, strict=True):
        assert (a - b).norm() <= tol * a.norm() + 1e-8


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", ["mle", "entropy_penalty", "label_smoothing", "tailr", "unlikelihood_token"])
def test_compiled_chunk_loss_matches_eager(name, bf16, monkeypatch):
    """compile=true: the per-chunk loss compiled in the gradient's own memory gives the eager loss,
    logs and gradients (aot_eager: the graph capture and functionalisation, without inductor's C++ build)."""
    import lit_modules.core.head as chunked
    import lit_modules.core.kernels

    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 3 * V)  # eager: several chunks; compiled: one for the batch
    # the same attention both ways (compiled blocks keep SDPA): what differs is the loss, eager or compiled
    monkeypatch.setattr(lit_modules.core.kernels._PairedFlashAttention, "usable", staticmethod(lambda q: False))
    objective = {
        "mle": MLE(),
        "entropy_penalty": EntropyPenalty(lam=0.5),
        "label_smoothing": LabelSmoothing(eps=0.1),
        "tailr": TaiLr(gamma=0.4),
        "unlikelihood_token": UnlikelihoodToken(alpha=0.8),
    }[name]
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(2))
    results = []
    for compile_model in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=V, context=32, n_layer=1, n_head=2, d_model=16))
        if compile_model:
            model.compile_blocks(backend="aot_eager")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = objective(model, ids, 0)
        out.loss.backward()
        results.append((out, [p.grad for p in model.parameters()], len(model._compiled_losses)))
    (eager, eager_grads, _), (compiled, compiled_grads, n_compiled) = results
    assert n_compiled == 1  # the compiled path ran
    torch.testing.assert_close(compiled.loss, eager.loss)
    for key, value in eager.logs.items():
        torch.testing.assert_close(compiled.logs[key], value)
    for a, b in zip(eager_grads, compiled_grads, strict=True):
        torch.testing.assert_close(a, b)
