"""EMO against its formula and against the released code's gradient."""

import pytest
import torch
import torch.nn.functional as F

from objectives.base import split_batch
from objectives.emo import EMO

V = 23  # the vocabulary of the model fixture


def test_emo_formula(model, batch, logits_of):
    """DEMD with the model's own unit-norm output embedding as the cost, the loss as the released code
    writes it: 0.5·(NLL + sg(NLL / DEMD')·DEMD'), DEMD' = DEMD's value without the gold token's term."""
    z, y = logits_of(model, batch)
    e = F.normalize(model.output_embedding.detach().double(), dim=-1)
    q = z.softmax(-1)
    cos = e[y] @ e.T  # (B, T, V)
    demd = 1 - (q * cos).sum(-1)
    nll = -q.gather(-1, y[..., None]).squeeze(-1).log()
    released = demd + q.gather(-1, y[..., None]).squeeze(-1)
    expected = (0.5 * (nll + nll / (released + 1e-10) * released)).mean().item()
    out = EMO()(model, batch, 0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logs["demd"].item() == pytest.approx(demd.mean().item(), rel=1e-4)


def test_emo_gradient_is_the_released_codes(model, batch):
    """The released emo1_adaptive written the released way (gold term removed from q with a detached
    copy), on the full logits: the same parameter gradients."""
    inputs, targets = split_batch(batch)
    grads = []
    for which in ("objbench", "released"):
        model.zero_grad()
        if which == "objbench":
            EMO()(model, batch, 0).loss.backward()
        else:
            logits = model(inputs).flatten(0, 1)
            labels = targets.flatten()
            mle = F.cross_entropy(logits, labels, reduction="none")
            one_hot = F.one_hot(labels, V).to(logits.dtype)
            e = model.output_embedding.detach()
            e = e / e.norm(dim=1, keepdim=True)
            q = logits.softmax(-1)
            q_final = q - (q * one_hot).detach()
            emo = 1 - ((one_hot @ e) * (q_final @ e)).sum(-1)
            (0.5 * (mle + (mle / (emo + 1e-10)).detach() * emo)).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
