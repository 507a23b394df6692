"""z-loss against the full logits."""

import pytest

from objectives.z_loss import ZLoss

V = 23  # the vocabulary of the model fixture


# ---- formulas ----
def test_z_loss_formula(model, batch, logits_of):
    z, y = logits_of(model, batch)
    log_z = z.logsumexp(-1)
    nll = log_z - z.gather(-1, y[..., None]).squeeze(-1)
    expected = (nll + 0.05 * log_z**2).mean().item()
    out = ZLoss(alpha=0.05)(model, batch, 0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logs["log_z"].item() == pytest.approx(log_z.mean().item(), rel=1e-5)
