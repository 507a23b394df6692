"""How the Hydra entry points (run.py, tune.py) run their jobs: each config composed once and checked once.

A single job: the entry point composes the config (Hydra's compose API, with Hydra's own settings), checks it
(``prepare``: one line on a bad value, before anything exists on disk), and hands it to Hydra's ``run_job``,
which makes the run directory, saves ``.hydra/``, sets up logging and calls the task, exactly as
``@hydra.main`` would. A multirun (or a command with Hydra's flags, ``--cfg job``) goes to ``@hydra.main``:
Hydra composes each job, and each job is checked when it runs; a failed job does not stop the sweep.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from benchmarks.runner.cli import check_output_dir, fail, overrides, user_errors_as_one_line
from benchmarks.runner.config import CONFIG_DIR, compose

FAILED_JOBS_LOG = "OBJBENCH_FAILED_JOBS"  # where a multirun's jobs (in this or a launcher's worker process) note
# their failures: the sweep finishes the others, then exits 1


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's config: ``cfg`` less Hydra's own node."""
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(job):
        job.pop("hydra", None)
    return job


def launch(
    argv: list[str],
    config_name: str,
    prepare: Callable[[DictConfig, str], Any],
    task: Callable[[Any, Path], Any],
    check_dir: Callable[[Any, Path], None] | None = None,
) -> Any:
    """One job of ``configs/<config_name>.yaml`` with the command line's overrides: ``prepare(job config,
    objective name)`` checks it, ``check_dir(prepared, run directory)`` the directory (before Hydra writes its
    ``.hydra/`` there), then ``task(prepared, run directory)`` runs inside Hydra's ``run_job``."""
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import run_job
    from hydra.types import HydraContext

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=config_name):
        cfg = user_errors_as_one_line(compose)(overrides(argv), config_name, with_hydra=True)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the job's directory
        objective = cfg.hydra.runtime.choices.get("objective", "objective")
        prepared = user_errors_as_one_line(prepare)(without_hydra(cfg), objective)
        check_output_dir(str(cfg.hydra.run.dir), "hydra.run.dir")
        if check_dir is not None:
            user_errors_as_one_line(check_dir)(prepared, Path(str(cfg.hydra.run.dir)))
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg))

        def job(_: DictConfig) -> Any:  # a user error leaves as one line (SystemExit passes run_job by)
            return user_errors_as_one_line(task)(prepared, Path(HydraConfig.get().runtime.output_dir))

        returned = run_job(
            task_function=job, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None, hydra_context=context
        )
    return returned.return_value  # a job that failed otherwise (a bug) raises its error here


def run_hydra(hydra_main: Callable[[], Any], argv: list[str]) -> int:
    """``hydra_main`` (an ``@hydra.main`` function) on this command line; 1 when a multirun's job failed."""
    sys.argv[1:] = argv
    with tempfile.NamedTemporaryFile(prefix="objbench-failed-", suffix=".txt") as failed_log:
        os.environ[FAILED_JOBS_LOG] = failed_log.name  # inherited by a launcher's worker processes
        hydra_main()
        failed = Path(failed_log.name).read_text(encoding="utf-8").splitlines()
    if failed:
        fail(f"{len(failed)} job(s) failed (their failed.json says why): {', '.join(failed)}", code=1)
    return 0


def output_dir() -> Path:
    """The directory Hydra made for the job that runs now."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def note_failed_job(run_dir: Path) -> None:
    path = os.environ.get(FAILED_JOBS_LOG)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{run_dir}\n")
