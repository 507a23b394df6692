"""The run config's values a user can get wrong, checked before any work: each a one-line ConfigError."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf

from benchmarks.cli import aux_terms, load_decodings
from lit_modules.util import ConfigError, resolve_precision
from objectives.base import longest_sequence


def check_run_config(cfg: DictConfig) -> dict:
    """Check the run config; return the decoding strategies to evaluate, by name."""

    def positive(key: str, value, kind=int) -> None:
        ok = isinstance(value, kind) and not isinstance(value, bool) and value > 0
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise ConfigError(
                f"{key}={value!r} is not allowed; use a positive {'number' if kind is float else 'integer'}"
            )

    def in_range(key: str, value, ok, allowed: str) -> None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and ok(value)):
            raise ConfigError(f"{key}={value!r} is not allowed; {allowed}")

    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r} is not allowed; use an integer in [0, 2^32)")
    positive("trainer.max_steps", cfg.trainer.max_steps)
    positive("trainer.val_check_interval", cfg.trainer.val_check_interval)
    positive("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps)
    limit = cfg.trainer.limit_val_batches
    in_range(
        "trainer.limit_val_batches",
        limit,
        lambda v: (isinstance(v, int) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
        "use a number of batches >= 1 or a fraction in (0, 1] (val/nll needs at least one batch)",
    )
    devices = cfg.trainer.devices
    if devices != "auto" and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ConfigError(f"trainer.devices={devices!r} is not allowed; use a positive integer or auto")
    positive("trainer.num_nodes", cfg.trainer.num_nodes)
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} is not allowed here: this machine has no CUDA GPU; use cpu or auto"
        )
    in_range("optim.weight_decay", cfg.optim.weight_decay, lambda v: v >= 0, "use a weight decay >= 0")
    in_range("optim.eps", cfg.optim.get("eps", 1e-8), lambda v: v > 0, "use eps > 0")
    in_range("optim.min_lr_ratio", cfg.optim.min_lr_ratio, lambda v: 0 <= v <= 1, "use a ratio in [0, 1]")
    warmup = cfg.optim.warmup_steps
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"optim.warmup_steps={warmup!r} is not allowed; use an integer >= 0")
    betas = list(cfg.optim.betas) if OmegaConf.is_list(cfg.optim.betas) else cfg.optim.betas
    if not (
        isinstance(betas, list)
        and len(betas) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(f"optim.betas={betas!r} is not allowed; use two numbers in [0, 1), e.g. [0.9, 0.95]")
    positive("eval.batch_size", cfg.eval.batch_size)
    if cfg.eval.max_batches is not None:
        positive("eval.max_batches", cfg.eval.max_batches)
    if not OmegaConf.is_list(cfg.eval.decodings) or not all(isinstance(d, str) for d in cfg.eval.decodings):
        raise ConfigError(
            f"eval.decodings={cfg.eval.decodings!r} is not allowed; use a list of decoding names, e.g. "
            "eval.decodings=[greedy,top_p]"
        )
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
    limit = longest_sequence(cfg.model.context, cfg.data.block_size)
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

    objective = build_objective(OmegaConf.to_container(cfg.objective, resolve=True), aux_terms(cfg.get("aux")))
    objective.check_fits(limit)
    objective.check_steps(cfg.trainer.max_steps)
    from lit_modules.decoding import DecodingConfig

    return {name: DecodingConfig(name=name, **d) for name, d in load_decodings(cfg.eval.decodings).items()}


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
