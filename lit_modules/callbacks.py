"""Callbacks of the training run."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl


def save_checkpoint_atomic(trainer: pl.Trainer, path: str | Path) -> None:
    """``trainer.save_checkpoint`` to a temporary name, then rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp)  # collective; rank 0 writes
    if trainer.is_global_zero:
        os.replace(tmp, path)


class PeriodicCheckpoint(pl.Callback):
    """Write ``last.ckpt`` every ``every_n_steps`` optimiser steps (overwriting it atomically).

    Lightning's ModelCheckpoint with ``save_top_k=0`` keeps no periodic file; this keeps exactly
    one rolling ``last.ckpt``, which is what resuming needs.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0:
            save_checkpoint_atomic(trainer, self.dirpath / "last.ckpt")


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM (a scheduler's pre-emption, ``kill``), save ``last.ckpt`` after the current step and exit 143.

    Lightning notes the signal (``trainer.received_sigterm``) but acts on it only at an epoch's end or by
    ending ``fit`` with a status-0 SIGTERMException; an objbench run is one long epoch, so this acts after
    the step in progress, and run.py calls ``save_on_sigterm`` when ``fit`` ended the other way.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.received_sigterm:
            save_on_sigterm(trainer, self.dirpath)


def save_on_sigterm(trainer: pl.Trainer, dirpath: Path) -> None:
    """Save last.ckpt after a SIGTERM and exit with status 143 (128 + SIGTERM)."""
    save_checkpoint_atomic(trainer, Path(dirpath) / "last.ckpt")
    print(
        f"SIGTERM: checkpoint saved at step {trainer.global_step} in {Path(dirpath) / 'last.ckpt'}; "
        "rerun the same command with resume=true to continue",
        flush=True,
    )
    raise SystemExit(143)
