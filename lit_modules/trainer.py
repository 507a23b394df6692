"""The Lightning Trainer of a run, instantiated from ``configs/trainer/*.yaml``.

The yaml holds Trainer arguments (``_target_: lightning.pytorch.Trainer``; any other Trainer argument can be
added, ``+trainer.accumulate_grad_batches=2``). ``TrainerConfig`` checks the ones objbench reads; the run adds
what only it knows: the resolved precision, the logger, the checkpoint callbacks and the run directory.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lit_modules.callbacks import CheckpointOnSigterm, PeriodicCheckpoint
from lit_modules.core.configs import is_int, positive_int, require
from lit_modules.core.errors import ConfigError
from lit_modules.core.kernels import cpu_supports_bf16

PRECISIONS = ("auto", "bf16-mixed", "32-true", "16-mixed", "bf16", "32", "fp32")


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> Lightning's precision: bf16-mixed on bf16 GPUs and bf16 CPUs, else 32-true (16-mixed on an
    older GPU); ``bf16`` and ``fp32`` as their Lightning names."""
    if precision in ("fp32", "32"):
        return "32-true"
    if precision == "bf16":
        return "bf16-mixed"
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


@dataclass
class TrainerConfig:
    """The Trainer arguments objbench reads, checked; ``extra`` holds the yaml's other Trainer arguments."""

    max_steps: int = 900
    val_check_interval: int = 250  # steps between validations
    limit_val_batches: int | float = 8
    log_every_n_steps: int = 10
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = "auto"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("max_steps", "val_check_interval", "log_every_n_steps", "num_nodes"):
            positive_int(f"trainer.{key}", getattr(self, key))
        limit = self.limit_val_batches
        ok = (is_int(limit) and limit >= 1) or (isinstance(limit, float) and 0 < limit <= 1)
        require(
            "trainer.limit_val_batches",
            limit,
            ok,
            "use a number of batches >= 1 or a fraction in (0, 1] (val/nll needs at least one batch)",
        )
        devices = self.devices
        require(
            "trainer.devices",
            devices,
            devices == "auto" or (is_int(devices) and devices >= 1),
            "use a positive integer or auto",
        )
        if self.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={self.accelerator} is not allowed here: this machine has no CUDA GPU; use cpu "
                "or auto"
            )
        require(
            "trainer.precision", self.precision, self.precision in PRECISIONS, f"choose one of {', '.join(PRECISIONS)}"
        )
        allowed = inspect.signature(pl.Trainer.__init__).parameters
        for key in self.extra:
            if key not in allowed:
                raise ConfigError(f"trainer.{key} is not an argument of Lightning's Trainer")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TrainerConfig:
        """From the trainer yaml's keys (less ``_target_``): the ones above, the rest into ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in settings.items() if k in names}
        return cls(**known, extra={k: v for k, v in settings.items() if k not in names and k != "_target_"})

    @property
    def resolved_precision(self) -> str:
        return resolve_precision(self.precision, self.accelerator)

    @property
    def val_every(self) -> int:
        """Steps between validations, at most the run's length (a run shorter than the interval validates once)."""
        return min(self.val_check_interval, self.max_steps)


def build_trainer(
    settings: Mapping[str, Any],
    config: TrainerConfig,
    run_dir: Path,
    label: str,
    checkpoint_every: int,
    callbacks: Sequence[pl.Callback] = (),
) -> pl.Trainer:
    """The Trainer of the yaml's ``settings`` (``_target_`` and Trainer arguments) for a run in ``run_dir``:
    TensorBoard events under ``tb/<label>``, the learning rate logged, ``last.ckpt`` every
    ``checkpoint_every`` steps (after the validation of a step that has one) and on SIGTERM / Ctrl-C."""
    import hydra
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    checkpoints = run_dir / "checkpoints"
    return hydra.utils.instantiate(
        dict(settings),
        precision=config.resolved_precision,
        val_check_interval=config.val_every,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tb", version=label, default_hp_metric=False),
        callbacks=[
            LearningRateMonitor(logging_interval="step"),
            PeriodicCheckpoint(checkpoints, checkpoint_every, config.val_every),
            CheckpointOnSigterm(checkpoints),
            *callbacks,
        ],
        default_root_dir=str(run_dir),
    )
