"""A run's config composed once and checked once (benchmarks/runner/config.py): every value a user can get wrong
is one line and exit 2 before any work, from the typed group that owns it or from the check across groups."""

import pytest
import torch

import benchmarks.runner.config as config
from benchmarks.runner.config import available, compose, plan

BAD = [
    (
        ["objective=nope"],
        "objective=nope is not available; choose one of: contrastive_token, convex, dft, ditto, emo",
    ),
    (["model=huge"], f"model=huge is not available; choose one of: {', '.join(available('model'))}"),
    (["data=imagenet"], "data=imagenet is not available"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not allowed"),
    (["data.batch_size=-1"], "data.batch_size=-1 is not allowed"),
    (["data.block_size=1"], "data.block_size=1 is not allowed; use an integer >= 2"),
    (["optim.lr=0"], "optim.lr=0 is not allowed"),
    (["data.block_size=512"], "data.block_size=512 is larger than model.context=128"),
    (["eval.decodings=[greedy,beamish]"], "'beamish' is not available"),
    (["eval.prefix_len=50", "eval.cont_len=100"], "eval.prefix_len + eval.cont_len = 150 is longer than the context"),
    (["objective=unlikelihood_seq", "objective.cont_len=200"], "objective.prefix_len + cont_len=232 is not allowed"),
    (["objective=label_smoothing", "objective.eps=1.5"], "objective.eps=1.5 is not allowed; use 0 <= eps < 1"),
    (["data=text", "data.files=[/no/such/file.txt]"], "'/no/such/file.txt' does not exist"),
    (["compile=maybe"], "compile='maybe' is not allowed; use true or false"),
    (["data=text"], "data=text needs data.files"),
    (["eval.mauve=maybe"], "eval.mauve='maybe' is not allowed; use auto, true or false"),
    (["eval.mauve=true"], "eval.mauve=true on the synthetic source: MAUVE's English sentence encoder cannot read"),
    (["objective=mle", "+objective.eps=0.1"], "objective.eps is not a knob of mle; its knobs: none"),
    (["aux={zloss:1e-4}"], "aux.zloss is not an auxiliary term; choose from: entropy_penalty, label_smoothing, z_loss"),
    (["aux={z_loss:-1}"], "aux.z_loss=-1 is not allowed; use a finite weight >= 0"),
    (["aux={z_loss:inf}"], "aux.z_loss=inf is not allowed; use a finite weight >= 0"),  # was: trained, then NaN
    (["objective=z_loss", "aux={z_loss:1e-4}"], "aux.z_loss is the objective itself (objective=z_loss)"),
    (["model.context=0"], "model.context=0 is not allowed; use a positive integer"),
    (
        ["data.source.vocab_size=1", "data.source.emit=1", "data.source.succ=1"],
        "data.source.vocab_size=1 is not allowed",
    ),
    (["objective=gold"], "objective.start_step=200 is not allowed; it must be below trainer.max_steps=3"),
    (["seed=-1"], "seed=-1 is not allowed; use an integer in [0, 2^32)"),
    (["seed=abc"], "seed='abc' is not allowed; use an integer in [0, 2^32)"),
    (["eval.batch_size=0"], "eval.batch_size=0 is not allowed; use a positive integer"),
    (["eval.max_batches=0"], "eval.max_batches=0 is not allowed; use a positive integer"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is not allowed; use a positive integer"),
    (["trainer.devices=0"], "trainer.devices=0 is not allowed; use a positive integer or auto"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 is not allowed; use a number of batches >= 1"),
    (["trainer.precision=fp8"], "trainer.precision='fp8' is not allowed; choose one of auto"),
    (["+trainer.speed=11"], "trainer.speed is not an argument of Lightning's Trainer"),
    (["trainer.foo=1"], "trainer.foo is not a setting of this config; list them with --cfg job, or add one with +"),
    (["+model.depth=3"], "model.depth is not a setting of model; its settings: vocab_size, context, n_layer"),
    (["optim.betas=[2,0]"], "optim.betas=[2, 0] is not allowed; use two numbers in [0, 1)"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1 is not allowed; use a weight decay >= 0"),
    (["optim.warmup_steps=-10"], "optim.warmup_steps=-10 is not allowed; use an integer >= 0"),
    (["eval.decodings=greedy"], "eval.decodings='greedy' is not allowed; use a list of decoding names"),
    (["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps=0 is not allowed; use a positive integer"),
    (["optim.lr=1e8"], "non-finite loss"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[b[0][-1] for b in BAD])
def test_bad_input_is_one_line(overrides, message, tmp_path, cli_error):
    assert message in cli_error(overrides, tmp_path / "run")


@pytest.mark.parametrize("content", [b"", "caf\xe9".encode("latin-1")], ids=["empty", "not-utf8"])
def test_bad_text_file_is_one_line(content, tmp_path, cli_error):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    assert cli_error(["data=text", f"data.files=[{bad}]"], tmp_path / "run").startswith("error: data.files:")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.source.emit=0", "data.source.emit=0 is not allowed; use an integer >= 1"),
        ("data.source.emit=300", "data.source.emit=300 is not allowed; it is larger than data.source.vocab_size=256"),
        ("data.source.smoothing=2", "data.source.smoothing=2 is not allowed; use 0 < smoothing < 1"),
        ("data.source.zipf_s=-1", "data.source.zipf_s=-1 is not allowed; use zipf_s >= 0"),
        ("data.source.concentration=0", "data.source.concentration=0 is not allowed; use concentration > 0"),
        ("data.source.n_states=2.5", "data.source.n_states=2.5 is not allowed; use an integer >= 1"),
        ("+data.source.colour=1", "data.source.colour is not a setting of data.source; its settings: vocab_size"),
    ],
)
def test_bad_synthetic_source_is_one_line(override, message, tmp_path, cli_error):
    assert message in cli_error([override], tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu_is_one_line(tmp_path, cli_error):
    message = "trainer.accelerator=gpu is not allowed here: this machine has no CUDA GPU"
    assert message in cli_error(["trainer.accelerator=gpu"], tmp_path / "run")


def test_read_only_cache_directory_is_one_line(read_only_dir, tmp_path, cli_error):
    message = cli_error([f"data.cache_dir={read_only_dir}/cache"], tmp_path / "run")
    assert message.startswith(f"error: cannot write or read {read_only_dir}/cache")


def test_a_run_composes_checks_and_builds_its_objective_once(tmp_path, monkeypatch, capsys):
    """From the command line to results.json: one composition, one check, one objective, one set of terms."""
    from benchmarks.run import main

    calls = {"compose": 0, "plan": 0, "build_objective": 0, "auxiliary_terms": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    import benchmarks.runner.app as app

    monkeypatch.setattr(app, "compose", counted("compose", config.compose))
    monkeypatch.setattr(config, "build_objective", counted("build_objective", config.build_objective))
    monkeypatch.setattr(config, "auxiliary_terms", counted("auxiliary_terms", config.auxiliary_terms))
    import benchmarks.run as entry

    monkeypatch.setattr(entry, "plan", counted("plan", config.plan))
    argv = ["debug=tiny", "objective=label_smoothing", "aux={z_loss:1e-4}", f"hydra.run.dir={tmp_path}"]
    assert main(argv) == 0
    assert calls == {"compose": 1, "plan": 1, "build_objective": 1, "auxiliary_terms": 1}
    assert (tmp_path / "results.json").is_file()


def test_a_plan_holds_every_group_typed():
    p = plan(compose(["debug=tiny", "objective=nce", "+trainer.accumulate_grad_batches=2"]), "nce")
    assert (p.objective_name, p.label, p.model.vocab_size, p.data.block_size) == ("nce", "nce", 256, 96)
    assert p.trainer.extra["accumulate_grad_batches"] == 2 and p.trainer.max_steps == 3
    assert p.optim.betas == (0.9, 0.95) and p.eval.decodings == ["greedy", "sample", "top_p"]
    assert list(p.decodings) == ["greedy", "sample", "top_p"] and p.decodings["top_p"].top_p == 0.9
    assert type(p.objective).__name__ == "NCE" and p.synthetic and p.suite is None


def test_every_typed_group_is_the_yaml_it_checks():
    """A group's dataclass defaults equal its default yaml: a group built from nothing is the default config."""
    from dataclasses import asdict, fields

    from lit_modules.system import OptimConfig
    from lit_modules.trainer import TrainerConfig

    cfg = compose([])
    assert asdict(OptimConfig()) == {**config.container(cfg.optim), "betas": (0.9, 0.95)}
    trainer = config.container(cfg.trainer)
    assert {f.name: getattr(TrainerConfig(), f.name) for f in fields(TrainerConfig) if f.name != "extra"} == {
        f.name: trainer[f.name] for f in fields(TrainerConfig) if f.name != "extra"
    }


@pytest.mark.parametrize("setting", ["auto", "true"])
def test_too_few_prompts_for_mauve_is_refused_before_training(setting, text_corpus, tmp_path, cli_error):
    """Real text with MAUVE on (auto: the extra is installed in the tests) and 8 prompts: one line before any work
    (was: training and generation, then exit 2 without results)."""
    line = cli_error(
        ["data=text", f"data.files=[{text_corpus / 'corpus.txt'}]", "eval.num_prompts=8", f"eval.mauve={setting}"],
        tmp_path / "run",
    )
    assert "eval.num_prompts=8 gives MAUVE fewer than its 10 continuations" in line
    assert not (tmp_path / "run" / "tb").exists()
