"""Objectives that inject faults at a known step, for the reliability tests, or record what the system tells them.
Tests name them by ``_target_`` (``objective._target_=tests.faults.KilledOnce``); the repository root is on the path
of the tests and of the subprocesses they start."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from objectives.mle import MLE
from objectives.nce import NCE


class NaNAtStep(MLE):
    """MLE until ``step``, then a NaN loss (the injected fault)."""

    name = "nan_at_step"

    def __init__(self, step: int = 2) -> None:
        super().__init__()
        self.step = step

    def forward(self, model, batch, step, terms=()):
        out = super().forward(model, batch, step, terms)
        if step >= self.step:
            out.loss = out.loss * float("nan")
        return out


class KilledOnce(NCE):
    """NCE (random noise draws: a resume must restore the RNG), but the process SIGKILLs itself at ``step`` of
    its ``run``-th setup (the run, or the tuner's trial), once: ``marker`` records the kill. Faults land at a
    known step, not after a sleep."""

    name = "killed_once"

    def __init__(self, step: int = 1, marker: str = "killed", run: int = 1, k: int = 1024, noise_power: float = 0.75,
                 log_z: float = 0.0, learn_log_z: bool = False, gap_positions: int = 64) -> None:  # fmt: skip
        super().__init__(k, noise_power, log_z, learn_log_z, gap_positions)
        self.step, self.marker, self.run = step, Path(marker), run

    def setup(self, model, context) -> None:
        super().setup(model, context)
        runs = self.marker.with_suffix(".runs")
        runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")

    def forward(self, model, batch, step):
        runs = int(self.marker.with_suffix(".runs").read_text())
        if step == self.step and runs == self.run and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(model, batch, step)


def killed_once(marker, step: int, run: int = 1) -> list[str]:
    """Overrides that train NCE through KilledOnce: SIGKILL at ``step`` of the ``run``-th run."""
    return ["objective._target_=tests.faults.KilledOnce", f"+objective.step={step}", f"+objective.marker={marker}",
            f"+objective.run={run}"]  # fmt: skip


class RecordsLogsWanted(MLE):
    """MLE that records, at every training step, whether the system said the step's logs would be read."""

    name = "records_logs_wanted"
    seen: list[bool] = []  # noqa: RUF012  (one list per process: the test reads it after the run)

    def forward(self, model, batch, step, terms=()):
        RecordsLogsWanted.seen.append(self.logs_wanted)
        return super().forward(model, batch, step, terms)
