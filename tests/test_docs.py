"""Every command the README and docs/ show still works: each ``python benchmarks/<entry>.py`` line of their
bash blocks is checked as its entry point would check it (a run's or a study's config composed and planned, an
argparse command line parsed), and the cheap ones (``debug=tiny``, ``--cfg job``) are run. The documents'
links to files of the repository point at files that exist, and the README stays a ten-minute read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from benchmarks.runner.cli import expand_overrides_file, overrides
from benchmarks.runner.config import compose, plan

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the documents' example files, made here
NEEDS = {"book.txt", "book1.txt", "book2.txt", "data/shakespeare.txt", "data/markdown_docs.txt"}


def commands() -> list[tuple[str, list[str]]]:
    """(document, argv) of every entry-point command in the documents' bash blocks."""
    found = []
    for path in DOCUMENTS:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                match = re.search(r"(?:python |torchrun .*? |srun .*? )?benchmarks/(\w+)\.py(.*)$", line)
                if match and "python" in line:
                    found.append((f"{path.name}: {line}", [match.group(1), *shlex.split(match.group(2))]))
    return found


COMMANDS = commands()


def sweep_free(argv: list[str]) -> list[str]:
    """A multirun's first job: each swept value list cut to its first value, glob(*) to mle."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if value.startswith("glob("):
            value = "mle"
        elif "," in value and not value.startswith(("[", "{", "'", '"')):
            value = value.split(",")[0]
        out.append(f"{key}={value}" if value else arg)
    return out


def test_the_documents_show_every_entry_point():
    assert {argv[0] for _, argv in COMMANDS} >= {"run", "tune", "tuned", "report", "perf", "score", "corpus"}
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_is_accepted(where, argv, tmp_path, monkeypatch):
    entry, args = argv[0], argv[1:]
    monkeypatch.chdir(tmp_path)
    for name in NEEDS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a first document.\nand a second one.\n")
    if entry in ("run", "tune"):
        args = [a for a in args if a != "--overrides-file" and not a.endswith("best_overrides.yaml")]
        if any(a.startswith("--cfg") for a in args):
            return  # run below, as a process
        settings = [o for o in sweep_free(overrides(expand_overrides_file(args))) if not o.startswith("hydra")]
        cfg = compose(settings, "tune" if entry == "tune" else "run")
        objective = next((o.split("=", 1)[1] for o in settings if o.startswith("objective=")), "mle")
        if entry == "tune":
            from benchmarks.runner.tuning import base_overrides, prepare

            prepare(cfg, objective, base_overrides(settings))
        else:
            start = cfg.get("init_from")  # set on the command line or by a suite (suite=finetune)
            if start is not None and str(start).startswith("hf:"):  # a GPT-2 directory of that name, here
                write_gpt2_directory(tmp_path / str(start).removeprefix("hf:"))
            elif start is not None:  # an earlier run's weights, of the shape this command's model has
                without = [o for o in settings if not o.startswith(("init_from=", "objective", "suite"))]
                write_start_checkpoint(Path(start), plan(compose(without), "mle").model)
            plan(cfg, objective)
    elif entry in ("report", "score", "scaling", "corpus", "tuned", "perf", "export"):
        with pytest.raises(SystemExit) as exit_info:  # the entry's own argument parser accepts the line
            __import__(f"benchmarks.{entry}", fromlist=["main"]).main([*args, "--help"])
        assert exit_info.value.code == 0, where


def write_start_checkpoint(run_dir: Path, model) -> None:
    """A run directory with checkpoints/last.ckpt holding a model of this config (for commands with init_from)."""
    from dataclasses import asdict

    import torch

    from lit_modules.core.model import GPT

    with torch.device("meta"):
        shapes = GPT(model).state_dict()
    state = {f"model.{k}": torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": state, "hyper_parameters": {"model": asdict(model)}, "global_step": 1}
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")


def test_the_documented_cheap_commands_run(tmp_path, capsys, cli):
    """A debug=tiny run in this process, as run.py's main (a subprocess spends seconds importing); the --cfg
    commands, which Hydra answers from the script's own config path, as processes, each distinct one once."""
    from benchmarks.run import main

    cheap = [(w, argv) for w, argv in COMMANDS if argv[0] == "run" and ("debug=tiny" in argv or "--cfg" in argv)]
    assert len(cheap) >= 2
    seen = set()
    for where, argv in cheap:
        if tuple(argv) in seen:
            continue
        seen.add(tuple(argv))
        run_dir = f"hydra.run.dir={tmp_path / str(len(seen))}"
        if "--cfg" in argv:
            proc = cli("run", *argv[1:], run_dir)
            assert proc.returncode == 0 and "objective:" in proc.stdout, f"{where}: {proc.stderr[-1000:]}"
        else:
            assert main([*argv[1:], run_dir]) == 0, f"{where}: {capsys.readouterr().err[-1000:]}"


def test_links_to_the_repository_point_at_files_that_exist():
    missing = []
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text(encoding="utf-8")):
            if not target.startswith("http") and not (path.parent / target).exists():
                missing.append(f"{path.name}: {target}")
    assert not missing, missing


def test_the_readme_is_a_ten_minute_read():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 350


def write_gpt2_directory(directory: Path) -> None:
    """A Hugging Face GPT-2 directory as save_pretrained lays it out (config.json, model.safetensors, tokenizer.json),
    tiny but with GPT-2's 1024 positions, for commands with init_from=hf:<id> (which a local directory answers)."""
    import json

    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from lit_modules.core import hf_gpt2
    from lit_modules.core.model import GPT, GPTConfig

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(special_tokens=[hf_gpt2.EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["a first document.", "and a second one."], trainer=trainer)
    settings = dict(vocab_size=tokenizer.get_vocab_size(), context=1024, n_layer=1, n_head=1, d_model=8)
    model = GPT(GPTConfig(**settings, head_bias=False, activation="gelu_tanh"))
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    state = {k: v.contiguous() for k, v in hf_gpt2.to_hf_state_dict(model.state_dict(), 1).items()}
    state.pop("lm_head.weight")  # tied: safetensors keeps one copy, as save_pretrained does
    save_file(state, str(directory / "model.safetensors"))
    config = {"model_type": "gpt2", **hf_gpt2.to_hf_config({**settings, "activation": "gelu_tanh"}, None)}
    (directory / "config.json").write_text(json.dumps(config))
