"""The LightningModule: backbone + training objective + optimiser; full-softmax validation.

Training minimises whatever the objective returns; validation and test always report the
full-softmax NLL (and perplexity = exp(NLL)) whatever the objective, so runs compare fairly.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics

from lit_modules.core.configs import is_int, is_number, require
from lit_modules.core.errors import UserError
from lit_modules.core.head import calibration_stats
from lit_modules.core.model import GPT, GPTConfig
from objectives.base import Objective, ObjectiveContext, longest_sequence


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then cosine decay to ``min_lr_ratio`` of the peak rate."""

    lr: float = 3.0e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1.0e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        require("optim.lr", self.lr, is_number(self.lr) and self.lr > 0, "use a positive number")
        require(
            "optim.weight_decay",
            self.weight_decay,
            is_number(self.weight_decay) and self.weight_decay >= 0,
            "use a weight decay >= 0",
        )
        require("optim.eps", self.eps, is_number(self.eps) and self.eps > 0, "use eps > 0")
        require(
            "optim.min_lr_ratio",
            self.min_lr_ratio,
            is_number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1,
            "use a ratio in [0, 1]",
        )
        require(
            "optim.warmup_steps",
            self.warmup_steps,
            is_int(self.warmup_steps) and self.warmup_steps >= 0,
            "use an integer >= 0",
        )
        betas = list(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        ok = isinstance(betas, list) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)
        require("optim.betas", betas, ok, "use two numbers in [0, 1), e.g. [0.9, 0.95]")
        self.betas = tuple(betas)


@dataclass
class ValidationConfig:
    """What each validation measures beyond the NLL, and whether the best validation step's weights are kept."""

    calibration: bool = False  # also val/entropy and val/ece (top-label, 15 bins), kept in the history
    keep_best: bool = False  # a copy of the weights at the lowest val/nll so far (early stopping's model)


