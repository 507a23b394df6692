"""The objectives' tests share the one-layer model of the root conftest, a batch of its tokens, and the model's
full-softmax view of that batch to check formulas against."""

from collections.abc import Callable

import pytest
import torch


@pytest.fixture
def batch() -> torch.Tensor:
    """Three rows of 17 token ids of the model fixture's 23-token vocabulary: room for a span's copies and the
    negatives' window."""
    return torch.randint(0, 23, (3, 17), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def logits_of() -> Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """logits_of(model, batch): the (B, T, V) fp64 logits of the full head, and the targets."""

    def logits_of(model, batch):
        with torch.no_grad():
            return model(batch[:, :-1]).double(), batch[:, 1:]

    return logits_of


@pytest.fixture
def probs_of(logits_of) -> Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """probs_of(model, batch): the (B, T, V) fp64 probabilities of the full softmax, and the targets."""

    def probs_of(model, batch):
        logits, targets = logits_of(model, batch)
        return logits.softmax(-1), targets

    return probs_of


@pytest.fixture
def train() -> Callable[..., torch.nn.Module]:
    """train(objective, model, batch, steps=15, lr=0.02): plain SGD on one batch; the model, trained."""

    def train(objective, model, batch, steps=15, lr=0.02):
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for step in range(steps):
            opt.zero_grad()
            objective(model, batch, step).loss.backward()
            opt.step()
        return model

    return train


@pytest.fixture
def assert_same_gradients() -> Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], None]:
    """assert_same_gradients(model, loss, expected): the two losses' gradients on every parameter agree."""

    def assert_same_gradients(model, loss, expected, rtol=1e-4, atol=1e-6):
        params = list(model.parameters())
        got = torch.autograd.grad(loss, params, retain_graph=True)
        for g, w in zip(got, torch.autograd.grad(expected, params, retain_graph=True), strict=True):
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol)

    return assert_same_gradients
