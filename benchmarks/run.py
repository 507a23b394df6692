"""Train one objective on the shared backbone and evaluate it.

    python benchmarks/run.py objective=mle model=tiny trainer.max_steps=300
    python benchmarks/run.py -m objective=mle,label_smoothing      # several runs

Writes into the Hydra run dir: results.json (atomically, at the end), samples.jsonl,
TensorBoard events (tb/), checkpoints/last.ckpt and the resolved config (.hydra/).
"""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmarks.cli import (
    CONFIG_DIR,
    USER_ERRORS,
    check_config,
    config_differences,
    fail,
    load_decodings,
    user_errors_as_one_line,
)
from lit_modules.util import ConfigError, atomic_write_json, atomic_write_text, keep_freed_memory, resolve_precision

SUMMARY_KEYS = (
    "val/nll",
    "tf/nll",
    "tf/ppl",
    "tf/entropy",
    "tf/ece",
    "tf/acc",
    "gt/entropy_rate",
    "gt/forward_kl",
    "gt/reverse_kl",
)


def quiet_lightning() -> None:
    """Keep the console to the progress bar and the summary: no Lightning tips, no repeated lines."""
    import logging
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def validate(cfg: DictConfig) -> dict:
    """Config values a user can get wrong, checked before any work: one-line ConfigError.
    Returns the decoding strategies to evaluate, by name."""

    def positive(key: str, value, kind=int) -> None:
        ok = isinstance(value, kind) and not isinstance(value, bool) and value > 0
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise ConfigError(
                f"{key}={value!r} is not allowed; use a positive {'number' if kind is float else 'integer'}"
            )

    positive("trainer.max_steps", cfg.trainer.max_steps)
    positive("data.batch_size", cfg.data.batch_size)
    positive("data.block_size", cfg.data.block_size)
    positive("optim.lr", cfg.optim.lr, float)
    positive("eval.num_prompts", cfg.eval.num_prompts)
    positive("eval.prefix_len", cfg.eval.prefix_len)
    positive("eval.cont_len", cfg.eval.cont_len)
    positive("checkpoint.every_n_steps", cfg.checkpoint.every_n_steps)
    if cfg.data.block_size > cfg.model.context:
        raise ConfigError(
            f"data.block_size={cfg.data.block_size} is larger than model.context={cfg.model.context}; "
            f"use data.block_size <= {cfg.model.context}"
        )
    limit = min(cfg.model.context, cfg.data.block_size + 1)
    if cfg.eval.prefix_len + cfg.eval.cont_len > limit:
        raise ConfigError(
            f"eval.prefix_len + eval.cont_len = {cfg.eval.prefix_len + cfg.eval.cont_len} is longer than the "
            f"context ({limit} = min(model.context, data.block_size + 1)); shorten one of them"
        )
    resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    if cfg.eval.mauve not in (True, False, "auto"):
        raise ConfigError(f"eval.mauve={cfg.eval.mauve!r} is not allowed; use auto, true or false")
    if cfg.eval.mauve is True:
        from benchmarks.mauve_metric import require

        require()
    if not isinstance(cfg.trainer.compile, bool):
        raise ConfigError(f"trainer.compile={cfg.trainer.compile!r} is not allowed; use true or false")
    from lit_modules.system import build_objective  # knobs are checked when the objective is built

    objective = build_objective(OmegaConf.to_container(cfg.objective, resolve=True))
    objective.check_fits(limit)
    from lit_modules.decoding import DecodingConfig

    return {name: DecodingConfig(name=name, **d) for name, d in load_decodings(cfg.eval.decodings).items()}


def versions() -> dict[str, str]:
    import lightning
    import torchmetrics

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "platform": platform.platform(),
    }


def run_label(objective_name: str, objective_cfg: DictConfig) -> str:
    """A TensorBoard run name that says the objective and its tuned knobs, e.g. label_smoothing_eps=0.1."""
    knobs = [f"{k}={objective_cfg[k]}" for k in (objective_cfg.get("search_space") or {}) if k in objective_cfg]
    return "_".join([objective_name, ",".join(knobs)]) if knobs else objective_name


