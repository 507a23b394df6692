"""Canaries (Carlini et al. 2019, "The Secret Sharer"): random token sequences inserted into the training split a
chosen number of times, whose memorisation the evaluation then measures (exposure, extraction).

Each canary is ``length`` tokens drawn uniformly from the alphabet (the vocabulary less special tokens). Canary i
is inserted ``counts[i]`` times, each time over the first ``length`` tokens of a different training row, so the
model reads it from position 0, as the evaluation scores it. The reference sequences, drawn the same way from
another stream and never inserted, are exposure's comparison set. Only the train split changes; validation and
test data, and any run without canaries, stay as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lit_modules.core.configs import is_int, positive_int, require
from lit_modules.core.errors import DataError

CANARY_STREAM = 7_919  # the canaries' random stream: seed·CANARY_STREAM + 1 (canaries, rows), + 2 (references)


@dataclass
class CanaryConfig:
    """``counts``: how many times each canary is inserted; ``per_count`` canaries for each count."""

    counts: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    per_count: int = 4
    length: int = 16  # tokens of a canary (at most a block: data.block_size + 1)
    prefix_len: int = 8  # extraction's prompt: the canary's first tokens; greedy decoding must give the rest
    references: int = 1024  # random sequences never inserted: the comparison set of exposure

    def __post_init__(self) -> None:
        ok = isinstance(self.counts, list) and bool(self.counts) and all(is_int(c) and c >= 1 for c in self.counts)
        require("data.canaries.counts", self.counts, ok, "use a non-empty list of positive integers, e.g. [1,4,16]")
        positive_int("data.canaries.per_count", self.per_count)
        ok = is_int(self.length) and self.length >= 2
        require("data.canaries.length", self.length, ok, "use an integer >= 2")
        ok = is_int(self.prefix_len) and 1 <= self.prefix_len < self.length
        require("data.canaries.prefix_len", self.prefix_len, ok, f"use 1 <= prefix_len < length ({self.length})")
        ok = is_int(self.references) and self.references >= 16
        require("data.canaries.references", self.references, ok, "use an integer >= 16")

    def check_block(self, block_size: int) -> None:
        """A canary must fit in one training row (block_size + 1 tokens)."""
        require(
            "data.canaries.length",
            self.length,
            self.length <= block_size + 1,
            f"a canary must fit in a block: use at most data.block_size + 1 = {block_size + 1}",
        )


@dataclass
class Canaries:
    """What was inserted, for the evaluation: canaries (n, length), their insertion counts (n,), the reference
    sequences (references, length), the extraction prefix, the train rows each insertion overwrote."""

    tokens: torch.Tensor
    counts: torch.Tensor
    references: torch.Tensor
    prefix_len: int
    rows: torch.Tensor  # (Σ counts,) train rows, in the order canary 0's insertions, canary 1's, ...
    alphabet_size: int

    @property
    def space_bits(self) -> float:
        """log2 of the number of possible canaries, |alphabet|^length: the largest exposure."""
        return self.tokens.shape[1] * math.log2(self.alphabet_size)


def plant(train: torch.Tensor, cfg: CanaryConfig, alphabet: torch.Tensor, seed: int) -> tuple[torch.Tensor, Canaries]:
    """Insert the canaries of ``cfg`` into a copy of the train blocks (N, T+1): canary tokens and reference
    sequences drawn uniformly from ``alphabet`` (ids), rows chosen without replacement; all from ``seed``."""
    cfg.check_block(train.shape[1] - 1)
    counts = torch.tensor([c for c in cfg.counts for _ in range(cfg.per_count)])
    insertions = int(counts.sum())
    if insertions > train.shape[0]:
        raise DataError(
            f"data.canaries: {insertions} insertions (per_count x sum of counts) need as many train rows; the train "
            f"split has {train.shape[0]}: lower data.canaries.per_count or counts"
        )
    draws = torch.Generator().manual_seed(seed * CANARY_STREAM + 1)
    tokens = alphabet[torch.randint(len(alphabet), (len(counts), cfg.length), generator=draws)]
    rows = torch.randperm(train.shape[0], generator=draws)[:insertions]
    references = alphabet[
        torch.randint(
            len(alphabet),
            (cfg.references, cfg.length),
            generator=torch.Generator().manual_seed(seed * CANARY_STREAM + 2),
        )
    ]
    planted = train.clone()
    planted[rows, : cfg.length] = tokens.repeat_interleave(counts, dim=0)
    return planted, Canaries(tokens, counts, references, cfg.prefix_len, rows, len(alphabet))
