"""One run of a checked ``Plan``: train the objective on the shared backbone, evaluate it, write its files.

Into the run directory: results.json (atomically, last), samples.jsonl, tokenizer.json (real text),
TensorBoard events (tb/), checkpoints/last.ckpt; Hydra's .hydra/ holds the composed config.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from benchmarks.evaluation.evaluate import evaluate_run
from benchmarks.runner.config import Plan, container
from benchmarks.runner.results import collect_results, print_summary, write_run_files
from benchmarks.runner.resume import resume_checkpoint, training_config
from benchmarks.runner.tensorboard import log_evaluation, log_hparams
from lit_modules.callbacks import save_checkpoint, save_on_sigterm
from lit_modules.core.errors import ConfigError
from lit_modules.core.kernels import keep_freed_memory
from lit_modules.data import BlockDataModule
from lit_modules.system import LanguageModelSystem, ValidationConfig
from lit_modules.trainer import build_trainer
from objectives.base import objective_knobs, run_label


def run(plan: Plan, run_dir: Path, callbacks: Sequence[pl.Callback] = (), evaluation: bool = True) -> dict:
    """Train + evaluate one plan; write its files into ``run_dir``; return the results (``{}`` on the other
    processes of a distributed run). ``callbacks`` join the Trainer's (the tuner's pruning);
    ``evaluation=False`` stops after training and validation (val/ metrics only)."""
    with run_dir_lock(run_dir):
        check_run_dir_free(plan, Path(run_dir))
        if plan.overwrite:
            clear_run(Path(run_dir))
        datamodule, system, trainer = train(plan, Path(run_dir), callbacks, evaluation)
        if not trainer.is_global_zero:
            return {}
        return evaluate_and_write(plan, Path(run_dir), datamodule, system, trainer, evaluation)


# and checkpoints/, tb/
RUN_FILES = (
    "results.json",
    "samples.jsonl",
    "samples_at_best.jsonl",
    "tokenizer.json",
    "tokenizer_config.json",
    "failed.json",
)


def check_run_dir_free(plan: Plan, run_dir: Path) -> None:
    """A directory that holds a run (its results.json or checkpoint) is not written over by a fresh run: one line
    that names the ways on, unless ``resume=true`` (continue it) or ``overwrite=true`` (replace it)."""
    held = [p for p in (run_dir / "results.json", run_dir / "checkpoints" / "last.ckpt") if p.exists()]
    if held and not (plan.resume or plan.overwrite):
        raise ConfigError(
            f"{run_dir} already holds a run ({held[0].relative_to(run_dir)}); resume=true continues it (same config), "
            "overwrite=true replaces it, or use another hydra.run.dir"
        )


def clear_run(run_dir: Path) -> None:
    """overwrite=true: the earlier run's files go before the new run writes its own (its TensorBoard events
    would otherwise show beside the new ones)."""
    import shutil

    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in ("checkpoints", "tb"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def build(plan: Plan) -> tuple[BlockDataModule, LanguageModelSystem]:
    """The seeded data module and system of a plan. At one seed every objective gets the same initial weights
    (the backbone is built before the objective draws anything) and the same training batches (``StepBatches``
    draws them from ``data.seed``, which is ``seed``): the suite's runs are paired."""
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    datamodule = plan.data_module(plan.data)
    run_config = {**training_config(plan.cfg), "model": asdict(plan.model)}  # what a resume must match
    start = plan.init_from.state_dict if plan.init_from is not None else None
    validation = ValidationConfig(calibration=plan.eval.val_calibration, keep_best=plan.eval.at_best)
    system = LanguageModelSystem(plan.model, plan.objective, plan.optim, run_config, start, validation)
    return datamodule, system


def train(
    plan: Plan, run_dir: Path, callbacks: Sequence[pl.Callback], evaluation: bool
) -> tuple[BlockDataModule, LanguageModelSystem, pl.Trainer]:
    """Build, then fit (from the run directory's checkpoint with resume=true); last.ckpt holds the end."""
    keep_freed_memory()
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    datamodule, system = build(plan)
    if plan.compile:
        system.model.compile_blocks()
    datamodule.setup("fit")
    if plan.init_from is not None:  # the same vocabulary by size (checked with the config) and by tokenizer
        tokenizer = getattr(datamodule, "tokenizer", None)
        plan.init_from.check_tokenizer(tokenizer.to_str() if tokenizer is not None else None)
    if evaluation:  # enough held-out prompts: checked before training, not after
        datamodule.prompt_blocks(plan.eval.num_prompts, plan.eval.prefix_len + plan.eval.cont_len)
    tuned = {
        k: v
        for k, v in objective_knobs(container(plan.cfg.objective)).items()
        if k in (plan.cfg.objective.get("search_space") or {})
    }
    label = run_label(plan.objective_name, container(plan.cfg.get("aux")) or {}, tuned)
    trainer = build_trainer(
        container(plan.cfg.trainer), plan.trainer, run_dir, label, plan.checkpoint.every_n_steps, callbacks
    )
    ckpt_path = resume_checkpoint(plan.cfg, run_dir) if plan.resume else None
    fit(trainer, system, datamodule, ckpt_path, run_dir)
    save_checkpoint(trainer, run_dir / "checkpoints" / "last.ckpt")
    return datamodule, system, trainer


