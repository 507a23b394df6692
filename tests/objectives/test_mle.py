"""Maximum likelihood: the mean token NLL of the full softmax, and its gradient p − onehot(y) in closed form."""

import torch

from objectives.mle import MLE


def test_mle_is_the_cross_entropy_of_the_full_logits(model, batch, full_logits_nll):
    inputs, targets = batch[:, :-1], batch[:, 1:]
    out = MLE()(model, batch, 0)
    expected = full_logits_nll(model(inputs), targets).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logs["nll"], expected, rtol=1e-5, atol=1e-6)
    (closed,) = torch.autograd.grad(out.loss, model.output_embedding)
    (plain,) = torch.autograd.grad(expected, model.output_embedding)
    torch.testing.assert_close(closed, plain, rtol=1e-4, atol=1e-6)
