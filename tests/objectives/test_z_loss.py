"""z-loss against the full logits."""

import pytest
import torch

from objectives.z_loss import ZLoss

V = 23  # the vocabulary of the model fixture


@pytest.fixture
def batch():
    """Rows of 17 tokens: room for a span's copies and the negatives' window."""
    return torch.randint(0, V, (3, 17), generator=torch.Generator().manual_seed(1))


def logits_of(model, batch):
    """(B, T, V) fp64 logits of the full head, and the targets."""
    with torch.no_grad():
        return model(batch[:, :-1]).double(), batch[:, 1:]


# ---- formulas ----
def test_z_loss_formula(model, batch):
    z, y = logits_of(model, batch)
    log_z = z.logsumexp(-1)
    nll = log_z - z.gather(-1, y[..., None]).squeeze(-1)
    expected = (nll + 0.05 * log_z**2).mean().item()
    out = ZLoss(alpha=0.05)(model, batch, 0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logs["log_z"].item() == pytest.approx(log_z.mean().item(), rel=1e-5)
