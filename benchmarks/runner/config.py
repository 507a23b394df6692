"""A run's config, composed once and checked once into a ``Plan``: each group's typed dataclass checks its own
fields, ``check_across_groups`` what spans groups, and the objective (with its auxiliary terms) is built here and
nowhere else. Everything a user can get wrong is one ``ConfigError`` line before any work starts.

    configs/run.yaml  --Hydra-->  DictConfig  --plan()-->  Plan (typed groups + the built objective)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmarks.evaluation.evaluate import EvalConfig
from lit_modules.callbacks import CheckpointConfig
from lit_modules.core.configs import is_int, require, typed
from lit_modules.core.decoding import DecodingConfig
from lit_modules.core.errors import ConfigError
from lit_modules.core.model import GPTConfig
from lit_modules.core.start_weights import StartWeights, read_start_weights
from lit_modules.data import BlockConfig, BlockDataModule
from lit_modules.system import OptimConfig
from lit_modules.trainer import TrainerConfig
from objectives.base import AuxiliaryTerm, Objective, longest_sequence, run_label
from objectives.registry import auxiliary_term, build_objective, objective_class, offers_term

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def available(group: str) -> list[str]:
    """The options of a config group: the names of ``configs/<group>/*.yaml``."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def load_option(group: str, name: str) -> dict:
    """One option's yaml as a plain dict (an objective's, a decoding's)."""
    if name not in available(group):
        raise ConfigError(f"{group}={name} is not available; choose one of: {', '.join(available(group))}")
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"), resolve=True)


def compose(overrides: list[str], config_name: str = "run", with_hydra: bool = False) -> DictConfig:
    """The config of ``configs/<config_name>.yaml`` with these overrides, by Hydra's compose API (inside a
    running Hydra app, or standalone); a bad override is one ConfigError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    try:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=config_name):
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
    except ConfigCompositionException as e:
        raise ConfigError(composition_error(e)) from None
    except Exception as e:  # OmegaConf's and the override parser's errors
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ConfigError(f"bad override: {'; '.join(lines[:2]) if lines else type(e).__name__}") from None


def composition_error(error: Exception) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    if first.startswith("Could not override"):
        key = first.split("'")[1]
        return f"{key} is not a setting of this config; list them with --cfg job, or add one with +{key}=..."
    return f"bad override: {first or type(error).__name__}"


@dataclass
class SuiteConfig:
    seeds: list[int]  # a multirun sweeps seed over these (unless the command line sets seed)

    def __post_init__(self) -> None:
        self.seeds = check_seeds(self.seeds)


def check_seeds(seeds: Any) -> list[int]:
    """suite.seeds: a non-empty list of distinct integers in [0, 2^32), or a one-line ConfigError."""
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) or OmegaConf.is_list(seeds) else seeds
    ok = (
        isinstance(seeds, list)
        and len(seeds) > 0
        and all(is_int(s) and 0 <= s < 2**32 for s in seeds)
        and len(set(seeds)) == len(seeds)
    )
    require(
        "suite.seeds", seeds, ok, "use a non-empty list of distinct integers in [0, 2^32), e.g. suite.seeds=[1,2,3]"
    )
    return seeds


def sweep_seeds(seeds: Any) -> str:
    """The resolver of a suite's ``hydra.sweeper.params.seed``: suite.seeds as a sweep, ``1,2,3``."""
    return ",".join(map(str, check_seeds(OmegaConf.to_container(seeds) if OmegaConf.is_config(seeds) else seeds)))


def objective_label(objective: str, aux: Any) -> str:
    """The resolver of the suite's job directories: ``${objective_label:${hydra:runtime.choices.objective},${aux}}``."""
    return run_label(objective, {} if aux is None else dict(aux))


def fine_tuning_start(init_from: Any, from_scratch: int) -> int:
    """The resolver of a fine-tuning objective's ``start_step``: 0 in a run that starts from trained weights
    (``init_from``: the objective acts from the first step, as in its paper), else ``from_scratch`` (MLE
    before it, inside one run from random weights)."""
    return 0 if init_from is not None else from_scratch


OmegaConf.register_new_resolver("objective_label", objective_label, replace=True)
OmegaConf.register_new_resolver("sweep_seeds", sweep_seeds, replace=True)
OmegaConf.register_new_resolver("fine_tuning_start", fine_tuning_start, replace=True)


def auxiliary_terms(aux: Any) -> tuple[AuxiliaryTerm, ...]:
    """``aux={name: weight}`` -> the terms, each the ``term`` of the objective ``configs/objective/<name>.yaml``
    defines (with its yaml's knobs): z_loss, entropy_penalty, label_smoothing."""
    aux = {} if aux is None else OmegaConf.to_container(aux) if OmegaConf.is_config(aux) else aux
    if not isinstance(aux, dict):
        raise ConfigError(f"aux={aux!r} is not allowed; use a mapping of terms to weights, e.g. aux={{z_loss:1e-4}}")
    terms = []
    for name, weight in aux.items():
        config = load_option("objective", name) if name in available("objective") else None
        if config is None or not offers_term(objective_class(config["_target_"])):
            offered = [
                n
                for n in available("objective")
                if offers_term(objective_class(load_option("objective", n)["_target_"]))
            ]
            raise ConfigError(f"aux.{name} is not an auxiliary term; choose from: {', '.join(offered)}")
        ok = (is_int(weight) or isinstance(weight, float)) and math.isfinite(weight) and weight >= 0
        require(f"aux.{name}", weight, ok, "use a finite weight >= 0")
        terms.append(auxiliary_term(name, config, float(weight)))
    return tuple(terms)


def decoding_presets(names: list[str]) -> dict[str, DecodingConfig]:
    """Decoding presets by name from configs/decoding/ (each checks its own fields)."""
    options = available("decoding")
    presets = {}
    for name in names:
        if name not in options:
            raise ConfigError(f"eval.decodings: {name!r} is not available; choose from: {', '.join(options)}")
        presets[name] = typed(DecodingConfig, {"name": name, **load_option("decoding", name)}, f"decoding {name}")
    return presets


@dataclass
class Plan:
    """A checked run: the composed config (``cfg``, saved with the results), every group typed, the objective
    built. ``objective_name`` is the config's choice (``nce``), ``label`` the name with auxiliary terms."""

    cfg: DictConfig
    objective_name: str
    label: str
    seed: int
    resume: bool
    overwrite: bool
    compile: bool
    model: GPTConfig
    data_module: type[BlockDataModule]
    data: BlockConfig
    trainer: TrainerConfig
    optim: OptimConfig
    eval: EvalConfig
    checkpoint: CheckpointConfig
    decodings: dict[str, DecodingConfig]
    objective: Objective
    suite: SuiteConfig | None = None
    init_from: StartWeights | None = None  # the weights the run starts from (init_from=PATH), else random

    @property
    def synthetic(self) -> bool:
        return hasattr(self.data, "source")


def container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def plan(cfg: DictConfig, objective_name: str) -> Plan:
    """Check ``cfg`` (every group, then across groups) and build its objective: a ``Plan``, or one ConfigError."""
    seed, resume, compile_ = cfg.seed, cfg.get("resume", False), cfg.get("compile", False)
    require("seed", seed, is_int(seed) and 0 <= seed < 2**32, "use an integer in [0, 2^32)")
    require("resume", resume, isinstance(resume, bool), "use true or false")
    overwrite = cfg.get("overwrite", False)
    require("overwrite", overwrite, isinstance(overwrite, bool), "use true or false")
    require("compile", compile_, isinstance(compile_, bool), "use true or false")
    start = start_weights(cfg.get("init_from"), resume)
    data_settings = container(cfg.data)
    data_module = data_module_class(data_settings.pop("_target_", None))
    data = typed(data_module.Config, pretrained_tokenizer(data_module, data_settings, start), "data")
    trainer = TrainerConfig.from_settings(container(cfg.trainer))
    evaluation = typed(EvalConfig, container(cfg.eval), "eval")
    suite = typed(SuiteConfig, container(cfg.suite), "suite") if cfg.get("suite") is not None else None
    terms = auxiliary_terms(cfg.get("aux"))
    if objective_name in (container(cfg.get("aux")) or {}):
        raise ConfigError(
            f"aux.{objective_name} is the objective itself (objective={objective_name}): its term would count twice; "
            "set the objective's own knob instead, or add the term to another objective"
        )
    objective = build_objective(container(cfg.objective), terms)
    # a pretrained checkpoint brings its architecture (config.json); an objbench run's must match the config's
    architecture = {k: v for k, v in start.model.items() if k != "vocab_size"} if start and start.pretrained else {}
    result = Plan(
        cfg=cfg,
        objective_name=objective_name,
        label=run_label(objective_name, container(cfg.get("aux")) or {}),
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        compile=compile_,
        model=typed(GPTConfig, {**container(cfg.model), **architecture, "vocab_size": data.vocab_size}, "model"),
        data_module=data_module,
        data=data,
        trainer=trainer,
        optim=typed(OptimConfig, container(cfg.optim), "optim"),
        eval=evaluation,
        checkpoint=typed(CheckpointConfig, container(cfg.checkpoint), "checkpoint"),
        decodings=decoding_presets(evaluation.decodings),
        objective=objective,
        suite=suite,
        init_from=start,
    )
    check_across_groups(result)
    return result


def start_weights(init_from: Any, resume: bool) -> StartWeights | None:
    """``init_from``'s weights (read lazily), or None; never together with ``resume``."""
    if init_from is None:
        return None
    if resume:
        raise ConfigError(
            f"init_from={init_from} with resume=true: resume continues this run directory's own checkpoint, init_from "
            "starts a new run from another run's weights; use one of them (resume=false to start from init_from)"
        )
    return read_start_weights(init_from)


def pretrained_tokenizer(data_module: type[BlockDataModule], data_settings: dict, start: StartWeights | None) -> dict:
    """Real text starting from a pretrained checkpoint is tokenised with the checkpoint's tokenizer (unless
    data.tokenizer names one: then it must be the same, checked with the data); the synthetic source's pseudo-words
    have no ids in a pretrained vocabulary: refused."""
    if start is None or not start.pretrained:
        return data_settings
    if "tokenizer" not in {f.name for f in fields(data_module.Config)}:
        raise ConfigError(
            f"init_from={start.source} with the synthetic source: its pseudo-words have no ids in the checkpoint's "
            f"{start.model['vocab_size']}-token vocabulary; fine-tune it on text (data=text or data=hub)"
        )
    if data_settings.get("tokenizer") is None:
        if start.tokenizer is None:
            raise ConfigError(
                f"init_from={start.source} brings no tokenizer (tokenizer.json, or vocab.json + merges.txt); give "
                "the one it was trained with as data.tokenizer=PATH"
            )
        data_settings = {**data_settings, "tokenizer": str(start.tokenizer)}
    return data_settings


def data_module_class(target: str | None) -> type[BlockDataModule]:
    import hydra

    try:
        cls = hydra.utils.get_class(target or "")
    except Exception:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, BlockDataModule)):
        raise ConfigError(f"data._target_={target!r} is not a data module of lit_modules.data")
    return cls


def check_across_groups(p: Plan) -> None:
    """What no group can check alone: the rows fit the model, the prompts fit the rows, the objective's
    sequences fit the rows and its start step the run."""
    if p.init_from is not None:
        p.init_from.check_model(asdict(p.model))
    if p.data.block_size > p.model.context:
        pretrained = p.init_from is not None and p.init_from.pretrained
        context = (
            f"init_from={p.init_from.source}'s {p.model.context} positions (its n_positions)"
            if pretrained
            else f"model.context={p.model.context}"
        )
        raise ConfigError(
            f"data.block_size={p.data.block_size} is larger than {context}; use data.block_size <= {p.model.context}"
        )
    limit = longest_sequence(p.model.context, p.data.block_size)
    if p.eval.prefix_len + p.eval.cont_len > limit:
        raise ConfigError(
            f"eval.prefix_len + eval.cont_len = {p.eval.prefix_len + p.eval.cont_len} is longer than the "
            f"context ({limit} = min(model.context, data.block_size + 1)); shorten one of them"
        )
    p.objective.check_fits(limit)
    p.objective.check_steps(p.trainer.max_steps)
    check_mauve(p)
    if p.eval.ood_files and p.synthetic:
        raise ConfigError(
            f"eval.ood_files={p.eval.ood_files} on the synthetic source: its pseudo-words are not a text file's; "
            "out-of-distribution tests of the synthetic source are eval.ood_shifts"
        )


def check_mauve(p: Plan) -> None:
    """MAUVE's needs, before any work (they were found after training): real text, and at least its minimum
    of continuations per side."""
    from benchmarks.evaluation import mauve

    if p.eval.mauve is True and p.synthetic:
        raise ConfigError(
            "eval.mauve=true on the synthetic source: MAUVE's English sentence encoder cannot read its pseudo-words; "
            "use eval.mauve=auto (on for real text) or false"
        )
    on = p.eval.mauve is True or (p.eval.mauve == "auto" and not p.synthetic and mauve.installed())
    if on and p.eval.num_prompts < mauve.MIN_TEXTS:
        raise ConfigError(
            f"eval.num_prompts={p.eval.num_prompts} gives MAUVE fewer than its {mauve.MIN_TEXTS} continuations; "
            f"use eval.num_prompts >= {mauve.MIN_TEXTS}, or eval.mauve=false"
        )
