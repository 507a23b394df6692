"""Hugging Face GPT-2 checkpoints in (init_from=hf:DIR) and out (benchmarks/export.py), offline: a small random
GPT2LMHeadModel with its tokenizer is built with transformers and save_pretrained here; transformers is the
reference for the logits, the greedy tokens and the loading of the export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from benchmarks.runner.config import compose, plan
from benchmarks.runner.export import export_run
from lit_modules.core import hf_gpt2
from lit_modules.core.decoding import DecodingConfig, generate
from lit_modules.core.model import GPT, GPTConfig
from lit_modules.core.start_weights import read_start_weights

transformers = pytest.importorskip("transformers")

WORDS = "the cat sat on a mat while dogs ran past old red barns near quiet green hills".split()


def corpus_lines(n: int = 400) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "." for _ in range(n)]


def save_gpt2(directory: Path, activation: str = "gelu_new", tokenizer: bool = True, safe: bool = True) -> Path:
    """A random 2-layer GPT-2 (d 32, 64 positions) with non-trivial biases and LayerNorms, and a byte-level BPE
    of 300 tokens (GPT-2's kind) trained on the corpus, both save_pretrained into ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[hf_gpt2.EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    eos = tok.token_to_id(hf_gpt2.EOS)
    config = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        activation_function=activation, bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    if not safe:  # an older checkpoint's kind (the hub's first gpt2): pytorch_model.bin, names without transformer.
        (directory / "model.safetensors").unlink()
        state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items() if k != "lm_head.weight"}
        torch.save(state, directory / "pytorch_model.bin")
    if tokenizer:
        wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=hf_gpt2.EOS)
        wrapped.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return save_gpt2(tmp_path_factory.mktemp("gpt2"))


def objbench_model(source: str) -> GPT:
    start = read_start_weights(source)
    model = GPT(GPTConfig(**start.model))
    model.load_state_dict(start.state_dict)
    return model.eval()


