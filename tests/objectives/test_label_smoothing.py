"""Label smoothing against its formula over positions."""

import pytest
import torch

from objectives.label_smoothing import LabelSmoothing

V = 23  # the vocabulary of the model fixture


def test_label_smoothing_formula(model, batch, probs_of):
    p, y = probs_of(model, batch)
    eps, total, n = 0.2, 0.0, 0
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            logp = p[b, t].log()
            total += (1 - eps) * -logp[y[b, t]].item() + eps * -logp.mean().item()
            n += 1
    assert LabelSmoothing(eps=eps)(model, batch, 0).loss.item() == pytest.approx(total / n, rel=1e-5)
    z = torch.randn(12, 37, generator=torch.Generator().manual_seed(2)) * 3
    targets = torch.randint(0, 37, (12,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(  # torch's convention for the ε mass
        LabelSmoothing(eps=eps).token_loss(z.clone(), targets).loss,  # a token function consumes z
        torch.nn.functional.cross_entropy(z, targets, label_smoothing=eps, reduction="none"),
    )
