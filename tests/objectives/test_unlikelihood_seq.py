"""Sequence-level unlikelihood: the repeat mask, the loss, its closed form."""

import math

import pytest
import torch

from lit_modules.core.decoding import DecodingConfig, generate
from objectives.base import ObjectiveContext
from objectives.unlikelihood_seq import UnlikelihoodSeq, ngram_repeat_mask

V = 23  # the vocabulary of the model fixture


# ---- sequence-level unlikelihood ----
def test_ngram_repeat_mask_marks_repeats_including_the_last_ngram():
    seq = torch.tensor([[1, 2, 3, 1, 2, 3, 9], [1, 2, 1, 2, 1, 2, 1]])
    mask = ngram_repeat_mask(seq, 2)
    # row 0: bigrams (1,2),(2,3) repeat at positions 3-4 and 4-5; row 1: every bigram from position 2 on repeats
    assert mask[0].tolist() == [False, False, False, True, True, True, False]
    assert mask[1].tolist() == [False, False, True, True, True, True, True]  # the last bigram (2,1) counts
    assert not ngram_repeat_mask(torch.arange(10)[None], 3).any()


def test_unlikelihood_seq_loss_formula(model, batch):
    objective = UnlikelihoodSeq(rate=1.0, prefix_len=4, cont_len=12, ngram=2)
    objective.setup(model, ObjectiveContext(vocab_size=V, context=32))
    loss = objective(model, batch, 0).loss.item()
    prefix = batch[:, :4]
    cont = generate(model, prefix, 12, DecodingConfig())
    with torch.no_grad():
        total = 0.0
        for b in range(cont.shape[0]):
            seq = torch.cat([prefix[b], cont[b]])[None]
            mask = ngram_repeat_mask(cont[b : b + 1], 2)[0]
            for t in range(12):
                p = model(seq[:, : 4 + t]).double()[0, -1].softmax(-1)[cont[b, t]].item()
                total += -math.log(1 - p) * mask[t].item()
    assert loss == pytest.approx(total / cont.numel(), rel=1e-4)


def test_sequence_unlikelihood_closed_form_is_autograds():
    from objectives.unlikelihood_seq import repeat_loss, repeat_loss_and_grad

    g = torch.Generator().manual_seed(5)
    z = torch.randn(12, 37, generator=g, dtype=torch.float64) * 3
    z[0, :5] = 12.0
    tokens, mask = torch.randint(0, 37, (12,), generator=g), torch.rand(12, generator=g) < 0.5
    tokens[0] = 0  # the confident row's own token: 1 − p is clamped there
    closed = repeat_loss_and_grad(z.clone(), tokens, mask)
    leaf = z.clone().requires_grad_()
    auto = repeat_loss(leaf, tokens, mask)
    (auto_grad,) = torch.autograd.grad(auto.loss.sum(), leaf)
    assert torch.allclose(closed.grad, auto_grad, atol=1e-10)
    assert torch.allclose(closed.loss, auto.loss.detach(), atol=1e-12)
