"""DFT is MixCE at η = 0 (−sg(p_y)·log p_y, the released code's per-token weight), fine-tuning from start_step."""

import pytest
import torch

from objectives.dft import DFT
from objectives.mixce import MixCE
from objectives.mle import MLE


def test_dft_is_mixce_at_eta_zero_from_its_start_step(model, batch, assert_same_gradients):
    dft, mixce = DFT(start_step=3)(model, batch, 3), MixCE(eta=0.0)(model, batch, 3)
    assert dft.loss.item() == pytest.approx(mixce.loss.item(), rel=1e-7)
    assert_same_gradients(model, dft.loss, mixce.loss, rtol=1.3e-6, atol=1e-8)
    with torch.no_grad():  # the formula itself: mean_t p(y_t)·(−log p(y_t))
        logp = model(batch[:, :-1]).double().log_softmax(-1).gather(-1, batch[:, 1:, None])
    assert dft.loss.item() == pytest.approx((-logp.exp() * logp).mean().item(), rel=1e-5)
    before = DFT(start_step=3)(model, batch, 2).loss
    assert before.item() == pytest.approx(MLE()(model, batch, 2).loss.item(), rel=1e-7)
