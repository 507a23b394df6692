"""Checkpoints of the training run: one rolling ``last.ckpt``, written atomically, also on SIGTERM and Ctrl-C."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl

from lit_modules.core.configs import positive_int
from lit_modules.core.files import atomic_path


@dataclass
class CheckpointConfig:
    every_n_steps: int = 500  # last.ckpt is also written at the end and after a signal

    def __post_init__(self) -> None:
        positive_int("checkpoint.every_n_steps", self.every_n_steps)


def save_checkpoint(trainer: pl.Trainer, path: str | Path) -> None:
    """``trainer.save_checkpoint``, atomically: never a half-written file (a collective call; rank 0 writes)."""
    with atomic_path(path, commit=trainer.is_global_zero) as tmp:
        trainer.save_checkpoint(tmp)


class PeriodicCheckpoint(pl.Callback):
    """Write ``last.ckpt`` every ``every_n_steps`` optimiser steps (overwriting it atomically).

    Lightning's ModelCheckpoint with ``save_top_k=0`` keeps no periodic file; this keeps exactly
    one rolling ``last.ckpt``, which is what resuming needs. At a step that also validates (a multiple of
    ``val_every``) the checkpoint is written after the validation, so that it holds that validation: a
    resumed run never redoes it, and would otherwise lose that point of the validation history.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int, val_every: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.val_every = val_every

    def _due(self, trainer: pl.Trainer) -> bool:
        step = trainer.global_step
        return step > 0 and step % self.every_n_steps == 0

    def _validates(self, trainer: pl.Trainer) -> bool:
        return self.val_every is not None and trainer.global_step % self.val_every == 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if self._due(trainer) and not self._validates(trainer):
            save_checkpoint(trainer, self.dirpath / "last.ckpt")

    def on_validation_end(self, trainer: pl.Trainer, *args) -> None:
        if (
            trainer.state.fn == "fit"
            and not trainer.sanity_checking
            and self._due(trainer)
            and self._validates(trainer)
        ):
            save_checkpoint(trainer, self.dirpath / "last.ckpt")


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM (a scheduler's pre-emption, ``kill``) or SIGINT (Ctrl-C), save ``last.ckpt`` after the current
    step, say so in one line and exit 143 or 130 (128 + the signal).

    Lightning notes SIGTERM (``trainer.received_sigterm``) but acts on it only at an epoch's end or by ending
    ``fit`` with a status-0 SIGTERMException; an objbench run is one long epoch, so this acts after the step in
    progress, and run.py calls ``save_on_sigterm`` when ``fit`` ended the other way. Ctrl-C would raise a
    KeyboardInterrupt wherever the step is (Lightning then stops without a checkpoint): during ``fit`` it only
    sets a flag here, read after the step.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.received_sigint = False
        self._previous_handler = None

    def on_fit_start(self, trainer: pl.Trainer, *args) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def on_fit_end(self, trainer: pl.Trainer, *args) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def _on_sigint(self, signum, frame) -> None:
        if self.received_sigint:  # a second Ctrl-C: stop now, as Python would
            raise KeyboardInterrupt
        self.received_sigint = True

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.received_sigterm or self.received_sigint:
            self.on_fit_end(trainer)
            code = 130 if self.received_sigint and not trainer.received_sigterm else 143
            save_on_sigterm(trainer, self.dirpath, code)


def save_on_sigterm(trainer: pl.Trainer, dirpath: Path, code: int = 143) -> None:
    """Save last.ckpt after SIGTERM (exit status 143 = 128 + 15) or SIGINT (130 = 128 + 2)."""
    save_checkpoint(trainer, Path(dirpath) / "last.ckpt")
    name = "SIGINT" if code == 130 else "SIGTERM"
    print(
        f"{name}: checkpoint saved at step {trainer.global_step} in {Path(dirpath) / 'last.ckpt'}; "
        "rerun the same command with resume=true to continue",
        flush=True,
    )
    raise SystemExit(code)
