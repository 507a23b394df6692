"""init_from=PATH: a new run from an earlier run's model weights (fresh optimiser, schedule and step), recorded
in results.json; never confused with resume; every bad path or mismatch is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.runner.config import compose, plan
from benchmarks.runner.job import build
from lit_modules.core.start_weights import StartWeights, read_start_weights


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished debug=tiny MLE run (3 steps) to start from."""
    from benchmarks.runner.job import run

    run_dir = tmp_path_factory.mktemp("start") / "mle"
    run(plan(compose(["debug=tiny"]), "mle"), run_dir)
    return run_dir


def checkpoint_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def test_a_run_starts_from_the_weights_and_records_them(trained_run, tmp_path, run_tiny):
    # the model at the start of training is the earlier run's final model, output bias included (random
    # weights would get the unigram bias instead)
    p = plan(compose(["debug=tiny", f"init_from={trained_run}", "objective=gold"]), "gold")
    datamodule, system = build(p)
    datamodule.setup("fit")
    system.setup_objective(datamodule.block_size, datamodule.unigram_counts())
    expected = checkpoint_weights(trained_run)
    got = system.model.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # the fine-tuning objective acts from step 0 (as in its paper); from random weights it waits for step 200
    assert p.objective.start_step == 0
    assert plan(compose(["debug=tiny", "objective=gold", "trainer.max_steps=300"]), "gold").objective.start_step == 200

    results = run_tiny([f"init_from={trained_run}"], tmp_path / "ft")
    record = results["init_from"]
    assert record["path"] == str((trained_run / "checkpoints" / "last.ckpt").resolve())
    assert record["source"] == str(trained_run) and record["step"] == 3
    assert record["sha256"] == read_start_weights(str(trained_run)).sha256
    assert json.loads((tmp_path / "ft" / "results.json").read_text())["init_from"] == record
    # a new run: its own step count and a fresh optimiser (its AdamW has taken 3 steps, not 6)
    assert results["timing"]["steps"] == 3
    ckpt = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    adam_steps = {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert adam_steps == {3.0}
    # and it trained: its weights moved away from the start
    assert not torch.equal(
        checkpoint_weights(tmp_path / "ft")["wte.weight"], checkpoint_weights(trained_run)["wte.weight"]
    )
    assert run_tiny([], tmp_path / "fresh")["init_from"] is None


def test_the_checkpoint_file_and_its_run_directory_are_the_same_start(trained_run):
    by_dir = read_start_weights(str(trained_run))
    by_file = read_start_weights(str(trained_run / "checkpoints" / "last.ckpt"))
    assert by_dir.path == by_file.path and by_dir.sha256 == by_file.sha256
    # the hash is of the content: another run's weights hash differently
    other = {k: v.clone() for k, v in by_dir.state_dict.items()}
    other["ln_f.weight"] += 1e-3
    assert StartWeights("x", by_dir.path, other, by_dir.model, 3, None).sha256 != by_dir.sha256


def test_bad_init_from_is_one_line(trained_run, tmp_path, cli_error):
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    failed = tmp_path / "failed_run"
    failed.mkdir()
    (failed / "failed.json").write_text(json.dumps({"error": "NonFiniteLossError: non-finite loss at step 7"}))
    cases = {
        f"init_from={tmp_path / 'missing'}": "does not exist",
        f"init_from={empty}": "holds no weights",
        f"init_from={not_a_checkpoint}": "cannot be read as a checkpoint",
        f"init_from={failed}": "the starting run failed (NonFiniteLossError: non-finite loss at step 7)",
    }
    for i, (override, message) in enumerate(cases.items()):
        assert message in cli_error([override], tmp_path / f"run{i}")
    line = cli_error([f"init_from={trained_run}", "model.d_model=64", "model.n_head=2"], tmp_path / "shape")
    assert "n_head=4 d_model=128" in line and "n_head=2 d_model=64" in line
    line = cli_error([f"init_from={trained_run}", "data.source.vocab_size=40"], tmp_path / "vocab")
    assert "vocabulary of 256 tokens" in line and "data 40" in line
    line = cli_error([f"init_from={trained_run}", "resume=true"], tmp_path / "resume")
    assert "resume=true" in line and "init_from" in line
    assert not any((tmp_path / f"run{i}" / "checkpoints").exists() for i in range(len(cases)))


def test_another_tokenizer_is_refused(trained_run, tmp_path):
    from tokenizers import Tokenizer, models

    from lit_modules.core.errors import ConfigError

    def word_level(vocab: dict[str, int]) -> Tokenizer:
        return Tokenizer(models.WordLevel(vocab, unk_token="a"))

    start = read_start_weights(str(trained_run))
    tokenizer = tmp_path / "tokenizer.json"
    word_level({"a": 0, "b": 1, "<|endoftext|>": 2}).save(str(tokenizer))
    start.tokenizer = tokenizer
    same = json.dumps(json.loads(word_level({"a": 0, "b": 1, "<|endoftext|>": 2}).to_str()), indent=2)
    start.check_tokenizer(same)  # the same, spelt otherwise
    start.check_tokenizer(None)  # synthetic data has none
    with pytest.raises(ConfigError, match="another tokenizer"):
        start.check_tokenizer(word_level({"b": 0, "a": 1, "<|endoftext|>": 2}).to_str())
