"""The objective interface shared by every training loss.

An objective is a small ``nn.Module`` built from its config (Hydra ``_target_``) and called as
``objective(model, batch, step) -> LossOutput``. ``batch`` is a (B, T+1) tensor of token ids:
inputs ``batch[:, :-1]``, targets ``batch[:, 1:]``. ``model`` is the backbone (see
``lit_modules.model.GPT``): ``model(idx)`` logits, ``model.hidden(idx)``, ``model.head(h)``,
``model.output_embedding``. Objectives never import Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)  # logged under train/


@dataclass
class ObjectiveContext:
    """What an objective may need beyond the batch, given once at setup."""

    vocab_size: int
    context: int  # the longest sequence an objective may build: min(model context, block_size + 1)
    unigram_counts: torch.Tensor | None = None  # (V,) counts over the train split


class KnobError(ValueError):
    """An objective knob outside its allowed range (reported as one line by the runner)."""


def check_knob(name: str, value: float, ok: bool, allowed: str) -> None:
    if not ok:
        raise KnobError(f"objective.{name}={value!r} is not allowed; {allowed}")


def check_prefix_fits(prefix_len: int, cont_len: int, length: int) -> None:
    """For objectives that build (prefix, continuation) pairs: both must fit ``length`` tokens."""
    allowed = f"it must fit the sequences: at most {length} = min(model.context, data.block_size + 1)"
    check_knob("prefix_len + cont_len", prefix_len + cont_len, prefix_len + cont_len <= length, allowed)


def split_batch(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) -> inputs (B, T), targets (B, T)."""
    return batch[:, :-1], batch[:, 1:]


class Objective(nn.Module):
    """Base class. ``name`` is the config name; ``search_space`` is read by the tuner."""

    name: str = "objective"
    # knob values under which every training step does the objective's full work (a pairwise term
    # from step 0, a sequence-level step every step): ``benchmarks/perf.py`` times that step, the dearest
    full_work_knobs: ClassVar[dict[str, Any]] = {}

    def check_fits(self, length: int) -> None:
        """Raise KnobError when the objective's sequences cannot fit ``length`` tokens (a batch row,
        the model context). Called when the config is validated, before any work."""

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        """Called once before training (unigram counts, reference model, ...)."""

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        raise NotImplementedError


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token −log p(y_t) (B, T) from logits (B, T, V), computed in fp32."""
    return nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(
        targets
    )


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs (B, V) (weights, need not sum to 1) by inverse CDF -> (B,).

    The same distribution as ``torch.multinomial(probs, 1)``, which draws an exponential variate per
    vocabulary entry: 3.6 ms against 0.08 ms at B = 16, V = 8192 on this project's CPU.
    """
    cdf = probs.double().cumsum(-1)  # (B, V)
    u = (1.0 - torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_max(probs.shape[-1] - 1)  # u ∈ (0, total]: p > 0 only
