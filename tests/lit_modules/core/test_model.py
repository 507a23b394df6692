import math

import pytest
import torch

from lit_modules.core.model import GPT, GPTConfig


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, context=32, n_layer=2, n_head=4, d_model=32)).eval()


def test_shapes_and_interface(model):
    idx = torch.randint(0, 97, (3, 10))
    assert model(idx).shape == (3, 10, 97)
    h = model.hidden(idx)
    assert h.shape == (3, 10, 32)
    torch.testing.assert_close(model.head(h), model(idx))
    assert model.output_embedding.shape == (97, 32)
    assert model.output_embedding.data_ptr() == model.wte.weight.data_ptr()  # tied


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=64, context=16, n_layer=8, n_head=4, d_model=256))
    std = m.blocks[0].attn.proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert m.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_causal(model):
    idx = torch.randint(0, 97, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 97
    torch.testing.assert_close(model(idx)[:, :8], model(changed)[:, :8])
    assert not torch.allclose(model(idx)[:, 8:], model(changed)[:, 8:])


def test_kv_cache_matches_full_forward(model):
    idx = torch.randint(0, 97, (2, 20))
    full = model(idx)
    cache = model.new_cache()
    prefill = model(idx[:, :7], cache=cache)  # prompt
    chunk = model(idx[:, 7:11], cache=cache)  # a chunk after a prefix (masked attention)
    steps = [model(idx[:, t : t + 1], cache=cache) for t in range(11, 20)]  # one token at a time
    torch.testing.assert_close(torch.cat([prefill, chunk, *steps], dim=1), full, atol=1e-5, rtol=1e-5)
    last = model(idx[:, :5], cache=model.new_cache(), last_only=True)
    assert last.shape == (2, 1, 97)
    torch.testing.assert_close(last[:, 0], full[:, 4], atol=1e-5, rtol=1e-5)


def test_longer_than_context_is_an_error(model):
    with pytest.raises(ValueError, match="longer than model.context=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("bad", [{"n_head": 3}, {"n_layer": 0}, {"dropout": 1.0}])
def test_bad_config(bad):
    with pytest.raises(ValueError, match="model\\."):
        GPTConfig(**{"vocab_size": 10, "d_model": 32, "n_head": 4, **bad})


def test_compiled_blocks_match_eager(model):
    """compile=true: the compiled blocks give the eager logits and gradients; decoding and copies stay eager."""
    import copy

    idx = torch.randint(0, 97, (2, 12))
    eager = model(idx)
    eager_grads = torch.autograd.grad(eager.square().mean(), list(model.parameters()))
    model.compile_blocks(backend="aot_eager")  # inductor's graph capture and autograd split, without its C++ build
    compiled = model(idx)
    torch.testing.assert_close(compiled, eager)
    compiled_grads = torch.autograd.grad(compiled.square().mean(), list(model.parameters()))
    for a, b in zip(eager_grads, compiled_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert model.compiled_blocks is not None and copy.deepcopy(model).compiled_blocks is None
    cache = model.new_cache()
    torch.testing.assert_close(model(idx, cache=cache), eager)  # the eager blocks with a cache


def test_output_bias_starts_at_the_log_unigram():
    """The untrained model already predicts the train split's unigram distribution (add-one smoothed)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, context=16, n_layer=1, n_head=2, d_model=16))
    counts = torch.tensor([0.0, 1, 2, 3, 10, 20, 40, 100])
    model.init_output_bias(counts)
    unigram = (counts + 1) / (counts + 1).sum()
    torch.testing.assert_close(model.output_bias.exp(), unigram.float())
    with torch.no_grad():
        predicted = model(torch.randint(0, 8, (4, 6))).softmax(-1)
    kl = (unigram * (unigram.log() - predicted.log())).sum(-1)  # h·Eᵀ is near zero at GPT-2's init scale
    assert kl.max() < 0.01
    plain = GPT(GPTConfig(vocab_size=8, context=16, n_layer=1, n_head=2, d_model=16, head_bias=False))
    plain.init_output_bias(counts)  # no bias: nothing to set
    assert plain.output_bias is None and "lm_head.bias" not in plain.state_dict()
