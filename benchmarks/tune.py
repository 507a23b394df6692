"""Tune an objective's knobs with Optuna: each trial is a full objbench run composed by Hydra.

    python benchmarks/tune.py objective=entropy_penalty tune.n_trials=20      # also: objbench-tune ...
    python benchmarks/tune.py objective=label_smoothing tune.metrics=[val/nll,gen/greedy/seq_rep_4]

The search space is the ``search_space`` of the objective's yaml; every other argument is a run.py override
shared by all trials (configs/tune.yaml has the tuner's settings). Rerunning the command continues the study.
Outputs in the study directory: best_overrides.yaml (for ``run.py --overrides-file``), trials.csv, plots and
one run directory per trial.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmarks.runner import app, tuning
from benchmarks.runner.cli import check_group_choices, fail, hands_to_hydra, quiet_lightning, user_errors_as_one_line


@hydra.main(version_base="1.3", config_path="../configs", config_name="tune")
def hydra_main(cfg: DictConfig) -> None:
    """A command with Hydra's flags (``--cfg job`` prints the config and stops; ``--multirun`` is refused)."""
    objective = HydraConfig.get().runtime.choices.get("objective", "objective")
    prepared = user_errors_as_one_line(tuning.prepare)(cfg, objective, tuning.base_overrides(sys.argv[1:]))
    user_errors_as_one_line(tuning.tune)(prepared, app.output_dir())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    check_group_choices(argv)
    quiet_lightning()
    if hands_to_hydra(argv):
        if any(a in ("-m", "--multirun") for a in argv):
            fail("tune.py runs one study; tune several objectives with benchmarks/tuned.py")
        return app.run_hydra(hydra_main, argv)
    run_overrides = tuning.base_overrides(argv)
    app.launch(argv, "tune", prepare=lambda cfg, name: tuning.prepare(cfg, name, run_overrides), task=tuning.tune)
    return 0


if __name__ == "__main__":
    sys.exit(main())