# What a resumed run must share with the run that wrote the checkpoint: everything that shapes training.
TRAINING_CONFIG = (
    "seed",
    "objective",
    "model",
    "data",
    "optim",
    "trainer.max_steps",
    "trainer.precision",
    "trainer.gradient_clip_val",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.compile",
)


def training_config(cfg: DictConfig) -> dict:
    """The parts of ``cfg`` in TRAINING_CONFIG (data.cache_dir aside: where a cache lives changes nothing)."""
    out = {}
    for key in TRAINING_CONFIG:
        value = OmegaConf.select(cfg, key)
        out[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
    out["data"] = {k: v for k, v in out["data"].items() if k != "cache_dir"}
    return out


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """``resume=true``: the run directory's last.ckpt, if there is one (else a fresh start, said aloud).
    A checkpoint written under another training config is refused with one line naming what differs."""
    if not cfg.get("resume", False):
        return None
    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        print(f"resume=true: no checkpoint at {path}; starting fresh")
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(
            f"{path} cannot be read as a checkpoint ({type(e).__name__}); delete it to start fresh"
        ) from None
    hparams = checkpoint.get("hyper_parameters", {})
    saved = hparams.get("run_config") or {"model": hparams.get("model", {})}
    wanted = training_config(cfg)
    wanted["model"] = {**wanted["model"], "vocab_size": saved.get("model", {}).get("vocab_size")}
    different = config_differences(saved, {k: wanted.get(k) for k in saved})
    if different:
        detail = "; ".join(f"{key}: checkpoint {a!r}, config {b!r}" for key, a, b in different[:3])
        raise ConfigError(
            f"{path} was written by a run with another config ({detail}); resume with that config, or use another "
            "hydra.run.dir"
        )
    print(f"resume=true: continuing from {path} (step {checkpoint.get('global_step', '?')})")
    return str(path)


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
            PeriodicCheckpoint(run_dir / "checkpoints", cfg.checkpoint.every_n_steps),
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
    )
    return datamodule, system


def run(cfg: DictConfig, run_dir: Path, objective_name: str, callbacks: tuple = (), evaluation: bool = True) -> dict:
    """Train + evaluate one configuration; write its files into ``run_dir``; return the results.

    ``callbacks`` are added to the Trainer (the tuner's pruning callback); ``evaluation=False``
    stops after training and validation (val/ metrics only).
    """
    from lit_modules.callbacks import save_checkpoint_atomic, save_on_sigterm

    decodings = validate(cfg)
    keep_freed_memory()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    bf16 = precision.startswith("bf16")
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

    ckpt_path = resume_checkpoint(cfg, run_dir)
    t0 = time.perf_counter()
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
    train_s = time.perf_counter() - t0
    save_checkpoint_atomic(trainer, run_dir / "checkpoints" / "last.ckpt")
    if not trainer.is_global_zero:
        return {}

    t0 = time.perf_counter()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    evaluated = {"metrics": {}, "samples": [], "reliability": {}}
    if evaluation:
        evaluated = evaluate(system.model, datamodule, decodings, cfg, bf16)
        metrics.update(evaluated["metrics"])
        log_evaluation(trainer.logger, evaluated, metrics, trainer.global_step)
    eval_s = time.perf_counter() - t0
    log_hparams(trainer.logger, cfg, metrics)

    train_tokens = trainer.global_step * cfg.data.batch_size * cfg.data.block_size
    results = {
        "objective": objective_name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "metrics": metrics,
        "timing": {
            "train_s": train_s,
            "eval_s": eval_s,
            "train_tokens": train_tokens,
            "tokens_per_s": train_tokens / train_s,
            "steps": trainer.global_step,
            "precision": precision,
        },
        "versions": versions(),
        "reliability": evaluated["reliability"],
        "history": {"val/nll": system.val_history},
    }
    import json

    if getattr(datamodule, "tokenizer", None) is not None:  # samples.jsonl's ids can be read with it alone
        atomic_write_text(run_dir / "tokenizer.json", datamodule.tokenizer.to_str())
    if evaluation:
        atomic_write_text(run_dir / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in evaluated["samples"]))
    atomic_write_json(run_dir / "results.json", results)
    print_summary(results, run_dir)
    return results


