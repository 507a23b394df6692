"""The objective interface shared by every training loss.

An objective is a small ``nn.Module`` built from its config (Hydra ``_target_``) and called as
``objective(model, batch, step) -> LossOutput``. ``batch`` is a (B, T+1) tensor of token ids:
inputs ``batch[:, :-1]``, targets ``batch[:, 1:]``. ``model`` is the backbone (see
``lit_modules.model.GPT``): ``model.hidden(idx)``, ``model.nll(h, targets)``, ``model.token_losses``,
``model.head(h)``, ``model.output_embedding``. Objectives never import Lightning.

Most objectives are a per-token function of the next-token logits: they subclass ``TokenObjective``
and write that function, nothing else (``objectives/label_smoothing.py`` is one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lit_modules.head import TokenLoss


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)  # logged under train/


RESERVED_KEYS = ("_target_", "search_space")  # an objective yaml's keys that are not knobs


def objective_knobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of an objective config: every key but the class path and the tuner's search space."""
    return {k: v for k, v in config.items() if k not in RESERVED_KEYS}


def longest_sequence(model_context: int, block_size: int) -> int:
    """The longest sequence an objective may build: a training row (block_size + 1 tokens) within the
    model's context."""
    return min(model_context, block_size + 1)


@dataclass
class ObjectiveContext:
    """What an objective may need beyond the batch, given once at setup."""

    vocab_size: int
    context: int  # the longest sequence an objective may build: longest_sequence(...)
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

    def check_steps(self, max_steps: int) -> None:
        """Raise KnobError when a ``start_step`` knob (the step from which the objective acts, MLE before)
        is not below the run's ``trainer.max_steps``: the run would be MLE under another name."""
        start = getattr(self, "start_step", None)
        if start is not None and start >= max_steps:
            raise KnobError(
                f"objective.start_step={start} is not allowed; it must be below trainer.max_steps={max_steps}"
            )

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        """Called once before training (unigram counts, reference model, ...)."""

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        raise NotImplementedError


@dataclass(frozen=True)
class AuxiliaryTerm:
    """A weighted per-token term added to any objective: ``weight``·mean_t fn(z_t, y_t).loss. ``fn`` is the
    ``term`` method of the objective that defines it (``objectives/z_loss.py``: (log Z)²)."""

    name: str
    weight: float
    fn: Callable[[torch.Tensor, torch.Tensor], TokenLoss]


def combined_name(objective: str, weights: Mapping[str, float]) -> str:
    """An objective with auxiliary terms as runs, reports and TensorBoard name it: label_smoothing+z_loss(0.0001)."""
    return objective + "".join(f"+{name}({float(weight):g})" for name, weight in weights.items())


def with_terms(
    token_loss: Callable[..., TokenLoss] | None, terms: tuple[AuxiliaryTerm, ...]
) -> Callable[..., TokenLoss]:
    """token_loss (or 0 when None) + Σ_i w_i·term_i, each term's value and stats logged under its name."""

    def combined(logits: torch.Tensor, targets: torch.Tensor, *per_token: torch.Tensor) -> TokenLoss:
        if token_loss is None:
            loss, stats = logits.new_zeros(logits.shape[0]), {}
        else:
            out = token_loss(logits, targets, *per_token)
            loss, stats = out.loss, dict(out.stats)
        for term in terms:
            value = term.fn(logits, targets)
            loss = loss + term.weight * value.loss
            stats[term.name] = value.loss
            stats.update({f"{term.name}/{k}": v for k, v in value.stats.items()})
        return TokenLoss(loss, stats)

    return combined


class TokenObjective(Objective):
    """mean_t ℓ(z_t, y_t, ...): a per-token function of the next-token logits z_t (fp32, (r, V)).

    A subclass writes the formula as ``token_loss(logits, targets, *per_token) -> TokenLoss`` (autograd
    takes its gradient; ``TokenLoss.stats`` are logged as means) and, where it measurably pays, the same
    loss with its gradient in closed form as ``token_loss_and_grad`` (it may overwrite ``logits``; a test
    checks it against autograd of ``token_loss`` for every subclass). ``per_token_inputs`` gives further
    (B, T, ...) inputs of the formula. The model's chunked head evaluates it without the (N, V) logits.
    """

    token_loss_and_grad: Callable[..., TokenLoss] | None = None
    aux_terms: tuple[AuxiliaryTerm, ...] = ()  # set by WithAuxiliaryTerms: added to every token's loss

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor, *per_token: torch.Tensor) -> TokenLoss:
        raise NotImplementedError

    def per_token_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs (B, T), targets (B, T) -> extra per-token arguments of ``token_loss``, each (B, T, ...)."""
        return ()

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        inputs, targets = split_batch(batch)
        extra = self.per_token_inputs(inputs, targets)
        h = model.hidden(inputs)
        loss_fn, grad_fn = self.token_loss, self.token_loss_and_grad
        if self.aux_terms:  # autograd of the sum: the terms have no closed form of their own
            loss_fn, grad_fn = with_terms(self.token_loss, self.aux_terms), None
        losses, stats = model.token_losses(h, loss_fn, targets, *extra, grad_fn=grad_fn)
        return LossOutput(losses.mean(), {key: value.mean() for key, value in stats.items()})


class WithAuxiliaryTerms(Objective):
    """An objective plus weighted auxiliary terms (``aux={z_loss: 1e-4, entropy_penalty: 0.1}``):
    loss = objective + Σ_i w_i·mean_t term_i(z_t, y_t) on the batch's tokens.

    A TokenObjective adds the terms to its own per-token loss (the same head pass); any other objective
    gets them from one more forward pass over the batch's inputs.
    """

    def __init__(self, objective: Objective, terms: tuple[AuxiliaryTerm, ...]) -> None:
        super().__init__()
        self.objective, self.terms = objective, tuple(terms)
        self.name = combined_name(objective.name, {t.name: t.weight for t in self.terms})
        self.full_work_knobs = objective.full_work_knobs
        if isinstance(objective, TokenObjective):
            objective.aux_terms = self.terms

    def check_fits(self, length: int) -> None:
        self.objective.check_fits(length)

    def check_steps(self, max_steps: int) -> None:
        self.objective.check_steps(max_steps)

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        self.objective.setup(model, context)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        out = self.objective(model, batch, step)
        if isinstance(self.objective, TokenObjective):
            return out
        inputs, targets = split_batch(batch)
        losses, stats = model.token_losses(model.hidden(inputs), with_terms(None, self.terms), targets)
        logs = {**out.logs, **{key: value.mean() for key, value in stats.items()}}
        return LossOutput(out.loss + losses.mean(), logs)