class LanguageModelSystem(pl.LightningModule):
    """The GPT of ``model``, trained on ``objective`` with the optimiser of ``optim``. ``run_config`` (plain
    values) is saved with the checkpoint's hyperparameters: a resumed run must match it."""

    def __init__(
        self,
        model: GPTConfig,
        objective: Objective,
        optim: OptimConfig,
        run_config: dict | None = None,
        start_weights: dict[str, torch.Tensor] | None = None,
        validation: ValidationConfig | None = None,
    ) -> None:
        super().__init__()
        # plain values only: a checkpoint stays loadable with torch.load(weights_only=True)
        self.save_hyperparameters({"model": asdict(model), "optim": asdict(optim), "run_config": run_config})
        self.model = GPT(model)
        # init_from: the backbone starts as an earlier run's ended (its output bias included)
        self.started_from_weights = start_weights is not None
        if start_weights is not None:
            self.model.load_state_dict(start_weights)
        self.objective = objective
        self.optim = optim
        # Mean over tokens (weighted by count), synced across processes by torchmetrics.
        self.val_nll = torchmetrics.MeanMetric()
        self.val_history: list[tuple[int, float]] = []  # (step, val/nll) at every validation
        self.validation = validation or ValidationConfig()
        self.val_curves: dict[str, list[tuple[int, float]]] = {}  # val/entropy, val/ece: (step, value)
        if self.validation.calibration:
            self.val_entropy = torchmetrics.MeanMetric()
            self.val_ece = torchmetrics.classification.BinaryCalibrationError(n_bins=15, norm="l1")
        self.best: tuple[int, float, dict[str, torch.Tensor]] | None = None  # (step, val/nll, weights on the CPU)
        self._objective_ready = False
        self._rng_to_restore: dict | None = None
        self._last_step_time: float | None = None
        self._tokens_per_s: float | None = None
        self._train_s_before = 0.0  # training seconds of the runs this one resumes (from the checkpoint)
        self._fit_started: float | None = None

    @property
    def train_seconds(self) -> float:
        """Wall seconds of training (validation included) over this run and the ones it resumed."""
        now = time.perf_counter()
        return self._train_s_before + (now - self._fit_started if self._fit_started is not None else 0.0)

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def setup_objective(self, block_size: int, unigram_counts: torch.Tensor | None, source: Any = None) -> None:
        """Before training: the output bias from the train split's unigram counts (random weights only), then
        the objective's state (``source``: the data's exact conditionals, where known)."""
        if unigram_counts is not None and not self.started_from_weights:
            self.model.init_output_bias(unigram_counts)
        context = longest_sequence(self.model.cfg.context, block_size)
        self.objective.setup(self.model, ObjectiveContext(self.model.cfg.vocab_size, context, unigram_counts, source))

    def setup(self, stage: str) -> None:
        # Before a checkpoint is restored: objective state (NCE's noise distribution, the
        # preference reference model) must exist when the state dict is loaded.
        dm = self.trainer.datamodule
        if stage == "fit" and dm is not None and not self._objective_ready:
            self.setup_objective(dm.block_size, dm.unigram_counts(), getattr(dm, "source", None))
            self._objective_ready = True

    # ---- checkpoint extras: what exact resumption needs beyond weights, optimiser and loops ----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["objbench"] = {
            "val_history": self.val_history,
            "val_curves": self.val_curves,
            "best": self.best,
            "rng": rng_state(),
            "train_s": self.train_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extras = checkpoint.get("objbench", {})
        self.val_history = [tuple(x) for x in extras.get("val_history", [])]
        self.val_curves = {k: [tuple(x) for x in v] for k, v in (extras.get("val_curves") or {}).items()}
        self.best = tuple(extras["best"]) if extras.get("best") is not None else None
        self._rng_to_restore = extras.get("rng")
        self._train_s_before = float(extras.get("train_s", 0.0))

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # the first resumed step draws what the uninterrupted run drew
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    # ---- training ----
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        every = self.trainer.log_every_n_steps
        log_step = bool(every) and (self.global_step + 1) % every == 0
        self.objective.want_logs(log_step)
        out = self.objective(self.model, batch, self.global_step)
        # reading the loss waits for the device: on a GPU only on logging steps and every 10th step
        check = self.device.type == "cpu" or log_step or (self.global_step + 1) % 10 == 0
        if check and not torch.isfinite(out.loss):
            terms = ", ".join(f"{k}={float(v):.4g}" for k, v in out.logs.items())
            raise NonFiniteLossError(
                f"non-finite loss ({out.loss.item()}) at step {self.global_step} of objective "
                f"{self.objective.name}{f' ({terms})' if terms else ''}; the last good checkpoint is kept"
            )
        self._update_throughput(batch)
        if log_step:
            # only on the steps Lightning writes to the logger: each self.log call costs as much Python
            # time as a tiny model's forward pass (the progress bar updates on these steps)
            self.log("train/loss", out.loss, prog_bar=True)
            for key, value in out.logs.items():
                self.log(f"train/{self.objective.name}/{key}", value)
            if self._tokens_per_s is not None:
                self.log("tok/s", self._tokens_per_s, prog_bar=True, logger=False)
        return out.loss

    def _update_throughput(self, batch: torch.Tensor) -> None:
        # Tokens/s over the last step (an exponential average), shown in the progress bar.
        # Lightning's ThroughputMonitor logs to the logger only, not to the bar, hence this.
        now = time.perf_counter()
        if self._last_step_time is not None:
            rate = batch[:, 1:].numel() / max(now - self._last_step_time, 1e-9)
            self._tokens_per_s = rate if self._tokens_per_s is None else 0.9 * self._tokens_per_s + 0.1 * rate
        self._last_step_time = now

    # ---- validation: full softmax ----
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        h = self.model.hidden(inputs)
        self.val_nll.update(self.model.nll(h, targets))  # (B, T), the chunked head
        if self.validation.calibration:  # one more pass of the head, in fp32
            entropy, confidence, correct = self.model.map_logits(h, calibration_stats, targets).unbind(-1)
            self.val_entropy.update(entropy)
            self.val_ece.update(confidence.flatten(), correct.flatten().long())

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()
        logs = {"val/nll": nll, "val/ppl": nll.exp()}
        if self.validation.calibration:
            logs |= {"val/entropy": self.val_entropy.compute(), "val/ece": self.val_ece.compute()}
            self.val_entropy.reset()
            self.val_ece.reset()
        self.log_dict(logs, prog_bar=True, sync_dist=False)
        if not self.trainer.sanity_checking:
            self.val_history.append((self.global_step, nll.item()))
            for key in ("val/entropy", "val/ece"):
                if key in logs:
                    self.val_curves.setdefault(key, []).append((self.global_step, logs[key].item()))
            if self.validation.keep_best and (self.best is None or nll.item() < self.best[1]):
                weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                self.best = (self.global_step, nll.item(), weights)
        self.val_nll.reset()
        self._last_step_time = None  # validation time is not training time

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning's mixed-precision plugin refuses to clip for any fused optimiser because an fp16
        # scaler would still hold scaled gradients; bf16 and fp32 have no scaler, so clip directly.
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    # ---- optimiser: AdamW, linear warmup, cosine decay to min_lr ----
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # Fused AdamW (a fraction of the unfused step's time on CPUs and GPUs), except under an fp16
        # gradient scaler, which cannot unscale before clipping when step() unscales internally.
        scaled = self.trainer is not None and str(self.trainer.precision).startswith("16")
        fused = self.device.type in ("cpu", "cuda") and not scaled
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=fused)
        total = max(int(self.trainer.max_steps), 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, o.warmup_steps, total, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite (a learning rate or knob too large, most often): the run stops
    with one line (no results are written; the last good checkpoint is kept)."""


def rng_state() -> dict:
    import random

    import numpy as np

    # plain tensors, lists and numbers only: the checkpoint stays loadable with weights_only=True
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(py_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate: linear warmup, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