def fit(trainer: pl.Trainer, system: LanguageModelSystem, datamodule, ckpt_path: str | None, run_dir: Path) -> None:
    """Lightning's fit (from ``ckpt_path`` when resuming), then a validation of the final weights if the last
    step had none. SIGTERM leaves a checkpoint; a checkpoint of another shape is a one-line error."""
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


def evaluate_and_write(
    plan: Plan, run_dir: Path, datamodule, system: LanguageModelSystem, trainer: pl.Trainer, evaluation: bool
) -> dict:
    """The evaluation of the trained model, TensorBoard's final scalars, results.json and samples.jsonl."""
    train_s = system.train_seconds  # counts the runs this one resumed
    t0 = time.perf_counter()
    # the final weights' validation, from the history: a resumed run that was already finished has no
    # validation of its own (Lightning's callback_metrics would hold none)
    final_nll = system.val_history[-1][1]
    metrics = {"val/nll": final_nll, "val/ppl": math.exp(final_nll)}
    precision = plan.trainer.resolved_precision
    evaluated, at_best = {"metrics": {}, "samples": [], "reliability": {}}, None
    if evaluation:
        evaluated = evaluate_run(
            system.model, datamodule, plan.decodings, plan.eval, plan.seed, precision.startswith("bf16")
        )
        metrics.update(evaluated["metrics"])
        log_evaluation(trainer.logger, evaluated, metrics, trainer.global_step)
        if plan.eval.at_best and system.best is not None:
            at_best = evaluate_best(plan, datamodule, system, evaluated, precision.startswith("bf16"))
    eval_s = time.perf_counter() - t0
    log_hparams(trainer.logger, plan, metrics)
    timing = {
        "train_s": train_s,
        "eval_s": eval_s,
        "steps": trainer.global_step,
        "world_size": trainer.world_size,
        "precision": precision,
    }
    config = OmegaConf.to_container(plan.cfg, resolve=True)
    start = plan.init_from.record() if plan.init_from is not None else None
    history = {"val/nll": system.val_history, **system.val_curves}
    results = collect_results(config, plan.label, metrics, timing, evaluated, history, start)
    if at_best is not None:
        results["at_best"] = {k: v for k, v in at_best.items() if k != "samples"}
    more = {"samples_at_best.jsonl": at_best["samples"]} if at_best is not None else {}
    write_run_files(run_dir, results, evaluated["samples"] if evaluation else None, datamodule, more)
    print_summary(results, run_dir)
    return results


def evaluate_best(plan: Plan, datamodule, system: LanguageModelSystem, final: dict, bf16: bool) -> dict:
    """eval.at_best: the evaluation of the weights of the lowest validation NLL (the model early stopping
    keeps), as {step, val/nll, metrics, samples}; the final evaluation's where the last validation was the best.
    The model keeps the final weights."""
    step, nll, weights = system.best
    if step == system.val_history[-1][0]:
        evaluated = final
    else:
        final_weights = {k: v.detach().clone() for k, v in system.model.state_dict().items()}
        system.model.load_state_dict(weights)
        try:
            evaluated = evaluate_run(system.model, datamodule, plan.decodings, plan.eval, plan.seed, bf16)
        finally:
            system.model.load_state_dict(final_weights)
    metrics = {"val/nll": nll, "val/ppl": math.exp(nll), **evaluated["metrics"]}
    return {"step": step, "val/nll": nll, "metrics": metrics, "samples": evaluated["samples"]}


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


def hydra_job(cfg) -> float | None:
    """A job that Hydra composed (a multirun's, or a command with Hydra's flags): checked and run here. In a
    multirun a job finished earlier with the same config is skipped, and a failing job writes failed.json and
    lets the sweep go on. Returns the test NLL (Hydra's job return value)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from benchmarks.runner.app import note_failed_job
    from benchmarks.runner.cli import quiet_lightning, user_errors_as_one_line
    from benchmarks.runner.config import objective_label, plan
    from benchmarks.runner.results import finished_results, record_failure

    quiet_lightning()  # again here: a launcher's worker process (joblib) never ran the entry point
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    objective = hydra_cfg.runtime.choices.get("objective", "objective")
    if hydra_cfg.mode != RunMode.MULTIRUN:
        results = user_errors_as_one_line(lambda: run(plan(cfg, objective), run_dir))()
        return results.get("metrics", {}).get("tf/nll") if results else None
    label = objective_label(objective, cfg.get("aux"))
    finished = finished_results(run_dir, cfg)
    if finished is not None:
        print(f"{label}: finished earlier with the same config, skipped ({run_dir / 'results.json'})")
        return finished["metrics"].get("tf/nll")
    try:
        results = run(plan(cfg, objective), run_dir)
    except Exception as e:
        record_failure(run_dir, label, cfg, e)
        note_failed_job(run_dir)
        return None
    return results.get("metrics", {}).get("tf/nll") if results else None
