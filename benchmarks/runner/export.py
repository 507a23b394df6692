"""A finished run's model as a Hugging Face GPT-2 directory (``benchmarks/export.py``).

The directory holds what ``transformers.AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
read: config.json, model.safetensors, generation_config.json (ancestral sampling at T = 1, objbench's ``sample``),
the tokenizer (the run's own; on the synthetic source a word-level tokenizer of its pseudo-words, exact both ways),
and objbench_export.json (where it came from, how the output bias was handled, the logit check). The weights map
one to one (``lit_modules/core/hf_gpt2.py``); an output bias (``model.head_bias=true``, objbench's default) is
folded exactly into an untied output embedding and the final LayerNorm's bias (the logits are the run's; the last
hidden state, which nothing but the head reads, is shifted by a constant vector). Before anything is in place the
export is loaded back with transformers and its log-probabilities compared with objbench's; it is written into a
temporary directory and renamed, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lit_modules.core import hf_gpt2
from lit_modules.core.errors import ConfigError
from lit_modules.core.files import atomic_write_json
from lit_modules.core.model import GPT, GPTConfig
from lit_modules.core.start_weights import read_start_weights
from lit_modules.core.synthetic import word

# the largest |Δ log p| between objbench's model and the loaded export that the check lets through (fp32)
LOGPROB_TOLERANCE = 1e-3


def export_run(run_dir: Path, out_dir: Path, force: bool = False) -> dict[str, Any]:
    """Write ``run_dir``'s final model into ``out_dir`` (replaced only with ``force``); return the export's record."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("export writes with transformers, which is not installed: pip install -e '.[hf]'") from None
    check_out_dir(out_dir, force)
    results = finished_results(run_dir)
    start = read_start_weights(str(run_dir))
    model = {**start.model, "dropout": start.model.get("dropout", 0.0)}
    state = {k: v.float() for k, v in start.state_dict.items()}
    tokenizer, eos = run_tokenizer(run_dir, results, model["vocab_size"])
    eos_id = tokenizer.token_to_id(eos) if eos is not None else None
    folded, shift = state.get("lm_head.bias") is not None, None
    hf_state = hf_gpt2.to_hf_state_dict(state, model["n_layer"])
    if folded:
        hf_state["lm_head.weight"], hf_state["transformer.ln_f.bias"], shift = hf_gpt2.fold_output_bias(state)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary directory
    try:
        write_model(tmp, model, hf_state, eos_id, shift)
        write_tokenizer(tmp, tokenizer, eos)
        difference = check_logprobs(tmp, model, state)
        record = {
            "run_dir": str(run_dir.resolve()),
            "objective": results.get("objective"),
            "weights_sha256": start.sha256,
            "step": start.step,
            "output_bias": "folded into an untied lm_head and ln_f.bias (exact)" if folded else "none",
            "max_abs_logprob_difference": difference,
            "started_from": results.get("init_from"),
        }
        atomic_write_json(tmp / "objbench_export.json", record)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory; give a new directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConfigError(f"{out_dir} exists and is not empty; give a new directory, or --force to replace it")


def finished_results(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory")
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(
            f"{run_dir} has no finished weights (no results.json: the run is unfinished or failed); export a "
            "finished run"
        ) from None
    except ValueError:
        raise ConfigError(f"{run_dir / 'results.json'} is not JSON; export a finished run") from None
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise ConfigError(f"{run_dir} has results but no checkpoints/last.ckpt; export a run that kept its weights")
    return results


def run_tokenizer(run_dir: Path, results: dict, vocab_size: int):
    """The run's tokenizer and end-of-text token: its tokenizer.json on real text, on the synthetic source a
    word-level tokenizer of the pseudo-words (whitespace-separated, id i <-> word(i); no end of text)."""
    if (run_dir / "tokenizer.json").is_file():
        tokenizer, eos = hf_gpt2.load_tokenizer(run_dir / "tokenizer.json", "the run's tokenizer")
        if tokenizer.get_vocab_size() != vocab_size:
            raise ConfigError(
                f"{run_dir / 'tokenizer.json'} has {tokenizer.get_vocab_size()} tokens, the model {vocab_size}"
            )
        return tokenizer, eos
    data = ((results.get("config") or {}).get("data") or {}).get("_target_", "")
    if not data.endswith("SyntheticDataModule"):
        raise ConfigError(f"{run_dir} has no tokenizer.json (a real-text run writes one); export a finished run")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word(i): i for i in range(vocab_size)}
    if len(vocab) != vocab_size:
        raise ConfigError(f"the synthetic source's pseudo-words are not distinct at {vocab_size} tokens")
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=word(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer, None


def write_model(directory: Path, model: dict, hf_state: dict[str, torch.Tensor], eos_id: int | None, shift):
    """config.json, model.safetensors and generation_config.json; ``shift``: the fold's t (None: no output bias)."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    folded = {"tie_word_embeddings": False, "objbench_ln_f_shift": shift} if shift is not None else {}
    config = GPT2Config(**{**hf_gpt2.to_hf_config(model, eos_id), **folded})
    config.architectures = ["GPT2LMHeadModel"]
    hf = GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:  # a mapping error, never the user's: say what did not fit
        raise RuntimeError(f"export: GPT2LMHeadModel does not take the weights: {missing} missing, {unexpected} extra")
    hf.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_length=model["context"], bos_token_id=eos_id,
        eos_token_id=eos_id, pad_token_id=eos_id,
    )  # fmt: skip
    hf.save_pretrained(directory)


def write_tokenizer(directory: Path, tokenizer, eos: str | None) -> None:
    from transformers import PreTrainedTokenizerFast

    special = {"eos_token": eos, "bos_token": eos, "pad_token": eos} if eos is not None else {}
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special).save_pretrained(directory)


def check_logprobs(directory: Path, model: dict, state: dict[str, torch.Tensor]) -> float:
    """The largest |log p_export − log p_objbench| on random sequences in fp32; a RuntimeError above tolerance."""
    from transformers import GPT2LMHeadModel

    ours = GPT(GPTConfig(**{k: v for k, v in model.items() if k in GPTConfig.__dataclass_fields__}))
    ours.load_state_dict(state)
    theirs = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32)
    shape = (2, min(model["context"], 64))
    ids = torch.randint(0, model["vocab_size"], shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = torch.log_softmax(ours.eval()(ids).float(), -1)
        b = torch.log_softmax(theirs.eval()(ids).logits.float(), -1)
    difference = float((a - b).abs().max())
    if not difference <= LOGPROB_TOLERANCE:
        raise RuntimeError(f"export: the exported model's log-probabilities differ by {difference:.2e} from the run's")
    return difference


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """``tmp`` becomes ``out_dir``; an existing ``out_dir`` (``--force``) is moved aside first, removed after."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
