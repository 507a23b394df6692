"""Train one objective on the shared backbone and evaluate it.

    python benchmarks/run.py objective=mle model=tiny trainer.max_steps=300
    python benchmarks/run.py -m objective=mle,label_smoothing      # several runs

Writes into the Hydra run dir: results.json (atomically, at the end), samples.jsonl,
TensorBoard events (tb/), checkpoints/last.ckpt and the resolved config (.hydra/).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmarks.checks import check_run_config, check_seeds
from benchmarks.cli import CONFIG_DIR, aux_terms, check_config, fail, objective_label, user_errors_as_one_line
from benchmarks.evaluate import evaluate_run
from benchmarks.results import collect_results, finished_results, print_summary, record_failure, write_run_files
from benchmarks.resume import resume_checkpoint, training_config
from benchmarks.tb_logging import log_evaluation, log_hparams, quiet_lightning, run_label
from lit_modules.kernels import keep_freed_memory
from lit_modules.util import ConfigError, resolve_precision


def build_trainer(cfg: DictConfig, run_dir: Path, precision: str, label: str):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    from lit_modules.callbacks import CheckpointOnSigterm, PeriodicCheckpoint

    t = cfg.trainer
    return pl.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,
        gradient_clip_val=t.gradient_clip_val,
        val_check_interval=min(t.val_check_interval, t.max_steps),
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,  # PeriodicCheckpoint keeps one rolling last.ckpt
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tb", version=label, default_hp_metric=False),
        callbacks=[
            LearningRateMonitor(logging_interval="step"),
            PeriodicCheckpoint(
                run_dir / "checkpoints", cfg.checkpoint.every_n_steps, min(t.val_check_interval, t.max_steps)
            ),
            CheckpointOnSigterm(run_dir / "checkpoints"),
        ],
        use_distributed_sampler=False,  # the training batches shard themselves (lit_modules.data.StepBatches)
        default_root_dir=str(run_dir),
    )


def build(cfg: DictConfig):
    """The seeded data module and system of a config. At one seed every objective gets the same initial
    weights (the backbone is built before the objective draws anything) and the same training batches
    (``StepBatches`` draws them from ``data.seed``, which is ``seed``): the suite's runs are paired."""
    import lightning.pytorch as pl

    from lit_modules.system import LanguageModelSystem

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = {**OmegaConf.to_container(cfg.model, resolve=True), "vocab_size": datamodule.vocab_size}
    system = LanguageModelSystem(
        model=model,
        objective=OmegaConf.to_container(cfg.objective, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        run_config={**training_config(cfg), "model": model},  # what a resume must match
        aux=aux_terms(cfg.get("aux")),
    )
    return datamodule, system


def run(cfg: DictConfig, run_dir: Path, objective_name: str, callbacks: tuple = (), evaluation: bool = True) -> dict:
    """Train + evaluate one configuration; write its files into ``run_dir``; return the results.

    ``callbacks`` are added to the Trainer (the tuner's pruning callback); ``evaluation=False``
    stops after training and validation (val/ metrics only).
    """
    decodings = check_run_config(cfg)  # every user error before any work
    with run_dir_lock(run_dir):
        return _run(cfg, run_dir, objective_name, callbacks, evaluation, decodings)


def _run(cfg: DictConfig, run_dir: Path, objective_name: str, callbacks: tuple, evaluation: bool, decodings) -> dict:
    from lit_modules.callbacks import save_checkpoint_atomic

    keep_freed_memory()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")

    datamodule, system = build(cfg)
    if cfg.trainer.compile:
        system.model.compile_blocks()
    datamodule.setup("fit")
    if evaluation:  # enough held-out prompts: checked before training, not after
        datamodule.prompt_blocks(cfg.eval.num_prompts, cfg.eval.prefix_len + cfg.eval.cont_len)
    trainer = build_trainer(cfg, run_dir, precision, run_label(objective_name, cfg.objective))
    trainer.callbacks.extend(callbacks)

    fit(trainer, system, datamodule, resume_checkpoint(cfg, run_dir), run_dir)
    train_s = system.train_seconds  # counts the runs this one resumed
    save_checkpoint_atomic(trainer, run_dir / "checkpoints" / "last.ckpt")
    if not trainer.is_global_zero:
        return {}

    t0 = time.perf_counter()
    # the final weights' validation, from the history: a resumed run that was already finished has no
    # validation of its own (Lightning's callback_metrics would hold none)
    final_nll = system.val_history[-1][1]
    metrics = {"val/nll": final_nll, "val/ppl": math.exp(final_nll)}
    evaluated = {"metrics": {}, "samples": [], "reliability": {}}
    if evaluation:
        evaluated = evaluate_run(system.model, datamodule, decodings, cfg, precision.startswith("bf16"))
        metrics.update(evaluated["metrics"])
        log_evaluation(trainer.logger, evaluated, metrics, trainer.global_step)
    eval_s = time.perf_counter() - t0
    log_hparams(trainer.logger, cfg, metrics)

    timing = {
        "train_s": train_s,
        "eval_s": eval_s,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "precision": precision,
    }
    results = collect_results(cfg, objective_name, metrics, timing, evaluated, system.val_history)
    write_run_files(run_dir, results, evaluated["samples"] if evaluation else None, datamodule)
    print_summary(results, run_dir)
    return results


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``run_dir/.lock`` for the length of a run: a second run into a busy directory
    would interleave its TensorBoard events and overwrite the first one's results. The other processes of a
    distributed run write into rank 0's directory and take none."""
    import fcntl

    if any(os.environ.get(k, "0") != "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{run_dir} is in use by another run (its .lock is held); wait for it or use another hydra.run.dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fit(trainer, system, datamodule, ckpt_path: str | None, run_dir: Path) -> None:
    """Lightning's fit (from ``ckpt_path`` when resuming), then a validation of the final weights if the
    last step had none. SIGTERM leaves a checkpoint; a checkpoint of another shape is a one-line error."""
    from lit_modules.callbacks import save_on_sigterm

    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit as e:
        if trainer.received_sigterm and e.code in (0, None):  # Lightning's SIGTERMException
            save_on_sigterm(trainer, run_dir / "checkpoints")
        raise
    except RuntimeError as e:
        if ckpt_path and "state_dict" in str(e):  # e.g. size mismatch: another model shape
            raise ConfigError(
                f"{ckpt_path} does not fit this config ({str(e).splitlines()[0][:150]}); resume with the config it was "
                "saved with, or use another hydra.run.dir"
            ) from None
        raise
    if not system.val_history or system.val_history[-1][0] != trainer.global_step:
        trainer.validate(system, datamodule=datamodule, verbose=False)  # val/ metrics of the final weights


FAILED_JOBS_LOG = "OBJBENCH_FAILED_JOBS"  # a file where a multirun's jobs (in this or a launcher's worker
# process) note their failures: the sweep finishes the others, then exits 1


def note_failed_job(run_dir: Path) -> None:
    path = os.environ.get(FAILED_JOBS_LOG)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{run_dir}\n")


@hydra.main(version_base="1.3", config_path="../configs", config_name="run")
def main(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    quiet_lightning()  # again here: a launcher's worker process (joblib) never ran the lines under __main__
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    objective_name = objective_label(hydra_cfg.runtime.choices.get("objective", "objective"), cfg.get("aux"))
    if hydra_cfg.mode == RunMode.MULTIRUN:  # one failing job must not stop the sweep
        finished = finished_results(run_dir, cfg)
        if finished is not None:
            print(f"{objective_name}: finished earlier with the same config, skipped ({run_dir / 'results.json'})")
            return finished["metrics"].get("tf/nll")
        try:
            results = run(cfg, run_dir, objective_name)
        except Exception as e:
            record_failure(run_dir, objective_name, cfg, e)
            note_failed_job(run_dir)
            return None
    else:
        results = user_errors_as_one_line(run)(cfg, run_dir, objective_name)
    return results.get("metrics", {}).get("tf/nll") if results else None


def expand_overrides_file(argv: list[str]) -> list[str]:
    """``--overrides-file F.yaml``: F is a YAML list of Hydra overrides (as tune.py writes for the best
    trial); they are spliced into the command line where the flag stands."""
    if "--overrides-file" not in argv:
        return argv
    i = argv.index("--overrides-file")
    if i + 1 >= len(argv):
        fail("--overrides-file needs a path to a YAML list of overrides")
    path = Path(argv[i + 1])
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:
        fail(f"--overrides-file {path}: cannot read it ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        fail(f"--overrides-file {path}: expected a YAML list of overrides such as '- objective.eps=0.1'")
    return argv[:i] + overrides + argv[i + 2 :]


def with_suite_seeds(argv: list[str]) -> list[str]:
    """A multirun with a suite sweeps ``seed`` over ``suite.seeds`` (every objective at every seed,
    paired), unless the command line sweeps or sets ``seed`` itself."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return argv
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    parsed = OverridesParser.create().parse_overrides(args)
    if any(o.key_or_group == "seed" for o in parsed):
        return argv
    plain = [a for a, o in zip(args, parsed, strict=True) if not o.is_sweep_override() and not a.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=plain)
    if OmegaConf.select(cfg, "suite.seeds") is None:
        return argv
    seeds = check_seeds(
        OmegaConf.to_container(cfg.suite.seeds) if isinstance(cfg.suite.seeds, ListConfig) else cfg.suite.seeds
    )
    return [*argv, f"seed={','.join(map(str, seeds))}"]


if __name__ == "__main__":
    sys.argv[1:] = expand_overrides_file(sys.argv[1:])
    sys.argv[1:] = user_errors_as_one_line(with_suite_seeds)(sys.argv[1:])
    check_config(sys.argv[1:], check_run_config)
    quiet_lightning()
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="objbench-failed-", suffix=".txt") as failed_log:
        os.environ[FAILED_JOBS_LOG] = failed_log.name  # inherited by a launcher's worker processes
        main()
        failed = Path(failed_log.name).read_text(encoding="utf-8").splitlines()
    if failed:
        fail(f"{len(failed)} job(s) failed (their failed.json says why): {', '.join(failed)}", code=1)
