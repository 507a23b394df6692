"""Train one objective on the shared backbone and evaluate it; every setting is a Hydra override.

    python benchmarks/run.py objective=nce                          # one run (also: objbench-run objective=nce)
    python benchmarks/run.py -m objective=mle,label_smoothing       # several: a Hydra multirun
    python benchmarks/run.py -m 'objective=glob(*)' suite=default   # the comparison suite, every seed

Writes into the run directory: results.json, samples.jsonl, TensorBoard events (tb/), checkpoints/last.ckpt
and the composed config (.hydra/). Bad input is one line and exit 2, before anything is written.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from benchmarks.runner import app, job
from benchmarks.runner.cli import (
    check_group_choices,
    check_sweep_dir,
    expand_overrides_file,
    force_swept_knobs,
    hands_to_hydra,
    quiet_lightning,
    suite_seed_overrides,
)
from benchmarks.runner.config import plan


@hydra.main(version_base="1.3", config_path="../configs", config_name="run")
def hydra_main(cfg: DictConfig) -> float | None:
    return job.hydra_job(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = expand_overrides_file(list(sys.argv[1:] if argv is None else argv))
    check_group_choices(argv)
    quiet_lightning()
    if hands_to_hydra(argv):
        if any(a in ("-m", "--multirun") for a in argv):
            argv = force_swept_knobs(suite_seed_overrides(argv))
            check_sweep_dir(argv, "run")
        return app.run_hydra(hydra_main, argv)
    app.launch(argv, "run", prepare=plan, task=job.run, check_dir=job.check_run_dir_free)
    return 0


if __name__ == "__main__":
    sys.exit(main())