def use_mauve(setting, synthetic: bool) -> bool:
    """eval.mauve: true (the extra must be installed), false, or auto: on for real text when the extra is
    installed; off on the synthetic source, whose id strings an English sentence encoder cannot read."""
    from benchmarks import mauve_metric as mauve

    if setting is True:
        mauve.require()
        return True
    if setting is False:
        return False
    if synthetic:
        return False
    if not mauve.installed():
        print(f"MAUVE: skipped, the mauve extra is not installed ({mauve.INSTALL})")
        return False
    return True


def evaluate(model, datamodule, decodings: dict, cfg: DictConfig, bf16: bool) -> dict:
    """tf/, gt/ and gen/ metrics of a trained model on the test split; samples; reliability bins."""
    from benchmarks.evaluate import generate_all, teacher_forced
    from benchmarks.metrics import NgramIndex

    source = getattr(datamodule, "source", None)  # exact conditionals: synthetic data only
    test = datamodule.blocks["test"]
    tf = teacher_forced(model, test, cfg.eval.batch_size, bf16, cfg.eval.max_batches, source)
    generations = generate_all(
        model,
        datamodule.prompt_blocks(cfg.eval.num_prompts, cfg.eval.prefix_len + cfg.eval.cont_len),
        decodings,
        cfg.eval.prefix_len,
        cfg.eval.cont_len,
        cfg.eval.batch_size,
        bf16,
        cfg.seed,
        datamodule.decode,
        source,
        NgramIndex(datamodule.blocks["train"], 8),
        mauve=use_mauve(cfg.eval.mauve, synthetic=source is not None),
    )
    return {
        "metrics": {**tf.metrics, **generations.metrics},
        "samples": generations.records,
        "entropies": tf.entropies,
        "reliability": tf.reliability,
    }


def log_evaluation(logger, evaluation: dict, metrics: dict, step: int) -> None:
    """Final metrics as scalars, a few samples per decoding in the text tab, the entropy histogram."""
    if logger is None:
        return
    writer = logger.experiment
    for key, value in metrics.items():
        writer.add_scalar(f"final/{key}", value, step)
    writer.add_histogram("tf/entropy_per_token", evaluation["entropies"], step)
    for record in evaluation["samples"]:
        if record["prompt_index"] < 4:  # the first 4 prompts of every decoding, prompt and continuation
            text = f"**prompt:** {record['prompt_text']}\n\n**{record['decoding']}:** {record['text']}"
            writer.add_text(f"samples/{record['decoding']}/prompt_{record['prompt_index']}", text, step)
    writer.flush()


HPARAM_METRICS = (
    "tf/",
    "gt/entropy_rate",
    "gt/forward_kl",
    "gt/reverse_kl",
    "seq_rep_4",
    "distinct_4",
    "self_bleu_4",
    "sample_nll",
    "val/nll",
)


def log_hparams(logger, cfg: DictConfig, metrics: dict) -> None:
    """One row per run in TensorBoard's HPARAMS tab: the knobs and the final key metrics."""
    if logger is None:
        return
    knobs = {f"objective.{k}": v for k, v in cfg.objective.items() if k not in ("_target_", "search_space")}
    params = {
        "objective": HydraConfig.get().runtime.choices.get("objective") if HydraConfig.initialized() else None,
        **knobs,
        "seed": cfg.seed,
        "model.d_model": cfg.model.d_model,
        "model.n_layer": cfg.model.n_layer,
        "optim.lr": cfg.optim.lr,
        "trainer.max_steps": cfg.trainer.max_steps,
    }
    params = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    key_metrics = {
        f"hp/{k}": v for k, v in metrics.items() if k.startswith(HPARAM_METRICS) or k.endswith(HPARAM_METRICS)
    }
    logger.log_hyperparams(params, key_metrics)
    logger.experiment.add_custom_scalars(CUSTOM_SCALARS)
    logger.experiment.flush()


