"""The objective interface shared by every training loss.

An objective is a small ``nn.Module`` built from its config (``objectives/registry.py``) and called as
``objective(model, batch, step) -> LossOutput``. ``batch`` is a (B, T+1) tensor of token ids: inputs
``batch[:, :-1]``, targets ``batch[:, 1:]``. ``model`` is the backbone (``lit_modules.core.model.GPT``):
``model.hidden(idx)``, ``model.nll(h, targets)``, ``model.token_losses``, ``model.head(h)``,
``model.output_embedding``. Objectives import only the pure-torch floor (``lit_modules.core``), never Lightning.

Three kinds, each a base class here:
- ``TokenObjective``: a per-token function of the next-token logits. A subclass writes that function (and,
  where it pays, its gradient in closed form); ``prepare_step`` is its hook for state of the step.
- ``Objective``: anything else (sequence-level, pairwise, a second pass); it writes ``forward``.
- ``FineTuning``: a mixin for objectives that fine-tune, as their papers do: plain MLE before ``start_step``,
  the objective from it on, with a frozen reference copy of the model taken at ``start_step``.

``WithAuxiliaryTerms`` adds weighted per-token terms (``aux={z_loss: 1e-4}``) to any objective.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lit_modules.core.errors import ConfigError
from lit_modules.core.head import TokenLoss, nll_loss


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)  # logged under train/


@dataclass
class ObjectiveContext:
    """What an objective may need beyond the batch, given once at setup."""

    vocab_size: int
    context: int  # the longest sequence an objective may build: longest_sequence(...)
    unigram_counts: torch.Tensor | None = None  # (V,) counts over the train split
    source: Any = None  # the data's exact conditionals where known (the synthetic source: log_conditionals)


class KnobError(ConfigError):
    """An objective knob outside its allowed range."""


RESERVED_KEYS = ("_target_", "search_space")  # an objective yaml's keys that are not knobs


def objective_knobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of an objective config: every key but the class path and the tuner's search space."""
    return {k: v for k, v in config.items() if k not in RESERVED_KEYS}


def run_label(objective: str, terms: Mapping[str, float] | None = None, knobs: Mapping[str, Any] | None = None) -> str:
    """How runs, reports, TensorBoard and the suite's directories name an objective: with its auxiliary terms
    and, where given, its knobs: ``label_smoothing+z_loss(0.0001) (eps=0.1)``."""
    name = objective + "".join(f"+{term}({float(weight):g})" for term, weight in (terms or {}).items())
    return f"{name} ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else name


def longest_sequence(model_context: int, block_size: int) -> int:
    """The longest sequence an objective may build: a training row (block_size + 1 tokens) within the
    model's context."""
    return min(model_context, block_size + 1)


