"""Selective language modelling (Lin et al., NeurIPS 2024, "Rho-1: Not All Tokens Are What You Need"): the NLL of
the top ``ratio`` share of the batch's tokens by excess loss ℓ_θ(y_t) − ℓ_ref(y_t), averaged over those tokens.

The reference scores how learnable a token is: tokens the reference predicts well and the model does not are the
ones worth learning; tokens both find hard (noise) or both find easy are left out. ``reference``: ``oracle`` is the
true source of the synthetic data, its exact conditionals (the best possible reference, named as such); otherwise
a run directory or checkpoint whose model (same vocabulary, any shape) is the frozen reference, as the paper's model
trained on selected high-quality data. Its paper continues the pretraining of trained models: MLE until
``start_step``. ratio = 1 is MLE.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lit_modules.core.errors import ConfigError
from lit_modules.core.model import GPT, GPTConfig
from lit_modules.core.start_weights import read_start_weights
from objectives.base import FineTuning, KnobError, LossOutput, ObjectiveContext, check_knob, split_batch

ORACLE = "oracle"


class SelectiveLM(FineTuning):
    name = "selective_lm"
    full_work_knobs = {"start_step": 0}

    def __init__(self, ratio: float = 0.6, reference: str = ORACLE, start_step: int = 200) -> None:
        super().__init__()
        check_knob("ratio", ratio, 0 < ratio <= 1, "use a share of tokens 0 < ratio <= 1 (1 is MLE)")
        ok = isinstance(reference, str) and bool(reference.strip())
        check_knob("reference", reference, ok, f"use {ORACLE} (the synthetic source) or a run directory / .ckpt")
        self.init_fine_tuning(start_step)
        self.ratio, self.reference_source = ratio, reference
        self.source = None
        self._reference_model: list[GPT] = []  # a list: the frozen reference is no part of this module's state

    def reads_true_source(self) -> bool:
        return self.reference_source == ORACLE

    def setup(self, model: nn.Module, context: ObjectiveContext) -> None:
        super().setup(model, context)
        if self.reference_source == ORACLE:
            if context.source is None:
                raise KnobError(
                    f"objective.reference={ORACLE} needs the true source (data=synthetic); give a run directory or "
                    ".ckpt of a reference model trained on this data's tokenizer"
                )
            self.source = context.source
            return
        try:
            weights = read_start_weights(self.reference_source)
        except ConfigError as e:
            raise KnobError(str(e).replace("init_from=", "objective.reference=", 1)) from None
        if weights.model.get("vocab_size") != context.vocab_size:
            raise KnobError(
                f"objective.reference={self.reference_source} has a vocabulary of {weights.model.get('vocab_size')} "
                f"tokens, this run's data {context.vocab_size}; give a reference trained on this data's tokenizer"
            )
        settings = {k: v for k, v in weights.model.items() if k in GPTConfig.__dataclass_fields__}
        reference = GPT(GPTConfig(**{**settings, "dropout": 0.0}))
        reference.load_state_dict(weights.state_dict)
        self._reference_model = [reference.requires_grad_(False).eval()]

    @torch.no_grad()
    def reference_nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ℓ_ref of every target (B, T): the true source's −log P(y_t | x_<t), or the reference model's NLL."""
        if self.source is not None:
            tokens = torch.cat([inputs, targets[:, -1:]], dim=1)
            return -self.source.target_log_probs(tokens)[:, 1:].to(device=targets.device, dtype=torch.float32)
        reference = self._reference_model[0].to(inputs.device)
        return reference.nll(reference.hidden(inputs), targets).float()

    def fine_tune(self, model: nn.Module, batch: torch.Tensor, step: int, terms=()) -> LossOutput:
        inputs, targets = split_batch(batch)
        nll = model.nll(model.hidden(inputs), targets)  # (B, T)
        excess = nll.detach().float() - self.reference_nll(inputs, targets)
        k = math.ceil(self.ratio * excess.numel())
        chosen = torch.zeros_like(excess).flatten().index_fill_(0, excess.flatten().topk(k).indices, 1.0)
        selected = chosen.view_as(nll).to(nll.dtype)
        loss = (nll * selected).sum() / k
        return LossOutput(loss, {"nll": nll.detach().mean(), "excess": excess.mean(), "selected_nll": loss.detach()})