# TensorBoard's custom-scalars tab: each key metric in one chart, every run a line.
CUSTOM_SCALARS = {
    "objbench": {
        "validation NLL": ["Multiline", ["val/nll"]],
        "training loss": ["Multiline", ["train/loss"]],
        "final teacher-forced": ["Multiline", [r"final/tf/(nll|entropy|ece)"]],
        "final ground truth": ["Multiline", [r"final/gt/(forward_kl|reverse_kl|entropy_rate)"]],
        "final greedy / top-p repetition": ["Multiline", [r"final/gen/(greedy|top_p)/seq_rep_4"]],
    }
}


def print_summary(results: dict, run_dir: Path) -> None:
    m, t = results["metrics"], results["timing"]
    rows = [(k, m[k]) for k in SUMMARY_KEYS if k in m]
    rows += [(k, v) for k, v in m.items() if k.endswith(("seq_rep_4", "distinct_4", "sample_nll"))]
    width = max(len(k) for k, _ in rows)
    print(
        f"\n{results['objective']}: {t['steps']} steps, {t['train_tokens']:,} tokens, "
        f"train {t['train_s']:.1f}s ({t['tokens_per_s']:,.0f} tok/s, {t['precision']}), eval {t['eval_s']:.1f}s"
    )
    for k, v in rows:
        print(f"  {k:<{width}}  {v:10.4f}")
    print(f"results: {run_dir / 'results.json'}\n")


@hydra.main(version_base="1.3", config_path="../configs", config_name="run")
def main(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    objective_name = hydra_cfg.runtime.choices.get("objective", "objective")
    if hydra_cfg.mode == RunMode.MULTIRUN:  # one failing job must not stop the sweep
        finished = finished_results(run_dir, cfg)
        if finished is not None:
            print(f"{objective_name}: finished earlier with the same config, skipped ({run_dir / 'results.json'})")
            return finished["metrics"].get("tf/nll")
        try:
            results = run(cfg, run_dir, objective_name)
        except Exception as e:
            record_failure(run_dir, objective_name, cfg, e)
            return None
    else:
        results = user_errors_as_one_line(run)(cfg, run_dir, objective_name)
    return results.get("metrics", {}).get("tf/nll") if results else None


def finished_results(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The results of an earlier run of the same config in ``run_dir``, if it finished."""
    import json

    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    # suite.seeds lists the sweep's seeds, not this job's: a job done for suite.seeds=[1,2,3] is the same
    # job under suite.seeds=[1,2,3,4,5] (make results adds seeds to make bench's runs)
    wanted = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "suite"}
    saved = {k: v for k, v in (results.get("config") or {}).items() if k != "suite"}
    return results if saved == wanted else None


def record_failure(run_dir: Path, objective_name: str, cfg: DictConfig, error: Exception) -> None:
    """A failed job of a sweep: ``failed.json`` with its error line (the report lists it), a line on stderr."""
    from benchmarks.cli import unwrap

    inner = unwrap(error)
    line = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    if not isinstance(inner, USER_ERRORS):
        line = f"{type(inner).__name__}: {line}"
    print(f"error: {objective_name}: {line}", file=sys.stderr)
    atomic_write_json(
        run_dir / "failed.json",
        {"objective": objective_name, "error": line, "config": OmegaConf.to_container(cfg, resolve=True)},
    )


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


def check_seeds(seeds) -> list[int]:
    """suite.seeds: a non-empty list of distinct non-negative integers, or a one-line ConfigError."""
    ok = (
        isinstance(seeds, (list, tuple))
        and len(seeds) > 0
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
        and len(set(seeds)) == len(seeds)
    )
    if not ok:
        raise ConfigError(
            f"suite.seeds={seeds!r} is not allowed; use a non-empty list of distinct integers in [0, 2^32), "
            "e.g. suite.seeds=[1,2,3]"
        )
    return list(seeds)


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
    check_config(sys.argv[1:], validate)
    quiet_lightning()
    main()
