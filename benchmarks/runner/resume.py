"""Resuming a run: which settings a checkpoint must share with the config, and the checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lit_modules.core.configs import config_differences
from lit_modules.core.errors import ConfigError
from lit_modules.core.start_weights import DEFAULTS
from objectives.registry import with_knob_defaults

# What a resumed run must share with the run that wrote the checkpoint: everything that shapes training.
TRAINING_CONFIG = (
    "seed",
    "objective",
    "aux",
    "model",
    "data",
    "optim",
    "trainer.max_steps",
    "trainer.precision",
    "trainer.gradient_clip_val",
    "trainer.devices",
    "trainer.num_nodes",
    "compile",
)


def training_config(cfg: DictConfig) -> dict:
    """The parts of ``cfg`` in TRAINING_CONFIG, less what changes nothing in training: where the data cache
    lives and the objective's tuning search space."""
    out = {}
    for key in TRAINING_CONFIG:
        value = OmegaConf.select(cfg, key)
        out[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
    return without_inert_keys(out)


def without_inert_keys(config: dict) -> dict:
    config = dict(config)
    for group, key in (("data", "cache_dir"), ("objective", "search_space")):
        if isinstance(config.get(group), dict):
            config[group] = {k: v for k, v in config[group].items() if k != key}
    return config


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The run directory's last.ckpt to resume from (``resume=true``), if there is one (else a fresh start, said
    aloud). A checkpoint written under another training config is refused with one line naming what differs."""
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
    saved = without_inert_keys(hparams.get("run_config") or {"model": hparams.get("model", {})})
    wanted = training_config(cfg)
    wanted["model"] = {**wanted["model"], "vocab_size": saved.get("model", {}).get("vocab_size")}
    if isinstance(saved.get("model"), dict):  # a checkpoint from before some model settings existed
        saved["model"] = {**DEFAULTS, **saved["model"]}
    if isinstance(saved.get("objective"), dict):  # ... or before some of its objective's knobs did
        saved["objective"] = with_knob_defaults(saved["objective"])
    different = config_differences(saved, {k: wanted.get(k) for k in saved})
    if different:
        another_objective = [d for d in different if d[0] == "objective._target_"]
        different = another_objective or different  # its knobs differ too, as a consequence
        detail = "; ".join(f"{key}: checkpoint {a!r}, config {b!r}" for key, a, b in different[:3])
        raise ConfigError(
            f"{path} was written by a run with another config ({detail}); resume with that config, or use another "
            "hydra.run.dir"
        )
    print(f"resume=true: continuing from {path} (step {checkpoint.get('global_step', '?')})")
    return str(path)
