"""Every option of every config group composes and builds what it names, without training (the runs are in
test_run.py, one per distinct code path); every objective class agrees with its yaml."""

import inspect

import hydra
import pytest
import torch
from conftest import TINY, compose
from omegaconf import OmegaConf

from benchmarks.cli import CONFIG_DIR, GROUPS, available
from lit_modules.decoding import DecodingConfig
from lit_modules.model import GPT, GPTConfig
from lit_modules.system import build_objective
from objectives.base import Objective, objective_knobs


def objective_yaml(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "objective" / f"{name}.yaml"))


@pytest.mark.parametrize("name", available("objective"))
def test_objective_class_matches_its_yaml(name):
    """The class's ``name`` is the yaml's file name, its constructor's defaults are the yaml's knobs (a
    class built with no arguments is the objective the yaml builds), and every tuned knob is a knob."""
    config = objective_yaml(name)
    cls = hydra.utils.get_class(config["_target_"])
    assert issubclass(cls, Objective) and cls.name == name
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    assert objective_knobs(config) == defaults
    assert set(config.get("search_space") or {}) <= set(defaults)
    assert isinstance(build_objective(config), cls)


def test_every_group_is_tested():
    assert set(GROUPS) | {"decoding"} == {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}


@pytest.mark.parametrize("name", available("model"))
def test_model_option_builds_a_gpt(name):
    cfg = compose([f"model={name}"])
    config = GPTConfig(**{**OmegaConf.to_container(cfg.model), "vocab_size": 8192})
    with torch.device("meta"):  # the shapes without the memory (the gpt2 preset has 124M parameters)
        model = GPT(config)
    assert model.cfg.n_layer == cfg.model.n_layer and model.num_params() > 0


@pytest.mark.parametrize("name", available("decoding"))
def test_decoding_option_builds_a_decoding_config(name):
    settings = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "decoding" / f"{name}.yaml"))
    decoding = DecodingConfig(name=name, **settings)
    assert decoding.strategy in ("greedy", "sample", "beam", "contrastive")


@pytest.mark.parametrize("name", available("data"))
def test_data_option_instantiates_its_data_module(name, tmp_path):
    overrides = [f"data={name}"]
    if name == "text":
        (tmp_path / "a.txt").write_text("one document\n")
        overrides.append(f"data.files=[{tmp_path / 'a.txt'}]")
    if name == "hub":
        overrides.append(f"data.path={tmp_path}")
    cfg = compose(overrides)
    datamodule = hydra.utils.instantiate(cfg.data)  # nothing is read or downloaded before setup()
    assert type(datamodule).__name__ == cfg.data._target_.rsplit(".", 1)[1]


@pytest.mark.parametrize("group", ["trainer", "suite"])
def test_trainer_and_suite_options_build_a_trainer(group, tmp_path):
    from benchmarks.run import build_trainer

    for name in available(group):
        cfg = compose([*TINY, f"{group}={name}"])
        trainer = build_trainer(cfg, tmp_path, "32-true", "label")
        assert trainer.max_steps == cfg.trainer.max_steps