def hf_model(directory: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
def test_imported_logits_equal_transformers(tmp_path, activation):
    directory = save_gpt2(tmp_path, activation) if activation != "gelu_new" else None
    directory = directory or save_gpt2(tmp_path)
    ours, theirs = objbench_model(f"hf:{directory}"), hf_model(directory)
    ids = torch.randint(0, ours.cfg.vocab_size, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(ids).logits
        assert (ours(ids) - expected).abs().max() < 1e-4  # fp32
        with torch.autocast("cpu", dtype=torch.bfloat16):  # within bf16's resolution under autocast
            assert (ours(ids).float() - expected).abs().max() < 0.1 * expected.abs().max()
    assert ours.cfg.activation == {"gelu_new": "gelu_tanh", "gelu": "gelu"}[activation]
    assert ours.cfg.head_bias is False and ours.output_bias is None


def test_greedy_decoding_gives_transformers_tokens(gpt2_dir):
    ours, theirs = objbench_model(f"hf:{gpt2_dir}"), hf_model(gpt2_dir)
    prompt = torch.randint(0, ours.cfg.vocab_size, (2, 8), generator=torch.Generator().manual_seed(2))
    mine = generate(ours, prompt, 24, DecodingConfig(name="greedy", strategy="greedy"))
    expected = theirs.generate(prompt, max_new_tokens=24, do_sample=False, min_new_tokens=24)
    assert torch.equal(mine, expected[:, prompt.shape[1] :])


def test_the_weights_file_kinds_and_the_record(tmp_path, gpt2_dir):
    by_bin = save_gpt2(tmp_path / "bin", safe=False)
    assert (by_bin / "pytorch_model.bin").is_file() and not (by_bin / "model.safetensors").exists()
    a, b = read_start_weights(f"hf:{gpt2_dir}"), read_start_weights(f"hf:{by_bin}")
    assert a.sha256 == b.sha256  # the same weights, whichever file holds them
    record = a.record()
    assert record["source"] == f"hf:{gpt2_dir}" and record["path"].endswith("model.safetensors")
    assert record["model"]["n_layer"] == 2 and record["step"] is None and len(record["sha256"]) == 64


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, gpt2_dir) -> Path:
    """GOLD (a fine-tuning objective, from its first step here) fine-tunes the checkpoint for 3 steps on text,
    tokenised with the checkpoint's tokenizer."""
    from benchmarks.runner.job import run

    root = tmp_path_factory.mktemp("ft")
    (root / "corpus.txt").write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    overrides = [
        "debug=tiny", "data=text", f"data.files=[{root / 'corpus.txt'}]", "data.block_size=32",
        f"init_from=hf:{gpt2_dir}", "objective=gold", "eval.prefix_len=8", "eval.cont_len=16", "eval.num_prompts=4",
        "eval.mauve=false",
    ]  # fmt: skip
    run(plan(compose(overrides), "gold"), root / "run")
    return root / "run"


def test_an_objective_fine_tunes_the_checkpoint_with_its_tokenizer(finetuned, gpt2_dir):
    results = json.loads((finetuned / "results.json").read_text())
    assert results["init_from"]["source"] == f"hf:{gpt2_dir}"
    assert results["init_from"]["sha256"] == read_start_weights(f"hf:{gpt2_dir}").sha256
    assert results["timing"]["steps"] == 3 and results["metrics"]["tf/nll"] < 10 and results["objective"] == "gold"
    assert not torch.equal(  # it trained: the weights moved from the checkpoint's
        read_start_weights(str(finetuned)).state_dict["wte.weight"],
        read_start_weights(f"hf:{gpt2_dir}").state_dict["wte.weight"],
    )
    # the data went through the checkpoint's tokenizer: the run's tokenizer encodes as transformers' does
    from tokenizers import Tokenizer

    theirs = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    ours = Tokenizer.from_file(str(finetuned / "tokenizer.json"))
    text = "the red cat sat near old green hills."
    assert ours.encode(text).ids == theirs(text)["input_ids"]
    assert json.loads((finetuned / "tokenizer_config.json").read_text())["eos_token"] == hf_gpt2.EOS
    sample = json.loads((finetuned / "samples.jsonl").read_text().splitlines()[0])
    assert set(sample["continuation"]) <= set(range(ours.get_vocab_size()))


def test_export_loads_in_transformers_and_round_trips(tmp_path, finetuned):
    out = tmp_path / "export"
    record = export_run(finetuned, out)
    assert record["output_bias"] == "none" and record["max_abs_logprob_difference"] < 1e-4
    theirs, tokenizer = hf_model(out), transformers.AutoTokenizer.from_pretrained(out)
    ours = objbench_model(str(finetuned))
    ids = torch.tensor([tokenizer("the cat sat on a mat.")["input_ids"]])
    with torch.no_grad():
        assert (theirs(ids).logits - ours(ids)).abs().max() < 1e-4
    assert tokenizer.eos_token == hf_gpt2.EOS and theirs.generation_config.do_sample is True
    # objbench -> HF -> objbench: the same weights
    back = read_start_weights(f"hf:{out}").state_dict
    start = read_start_weights(str(finetuned)).state_dict
    assert back.keys() == start.keys() and all(torch.equal(back[k], start[k].float()) for k in start)


# without LayerNorm biases too (β = 0: the fold's shift does the work)
@pytest.mark.parametrize("bias", ["true", pytest.param("false", marks=pytest.mark.slow)])
def test_export_folds_the_output_bias_of_a_synthetic_run(tmp_path, run_tiny, bias):
    run_tiny([f"model.bias={bias}"], tmp_path / "run")
    record = export_run(tmp_path / "run", tmp_path / "export")
    assert record["output_bias"].startswith("folded")
    ours, theirs = objbench_model(str(tmp_path / "run")), hf_model(tmp_path / "export")
    assert ours.output_bias is not None and ours.output_bias.abs().max() > 1  # the log-unigram start: not small
    ids = torch.randint(0, ours.cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (theirs(ids).logits - ours(ids)).abs().max() < 1e-3
    # the pseudo-words' tokenizer: text <-> ids, exactly
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    from lit_modules.core.synthetic import word

    text = " ".join(word(int(i)) for i in ids[0])
    assert tokenizer(text)["input_ids"] == ids[0].tolist()
    # and back: the folded head unfolds into the same output bias
    back = read_start_weights(f"hf:{tmp_path / 'export'}")
    assert back.model["head_bias"] is True
    assert torch.allclose(back.state_dict["lm_head.bias"], ours.output_bias, atol=1e-4)


def test_bad_pretrained_input_is_one_line(tmp_path, gpt2_dir, cli_error, text_corpus):
    text = ["data=text", f"data.files=[{text_corpus / 'corpus.txt'}]", "eval.mauve=false"]
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes((gpt2_dir / "model.safetensors").read_bytes())
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text((gpt2_dir / "config.json").read_text())
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    other_tokenizer = tmp_path / "other"
    save_gpt2(other_tokenizer)
    (other_tokenizer / "tokenizer.json").write_text(
        json.dumps({**json.loads((gpt2_dir / "tokenizer.json").read_text()), "model": {"type": "WordLevel",
                    "vocab": {"a": 0, hf_gpt2.EOS: 1}, "unk_token": "a"}})
    )  # fmt: skip
    cases = {
        "config.json": [f"init_from=hf:{weights_only}", *text],
        "holds no weights": [f"init_from=hf:{config_only}", *text],
        "'llama' model (LlamaForCausalLM)": [f"init_from=hf:{llama}", *text],
        "missing does not exist": [f"init_from=hf:{tmp_path / 'missing'}", *text],
        "data.tokenizer=/no/such/tokenizer.json does not exist": [*text, "data.tokenizer=/no/such/tokenizer.json"],
        "model.activation='relu' is not allowed; use one of: gelu, gelu_tanh": ["model.activation=relu"],
        "the hub could not give it": ["init_from=hf:someone/no-such-model", *text],  # offline here
        "pseudo-words": [f"init_from=hf:{gpt2_dir}"],
        "data.block_size=96 is larger than init_from=hf:": [f"init_from=hf:{gpt2_dir}", *text],
        "vocabulary of 300 tokens, this run's data 2": [
            f"init_from=hf:{gpt2_dir}",
            *text,
            f"data.tokenizer={other_tokenizer}",
            "data.block_size=32",
        ],
    }
    for i, (expected, argv) in enumerate(cases.items()):
        line = cli_error(argv, tmp_path / f"run{i}")
        assert expected in line, (expected, line)
        if expected.startswith("data.block_size"):
            assert "64 positions" in line


@pytest.fixture
def export_cli(capsys):
    """export_cli(*argv) -> (exit code, stderr lines) of benchmarks/export.py run in this process."""
    from benchmarks.export import main

    def export(*argv: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err.strip().splitlines()

    return export


def test_bad_export_is_one_line(tmp_path, export_cli, finetuned):
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    cases = {
        "no finished weights": [str(tmp_path / "unfinished"), str(tmp_path / "out1")],
        "not empty": [str(finetuned), str(tmp_path / "busy")],
        "not a run directory": [str(tmp_path / "nothing"), str(tmp_path / "out2")],
    }
    for expected, argv in cases.items():
        code, lines = export_cli(*argv)
        assert code == 2 and len(lines) == 1 and expected in lines[0], (expected, lines)
    assert (tmp_path / "busy" / "x").read_text() == "keep" and not (tmp_path / "out1").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    assert export_cli(str(finetuned), str(tmp_path / "busy"), "--force")[0] == 0
    assert (tmp_path / "busy" / "config.json").is_file() and not (tmp_path / "busy" / "x").exists()
    # an output bias cannot fold where the final LayerNorm has a zero weight: refused
    from lit_modules.core.errors import ConfigError

    state = read_start_weights(str(finetuned)).state_dict
    state = {**state, "lm_head.bias": torch.zeros(state["wte.weight"].shape[0])}
    state["ln_f.weight"] = state["ln_f.weight"].clone()
    state["ln_f.weight"][0] = 0.0
    with pytest.raises(ConfigError, match="cannot be folded"):
        hf_gpt2.fold_output_bias(state)


def lm_eval_command() -> str | None:
    """lm-evaluation-harness's CLI: $LM_EVAL, else ``lm_eval`` on the PATH (it need not share objbench's venv:
    the export is only files)."""
    import os
    import shutil

    return os.environ.get("LM_EVAL") or shutil.which("lm_eval")


@pytest.mark.slow
@pytest.mark.skipif(lm_eval_command() is None, reason="lm-evaluation-harness is not installed (LM_EVAL or lm_eval)")
def test_lm_evaluation_harness_scores_the_export_offline(tmp_path, finetuned):
    """lm-eval's perplexity path (a loglikelihood_rolling task over a local JSON file, its ``hf`` model on the
    export, no network) gives each document the log-likelihood objbench gives it after the end-of-text token."""
    import os
    import subprocess

    export_run(finetuned, tmp_path / "export")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    docs = [d for d in corpus_lines(40) if len(tokenizer(d)["input_ids"]) < 63][:12]  # one window each
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "objbench_ppl.yaml").write_text(
        "task: objbench_ppl\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'docs.jsonl'}\ntest_split: test\n"
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\nmetadata:\n  version: 1.0\n"
    )
    command = [
        lm_eval_command(), "--model", "hf", "--model_args", f"pretrained={tmp_path / 'export'},dtype=float32",
        "--tasks", "objbench_ppl", "--include_path", str(tmp_path / "tasks"), "--device", "cpu",
        "--batch_size", "4", "--output_path", str(tmp_path / "out"), "--log_samples",
    ]  # fmt: skip
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=offline, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    samples = next((tmp_path / "out").rglob("samples_objbench_ppl_*.jsonl")).read_text().splitlines()
    theirs = {json.loads(s)["doc"]["text"]: float(json.loads(s)["filtered_resps"][0]) for s in samples}
    ours = objbench_model(str(finetuned))
    eos = tokenizer.convert_tokens_to_ids(hf_gpt2.EOS)
    for doc in docs:
        ids = torch.tensor([[eos, *tokenizer(doc)["input_ids"]]])
        with torch.no_grad():
            logp = torch.log_softmax(ours(ids[:, :-1]).float(), -1).gather(-1, ids[:, 1:, None]).sum()
        assert abs(float(logp) - theirs[doc]) < 1e-3 * max(1.0, abs(theirs[doc]))


def test_a_hub_id_downloads_only_what_the_import_reads(tmp_path, gpt2_dir, monkeypatch):
    """hf:<owner/name> goes through huggingface_hub.snapshot_download (replaced here: no network): the config, the
    tokenizer files and the safetensors weights, and pytorch_model.bin only where a repository has no safetensors."""
    import huggingface_hub

    calls = []
    old_style = save_gpt2(tmp_path / "old", safe=False)

    def snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(gpt2_dir if repo_id == "someone/new" else old_style)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert read_start_weights("hf:someone/new").sha256 == read_start_weights(f"hf:{gpt2_dir}").sha256
    assert len(calls) == 1 and "model.safetensors" in calls[0][1] and "pytorch_model.bin" not in calls[0][1]
    assert {"config.json", "tokenizer.json", "vocab.json", "merges.txt"} <= set(calls[0][1])
    calls.clear()
    assert read_start_weights("hf:someone/old").path.name == "pytorch_model.bin"
    assert [("pytorch_model.bin" in patterns) for _, patterns in calls] == [False, True]


def test_an_output_bias_in_the_checkpoint_is_kept_and_a_zero_one_dropped(tmp_path, gpt2_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(gpt2_dir / "model.safetensors")
    vocab = state["transformer.wte.weight"].shape[0]
    for name, bias in (("zero", torch.zeros(vocab)), ("some", torch.linspace(-1, 1, vocab))):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text((gpt2_dir / "config.json").read_text())
        save_file({**state, "lm_head.bias": bias}, str(directory / "model.safetensors"))
        start = read_start_weights(f"hf:{directory}")
        assert start.model["head_bias"] is (name == "some")
        if name == "some":
            assert torch.equal(start.state_dict["lm_head.bias"], bias)