def check_knob(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise KnobError(f"objective.{name}={value!r} is not allowed; {allowed}")


def check_prefix_fits(prefix_len: int, cont_len: int, length: int) -> None:
    """For objectives that build (prefix, continuation) pairs: both must fit ``length`` tokens."""
    allowed = f"it must fit the sequences: at most {length} = min(model.context, data.block_size + 1)"
    check_knob("prefix_len + cont_len", prefix_len + cont_len, prefix_len + cont_len <= length, allowed)


def check_batch_room(prefix_len: int, cont_len: int, batch: torch.Tensor) -> None:
    """At a step: a (prefix, continuation) pair must fit the batch's rows."""
    if batch.shape[1] < prefix_len + cont_len:
        raise ValueError(
            f"objective.prefix_len + cont_len = {prefix_len + cont_len} is longer than the blocks "
            f"({batch.shape[1]} tokens)"
        )


def split_batch(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) -> inputs (B, T), targets (B, T)."""
    return batch[:, :-1], batch[:, 1:]


def mle_step(model: nn.Module, batch: torch.Tensor, terms: Sequence[AuxiliaryTerm] = ()) -> LossOutput:
    """Plain maximum likelihood on the batch: mean_t −log p(y_t), through the chunked head; with ``terms``, each
    token's terms added in the same pass (by autograd: they have no closed form of their own)."""
    inputs, targets = split_batch(batch)
    h = model.hidden(inputs)
    if not terms:
        nll = model.nll(h, targets).mean()
        return LossOutput(nll, {"nll": nll.detach()})
    losses, stats = model.token_losses(h, with_terms(_nll, terms), targets)
    return LossOutput(losses.mean(), {key: value.mean() for key, value in stats.items()})


class Objective(nn.Module):
    """Base class. ``name`` is the config name; ``search_space`` (in the yaml) is read by the tuner."""

    name: ClassVar[str] = "objective"
    # knob values under which every training step does the objective's full work (a pairwise term from
    # step 0, a sequence-level step every step): the performance benchmark times that step, the dearest
    full_work_knobs: ClassVar[dict[str, Any]] = {}
    # the step from which the objective acts (None: from the first); it must be below trainer.max_steps
    start_step: int | None = None
    # how its papers train with it: "from scratch" (random weights), "fine-tuning" (a trained model), or both;
    # the report says whether a suite uses each objective as its papers do
    papers_regimes: ClassVar[tuple[str, ...]] = ("from scratch",)
    # whether the next training step's logs are read (``want_logs``); False lets an objective skip a statistic
    # whose only use is a log (the training loss and its gradient are always computed)
    logs_wanted: bool = True

    def want_logs(self, wanted: bool) -> None:
        """Say whether the next training step's ``LossOutput.logs`` will be read: the LightningModule says so before
        every step (the steps Lightning logs on), a benchmark of training steps as often."""
        self.logs_wanted = wanted

    def reads_true_source(self) -> bool:
        """Whether training reads the synthetic source's exact truth (its conditionals, or its NLL as a cost): an
        oracle, a bound on what a deployable objective can reach rather than one. The report tests such rows in
        a Holm family of their own, so that adding a bound never takes power from the deployable objectives."""
        return False

    def check_fits(self, length: int) -> None:
        """Raise KnobError when the objective's sequences cannot fit ``length`` tokens (a batch row, the model
        context). Called when the config is checked, before any work."""

    def check_steps(self, max_steps: int) -> None:
        """Raise KnobError when ``start_step`` is not below the run's ``trainer.max_steps``: the run would be
        another objective under this one's name."""
        if self.start_step is not None and self.start_step >= max_steps:
            raise KnobError(
                f"objective.start_step={self.start_step} is not allowed; it must be below trainer.max_steps={max_steps}"
            )

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        """Called once before training (unigram counts, a reference model, ...)."""

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        raise NotImplementedError


@dataclass(frozen=True)
class AuxiliaryTerm:
    """A weighted per-token term added to any objective: ``weight``·mean_t fn(z_t, y_t).loss. ``fn`` is the
    ``term`` of the objective that defines it (``objectives/z_loss.py``: (log Z)²)."""

    name: str
    weight: float
    fn: Callable[[torch.Tensor, torch.Tensor], TokenLoss]


def with_terms(token_loss: Callable[..., TokenLoss] | None, terms: Sequence[AuxiliaryTerm]) -> Callable[..., TokenLoss]:
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
    (B, T, ...) inputs of the formula; ``prepare_step`` whatever the step needs before them. The model's
    chunked head evaluates the formula without the (N, V) logits.
    """

    token_loss_and_grad: Callable[..., TokenLoss] | None = None
    # The objective's penalty alone, (logits, targets) -> TokenLoss, when it offers one as an auxiliary
    # term that any objective can add (aux={name: weight}); None when it offers none.
    term: Callable[[torch.Tensor, torch.Tensor], TokenLoss] | None = None
    # The stat that holds per-token weights w_t (no gradient) when the loss ℓ_t = w_t·(...) is normalised over the
    # batch, Σ_t ℓ_t / Σ_t w_t, instead of averaged: focal-style reweightings, which keep the NLL's scale so.
    # Auxiliary terms stay plain means. None: the mean.
    normalising_weight: ClassVar[str | None] = None

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor, *per_token: torch.Tensor) -> TokenLoss:
        raise NotImplementedError

    def prepare_step(self, model: nn.Module, step: int) -> None:
        """Called at every step before the per-token inputs and the loss: state of this step (a cost matrix
        from the current weights, say)."""

    def per_token_inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs (B, T), targets (B, T) -> extra per-token arguments of ``token_loss``, each (B, T, ...)."""
        return ()

    def forward(
        self, model: nn.Module, batch: torch.Tensor, step: int, terms: Sequence[AuxiliaryTerm] = ()
    ) -> LossOutput:
        """The mean per-token loss; ``terms`` (from ``WithAuxiliaryTerms``) are added to every token's loss in
        the same pass over the head."""
        self.prepare_step(model, step)
        inputs, targets = split_batch(batch)
        extra = self.per_token_inputs(inputs, targets)
        h = model.hidden(inputs)
        loss_fn, grad_fn = self.token_loss, self.token_loss_and_grad
        if terms:  # autograd of the sum: the terms have no closed form of their own
            loss_fn, grad_fn = with_terms(self.token_loss, terms), None
        losses, stats = model.token_losses(h, loss_fn, targets, *extra, grad_fn=grad_fn)
        loss, logs = losses.mean(), {key: value.mean() for key, value in stats.items()}
        if self.normalising_weight is not None:
            terms_part = sum((term.weight * logs[term.name] for term in terms), 0.0)
            loss = (loss - terms_part) / logs[self.normalising_weight].detach() + terms_part
        return LossOutput(loss, logs)


class FineTuning(Objective):
    """A mixin for objectives that fine-tune an MLE model, as their papers do: plain MLE before ``start_step``,
    ``fine_tune`` from it on. With ``uses_reference``, ``reference`` is a frozen copy of the model, taken at
    ``start_step`` (kept in checkpoints, so a resumed run has the same one).

    A subclass calls ``init_fine_tuning(start_step)`` in its constructor and writes ``fine_tune``; a
    ``FineTuning`` that is also a ``TokenObjective`` (listed first) fine-tunes through the token loss.
    """

    uses_reference: bool = False
    reference: nn.Module | None
    papers_regimes = ("fine-tuning",)

    def init_fine_tuning(self, start_step: int) -> None:
        check_knob("start_step", start_step, isinstance(start_step, int) and start_step >= 0, "use an integer >= 0")
        self.start_step = start_step
        self.reference = None
        self.register_buffer("reference_taken", torch.tensor(False))

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        super().setup(model, context)
        if self.uses_reference and self.reference is None:
            self.reference = copy.deepcopy(model).requires_grad_(False).eval()

    def take_reference(self, model: nn.Module) -> None:
        """The reference becomes a copy of ``model`` now, once (the first fine-tuning step)."""
        if self.reference is not None and not bool(self.reference_taken):
            self.reference.load_state_dict(model.state_dict())
            self.reference_taken.fill_(True)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int, terms: Sequence[AuxiliaryTerm] = ()):
        if step < self.start_step:
            return mle_step(model, batch, terms)
        self.take_reference(model)
        return self.fine_tune(model, batch, step, terms)

    def fine_tune(
        self, model: nn.Module, batch: torch.Tensor, step: int, terms: Sequence[AuxiliaryTerm] = ()
    ) -> LossOutput:
        """The objective's own step; by default the next base class's (a TokenObjective's) forward."""
        return super().forward(model, batch, step, terms)


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> TokenLoss:
    out = nll_loss(logits, targets)
    return TokenLoss(out.loss, {"nll": out.loss})


