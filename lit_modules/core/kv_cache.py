"""The key/value cache of incremental decoding: ``GPT.hidden(idx, cache)`` reads and extends it."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for ``max_len`` positions; ``length`` of them written so far."""

    def __init__(self, n_layer: int, max_len: int) -> None:
        self.n_layer = n_layer
        self.max_len = max_len
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, hd) at the current position; return all keys/values so far."""
        B, H, T, hd = k.shape
        if self.keys[layer] is None:
            self.keys[layer] = k.new_empty(B, H, self.max_len, hd)
            self.values[layer] = v.new_empty(B, H, self.max_len, hd)
        keys, values = self.keys[layer], self.values[layer]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len={self.max_len}")
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (LongTensor of size B'), e.g. surviving beams."""
        for i in range(self.n_layer):
            if self.keys[i] is not None:
                self.keys[i] = self.keys[i].index_select(0, rows)
                self.values[i] = self.values[i].index_select(0, rows)
