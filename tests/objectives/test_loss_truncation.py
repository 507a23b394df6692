"""Loss truncation against the released LossDropper (ddkang/loss_dropper, restated below): the same masks on a
stream of batches, the loss of the kept sequences only, its ring of losses carried by the state dict."""

import numpy as np
import pytest
import torch

from objectives.base import KnobError
from objectives.loss_truncation import LossTruncation
from objectives.mle import MLE


class ReleasedDropper:
    """The released algorithm: a ring of ``recompute`` sequence losses, filled first in order; no drop before
    ``min_count`` losses were seen; the (1 − dropc)-percentile taken again once more than ``recompute`` were seen
    since the last; keep a sequence whose loss is below it."""

    def __init__(self, dropc: float, min_count: int, recompute: int) -> None:
        self.keepc, self.min_count, self.recompute = 1.0 - dropc, min_count, recompute
        self.count = self.last_computed = self.cur_idx = 0
        self.percentile_val = 1e8
        self.vals = np.zeros(recompute, dtype=np.float32)

    def __call__(self, loss: np.ndarray) -> np.ndarray:
        self.last_computed += loss.size
        self.count += loss.size
        if self.count < len(self.vals):
            self.vals[self.count - loss.size : self.count] = loss
            self.cur_idx += loss.size
            return np.ones_like(loss)
        for item in loss:
            self.vals[self.cur_idx] = item
            self.cur_idx = (self.cur_idx + 1) % len(self.vals)
        if self.count < self.min_count:
            return np.ones_like(loss)
        if self.last_computed > self.recompute:
            self.percentile_val = np.percentile(self.vals.astype(np.float64), self.keepc * 100)
            self.last_computed = 0
        return (loss < self.percentile_val).astype(loss.dtype)


def test_the_masks_are_the_released_droppers_on_a_stream_of_batches():
    ours = LossTruncation(drop=0.3, window=50, hot_start=120)
    released = ReleasedDropper(dropc=0.3, min_count=120, recompute=50)
    g = torch.Generator().manual_seed(0)
    dropped = 0
    for _ in range(40):
        losses = torch.rand(7, generator=g, dtype=torch.float64) * 4
        mask = ours.keep_mask(losses)
        expected = released(losses.float().numpy())
        np.testing.assert_array_equal(mask.numpy(), expected.astype(np.float64))
        dropped += int((mask == 0).sum())
    assert dropped > 0  # the stream got past the hot start and a quantile


def test_the_loss_is_the_kept_sequences_mean_nll_and_only_they_get_a_gradient(model, batch):
    objective = LossTruncation(drop=0.5, window=2, hot_start=0)
    objective.keep_mask(torch.tensor([10.0, 0.0, 1.5]))  # a ring of [10, 0, 1.5]: seen 3 > window, quantile 1.5
    out = objective(model, batch, 0)
    with torch.no_grad():
        logp = model(batch[:, :-1]).float().log_softmax(-1)
    per_sequence = -logp.gather(-1, batch[:, 1:, None]).squeeze(-1).mean(1)
    keep = (per_sequence < objective.cutoff).float()
    assert 0 < keep.sum() < 3
    assert out.loss.item() == pytest.approx((per_sequence * keep).mean().item(), rel=1e-5)
    assert out.logs["kept"].item() == pytest.approx(keep.mean().item())
    kept_only = torch.autograd.grad(out.loss, model.wte.weight)[0]
    rows = keep.nonzero().flatten()
    expected = MLE()(model, batch[rows], 0).loss * len(rows) / 3
    torch.testing.assert_close(kept_only, torch.autograd.grad(expected, model.wte.weight)[0], rtol=1e-4, atol=1e-6)


def test_the_ring_of_losses_travels_in_the_state_dict():
    first = LossTruncation(drop=0.3, window=20, hot_start=30)
    g = torch.Generator().manual_seed(1)
    stream = [torch.rand(6, generator=g) for _ in range(12)]
    for losses in stream[:7]:
        first.keep_mask(losses)
    resumed = LossTruncation(drop=0.3, window=20, hot_start=30)
    resumed.load_state_dict(first.state_dict())
    for losses in stream[7:]:
        torch.testing.assert_close(resumed.keep_mask(losses), first.keep_mask(losses))


@pytest.mark.parametrize("knob, value", [("drop", 0.0), ("drop", 1.0), ("window", 0), ("hot_start", -1)])
def test_bad_knobs_are_refused(knob, value):
    with pytest.raises(KnobError, match=f"objective.{knob}="):
        LossTruncation(**{knob: value})
