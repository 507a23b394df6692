"""Every option of every config group composes and builds what it names, without training (the runs are in
tests/benchmarks/runner/test_job.py); every objective class agrees with its yaml."""

import inspect

import pytest
import torch

from benchmarks.runner.cli import GROUPS
from benchmarks.runner.config import CONFIG_DIR, available, compose, container, load_option, plan
from lit_modules.core.configs import typed
from lit_modules.core.decoding import DecodingConfig
from lit_modules.core.model import GPT, GPTConfig
from lit_modules.trainer import TrainerConfig, build_trainer
from objectives.base import Objective, objective_knobs
from objectives.registry import build_objective, objective_class


@pytest.mark.parametrize("name", available("objective"))
def test_objective_class_matches_its_yaml(name):
    """The class's ``name`` is the yaml's file name, its constructor's defaults are the yaml's knobs (a
    class built with no arguments is the objective the yaml builds), and every tuned knob is a knob."""
    config = load_option("objective", name)
    cls = objective_class(config["_target_"])
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
    config = typed(GPTConfig, {**container(cfg.model), "vocab_size": 8192}, "model")
    with torch.device("meta"):  # the shapes without the memory (the gpt2 preset has 124M parameters)
        model = GPT(config)
    assert model.cfg == config and model.num_params() > 0


@pytest.mark.parametrize("name", available("decoding"))
def test_decoding_option_builds_the_decoding_it_names(name):
    settings = load_option("decoding", name)
    decoding = DecodingConfig(name=name, **settings)
    assert {k: getattr(decoding, k) for k in settings} == settings  # every setting taken as written


@pytest.mark.parametrize("name", available("data"))
def test_data_option_instantiates_its_data_module(name, tmp_path):
    overrides = [f"data={name}"]
    if name == "text":
        (tmp_path / "a.txt").write_text("one document\n")
        overrides.append(f"data.files=[{tmp_path / 'a.txt'}]")
    if name == "hub":
        overrides.append(f"data.path={tmp_path}")
    p = plan(compose(overrides), "mle")
    datamodule = p.data_module(p.data)  # nothing is read or downloaded before setup()
    assert type(datamodule).__name__ == compose(overrides).data._target_.rsplit(".", 1)[1]
    assert datamodule.vocab_size == p.model.vocab_size


@pytest.mark.parametrize("group", ["trainer", "suite", "debug"])
def test_trainer_suite_and_debug_options_build_the_trainer_they_ask_for(group, tmp_path):
    for name in available(group):
        cfg = compose(["debug=tiny", f"{group}={name}"])
        settings = container(cfg.trainer)
        trainer = build_trainer(settings, TrainerConfig.from_settings(settings), tmp_path, "label", 1)
        assert trainer.max_steps == settings["max_steps"] == 3  # debug=tiny's, whatever the option says
        assert trainer.val_check_interval == min(settings["val_check_interval"], 3)
        assert trainer.precision == TrainerConfig.from_settings(settings).resolved_precision
        assert type(trainer.logger).__name__ == "TensorBoardLogger" and trainer.logger.version == "label"


def test_the_debug_preset_keeps_a_data_choice_of_the_command_line():
    assert compose(["debug=tiny", "data=text"]).data.path == "text"
    assert compose(["debug=tiny"]).data.source.vocab_size == 256
