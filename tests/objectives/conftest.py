"""The objectives' tests share the one-layer model of the root conftest and a batch of its tokens."""

import pytest
import torch


@pytest.fixture
def batch() -> torch.Tensor:
    """Three rows of 11 token ids of the model fixture's 23-token vocabulary."""
    return torch.randint(0, 23, (3, 11), generator=torch.Generator().manual_seed(1))