class WithAuxiliaryTerms(Objective):
    """An objective plus weighted auxiliary terms (``aux={z_loss: 1e-4, entropy_penalty: 0.1}``):
    loss = objective + Σ_i w_i·mean_t term_i(z_t, y_t) on the batch's tokens.

    A TokenObjective adds the terms to its own per-token loss (the same head pass); any other objective
    gets them from one more forward pass over the batch's inputs. The wrapped objective is not changed.
    """

    def __init__(self, objective: Objective, terms: Sequence[AuxiliaryTerm]) -> None:
        super().__init__()
        self.objective, self.terms = objective, tuple(terms)
        self.name = run_label(objective.name, {t.name: t.weight for t in self.terms})
        self.full_work_knobs = objective.full_work_knobs
        self.start_step = objective.start_step

    def reads_true_source(self) -> bool:
        return self.objective.reads_true_source()

    def check_fits(self, length: int) -> None:
        self.objective.check_fits(length)

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        self.objective.setup(model, context)

    def want_logs(self, wanted: bool) -> None:
        super().want_logs(wanted)
        self.objective.want_logs(wanted)

    def forward(self, model: nn.Module, batch: torch.Tensor, step: int) -> LossOutput:
        if isinstance(self.objective, TokenObjective):
            return self.objective(model, batch, step, self.terms)
        out = self.objective(model, batch, step)
        inputs, targets = split_batch(batch)
        losses, stats = model.token_losses(model.hidden(inputs), with_terms(None, self.terms), targets)
        logs = {**out.logs, **{key: value.mean() for key, value in stats.items()}}
        return LossOutput(out.loss + losses.mean(), logs)
