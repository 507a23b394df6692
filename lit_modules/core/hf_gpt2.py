"""Hugging Face GPT-2 checkpoints to and from objbench's backbone, and their tokenizers.

objbench's ``GPT`` is GPT-2's architecture (Radford et al. 2019): the same blocks, pre-LN, learned positions, tied
embeddings. A ``GPT2LMHeadModel`` directory (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, as
``save_pretrained`` writes it or the hub serves gpt2, gpt2-medium, distilgpt2, ...) maps onto it weight for weight:

    HF name (``transformer.`` prefix optional)   objbench name                 note
    wte.weight / wpe.weight                      wte.weight / wpe.weight
    h.{i}.ln_1 / ln_2 / ln_f                     blocks.{i}.ln_1 / ln_2 / ln_f
    h.{i}.attn.c_attn (D, 3D)                    blocks.{i}.attn.qkv (3D, D)   Conv1D stores (in, out): transposed
    h.{i}.attn.c_proj, h.{i}.mlp.c_fc, c_proj    blocks.{i}.attn.proj, mlp.fc, mlp.proj   transposed
    lm_head.weight                               (tied to wte)                 must equal wte.weight

GPT-2 has no output bias and uses the tanh GELU (``gelu_new``: objbench's ``activation=gelu_tanh``). objbench's
own models carry an output bias b (``head_bias``); it folds exactly into an untied output embedding, because the
final LayerNorm's output h = γ⊙n + β has Σᵢ nᵢ = 0: a row e_v + c_v/γ scores h·e_v + c_v·Σᵢ βᵢ/γᵢ, the same for
every h. To keep c_v small (Σ β/γ is near 0 when β is), the fold first shifts β by u = tγ, with t such that
Σ(β + u)/γ = D, and sets c_v = (b_v − e_v·u)/D: then h'·(e_v + c_v/γ) = h·e_v + b_v exactly, where h' = h + u is the
exported LayerNorm's output (``fold_output_bias``; t is kept in config.json as ``objbench_ln_f_shift`` and
``unfold_output_bias`` reads the model back).

Reading needs ``safetensors`` (for .safetensors) and, for a hub id, ``huggingface_hub``; not ``transformers``. The
reverse mapping (``to_hf_state_dict``) serves the export (benchmarks/export.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lit_modules.core.errors import ConfigError, DataError

EOS = "<|endoftext|>"  # GPT-2's end of text, and objbench's document separator
# HF activation_function -> objbench model.activation (gelu_new, gelu_fast and gelu_pytorch_tanh are one formula)
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
HUB_FILES = ("config.json", "generation_config.json", *TOKENIZER_FILES)  # and the weights, safetensors first
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
# per block: HF module -> objbench module, and whether its weight is a Conv1D (stored transposed)
BLOCK_MODULES = {
    "ln_1": ("ln_1", False),
    "attn.c_attn": ("attn.qkv", True),
    "attn.c_proj": ("attn.proj", True),
    "ln_2": ("ln_2", False),
    "mlp.c_fc": ("mlp.fc", True),
    "mlp.c_proj": ("mlp.proj", True),
}


def module_map(n_layer: int) -> dict[str, tuple[str, bool]]:
    """Every module with a weight and a bias: HF name (without ``transformer.``) -> (objbench name, Conv1D?)."""
    modules = {"ln_f": ("ln_f", False)}
    for i in range(n_layer):
        for hf_module, (ours, conv) in BLOCK_MODULES.items():
            modules[f"h.{i}.{hf_module}"] = (f"blocks.{i}.{ours}", conv)
    return modules


def resolve_directory(source: str, spec: str) -> Path:
    """A local directory, or a hub id downloaded through huggingface_hub: only the files the import reads, and of
    the weights the safetensors unless the repository has none (then pytorch_model.bin)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"init_from={source}: {spec} is not a directory; give a GPT-2 checkpoint directory or hub id")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a path, not a hub id (name or owner/name)
        raise ConfigError(f"init_from={source}: {spec} does not exist; give a GPT-2 checkpoint directory or hub id")
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(repo_id=spec, allow_patterns=[*HUB_FILES, *SAFETENSORS_FILES]))
        if not any((directory / name).is_file() for name in SAFETENSORS_FILES[:2]):  # an older repository: .bin
            directory = Path(snapshot_download(repo_id=spec, allow_patterns=[*HUB_FILES, "pytorch_model.bin"]))
        return directory
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"init_from={source}: no directory {spec} here, and the hub could not give it ({first}); give a local "
            "GPT-2 checkpoint directory (save_pretrained's), or run where the hub is reachable"
        ) from None


def model_settings(source: str, config: dict[str, Any]) -> dict[str, Any]:
    """objbench's model settings (GPTConfig's fields, dropout aside) of a GPT-2 ``config.json``, or one ConfigError
    naming what is not GPT-2 or what objbench's backbone cannot hold."""
    kind = config.get("model_type")
    if kind != "gpt2":
        architectures = ", ".join(config.get("architectures") or []) or "no architectures listed"
        raise ConfigError(
            f"init_from={source} is a {kind!r} model ({architectures}); objbench imports GPT-2-family checkpoints "
            "(model_type gpt2, GPT2LMHeadModel: gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, ...)"
        )
    d_model, activation = config.get("n_embd", 768), config.get("activation_function", "gelu_new")
    # (setting, its value here, what objbench's GPT-2 computes)
    needs = (
        ("activation_function", activation, tuple(ACTIVATIONS)),
        ("n_inner", config.get("n_inner"), (None, 4 * d_model)),
        ("layer_norm_epsilon", config.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        ("scale_attn_weights", config.get("scale_attn_weights", True), (True,)),
        ("scale_attn_by_inverse_layer_idx", config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        ("reorder_and_upcast_attn", config.get("reorder_and_upcast_attn", False), (False,)),
    )
    for key, value, allowed in needs:
        if value not in allowed:
            raise ConfigError(
                f"init_from={source}: its config.json has {key}={value!r}; objbench's GPT-2 needs "
                f"{' or '.join(json.dumps(a) for a in allowed)}"
            )
    return {
        "vocab_size": config.get("vocab_size", 50257),
        "context": config.get("n_positions", 1024),
        "n_layer": config.get("n_layer", 12),
        "n_head": config.get("n_head", 12),
        "d_model": d_model,
        "bias": True,
        "head_bias": False,
        "activation": ACTIVATIONS[activation],
    }


def read_weights(source: str, directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The checkpoint's tensors by HF name, and the file they came from (a sharded safetensors: its index)."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            if name == "pytorch_model.bin":
                return torch.load(path, map_location="cpu", weights_only=True), path
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise ConfigError(
                    f"init_from={source}: reading {name} needs safetensors (pip install -e '.[hf]')"
                ) from None

            if name.endswith(".index.json"):
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
                return {k: v for shard in shards for k, v in load_file(directory / shard).items()}, path
            return load_file(path), path
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(
                f"init_from={source}: {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            ) from None
    raise ConfigError(f"init_from={source}: {directory} holds no weights ({', '.join(WEIGHT_FILES)})")


def from_hf_state_dict(
    source: str, hf: dict[str, torch.Tensor], n_layer: int, shift: float = 0.0
) -> dict[str, torch.Tensor]:
    """GPT-2's tensors (HF names) -> ``GPT.state_dict()``'s, Conv1D weights transposed, the head tied (an untied
    head: an objbench export's folded output bias, with config.json's ``objbench_ln_f_shift``)."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    names = {"wte.weight": ("wte.weight", False), "wpe.weight": ("wpe.weight", False)}  # HF name -> (ours, Conv1D?)
    for hf_module, (ours, conv) in module_map(n_layer).items():
        names[f"{hf_module}.weight"] = (f"{ours}.weight", conv)
        names[f"{hf_module}.bias"] = (f"{ours}.bias", False)
    missing = [k for k in names if k not in hf]
    if missing:
        raise ConfigError(f"init_from={source}: its weights lack {', '.join(missing[:3])}; is it a GPT-2 checkpoint?")
    out = {ours: (hf[k].t() if conv else hf[k]).contiguous().float() for k, (ours, conv) in names.items()}
    bias = hf.get("lm_head.bias")  # GPT2LMHeadModel has none; a checkpoint that carries one keeps it (zero: none)
    if bias is not None and bool(bias.any()):
        out["lm_head.bias"] = bias.float()
    head = hf.get("lm_head.weight")
    if head is not None and not torch.equal(head, hf["wte.weight"]):  # untied: an output bias folded in, or refused
        gamma, beta = out["ln_f.weight"], out["ln_f.bias"]
        out["lm_head.bias"], out["ln_f.bias"] = unfold_output_bias(source, out["wte.weight"], head, gamma, beta, shift)
    out["lm_head.weight"] = out["wte.weight"]
    return out


def fold_output_bias(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(untied output embedding (V, D), the final LayerNorm's shifted bias (D,), t) whose bias-free logits equal
    ``wte``'s with ``lm_head.bias`` (module docstring); a ConfigError where γ has a zero (no exact fold)."""
    gamma = state["ln_f.weight"].double()
    if not bool((gamma != 0).all()):
        raise ConfigError(
            "the model's output bias (model.head_bias=true) cannot be folded into GPT-2's bias-free head: its final "
            "LayerNorm has a zero weight"
        )
    beta = state["ln_f.bias"].double() if state.get("ln_f.bias") is not None else torch.zeros_like(gamma)
    embedding, dim = state["wte.weight"].double(), gamma.numel()
    t = float((dim - (beta / gamma).sum()) / dim)  # Σ (β + tγ)/γ = D
    shift = t * gamma
    c = (state["lm_head.bias"].double() - embedding @ shift) / dim
    return (embedding + c[:, None] / gamma[None, :]).float(), (beta + shift).float(), t


def unfold_output_bias(
    source: str, wte: torch.Tensor, head: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, t: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output bias b, the final LayerNorm's bias) of a head that ``fold_output_bias`` wrote, or a ConfigError for
    an untied head of another kind, which objbench's tied backbone cannot hold."""
    delta, gamma, beta = head.double() - wte.double(), gamma.double(), beta.double()
    c = (delta * gamma).mean(-1)  # each row of delta is c_v / γ
    if not torch.allclose(delta, c[:, None] / gamma[None, :], rtol=1e-4, atol=1e-6):
        raise ConfigError(
            f"init_from={source}: its lm_head.weight is not tied to wte.weight (nor an objbench export's folded "
            "output bias); objbench's backbone ties them"
        )
    bias = c * (beta / gamma).sum()  # the bias for the exported LayerNorm's output
    shift = t * gamma
    return (bias + wte.double() @ shift).float(), (beta - shift).float()


def to_hf_state_dict(state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """``GPT.state_dict()`` (without an output bias) -> GPT2LMHeadModel's names; missing biases (``bias=false``)
    become zeros, which is exact."""
    out = {"transformer.wte.weight": state["wte.weight"], "transformer.wpe.weight": state["wpe.weight"]}
    for hf_module, (ours, conv) in module_map(n_layer).items():
        weight = state[f"{ours}.weight"]
        out[f"transformer.{hf_module}.weight"] = weight.t().contiguous() if conv else weight
        bias = state.get(f"{ours}.bias")
        out[f"transformer.{hf_module}.bias"] = bias if bias is not None else weight.new_zeros(weight.shape[0])
    out["lm_head.weight"] = state["wte.weight"]
    return out


def to_hf_config(model: dict[str, Any], eos_id: int | None) -> dict[str, Any]:
    """GPT2Config's settings of objbench's model settings (no output bias: ``head_bias=false``)."""
    return {
        "vocab_size": model["vocab_size"],
        "n_positions": model["context"],
        "n_embd": model["d_model"],
        "n_layer": model["n_layer"],
        "n_head": model["n_head"],
        "activation_function": "gelu_new" if model.get("activation", "gelu") == "gelu_tanh" else "gelu",
        "resid_pdrop": model.get("dropout", 0.0),
        "embd_pdrop": model.get("dropout", 0.0),
        "attn_pdrop": model.get("dropout", 0.0),
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
    }


def load_tokenizer(path: str | Path, setting: str = "data.tokenizer"):
    """A ``tokenizers.Tokenizer`` and its end-of-text token from a tokenizer.json, or a directory with one (or with
    GPT-2's vocab.json + merges.txt: a byte-level BPE); the end of text is tokenizer_config.json's eos_token, else
    ``<|endoftext|>``, and must be one of its tokens. A DataError naming ``path`` otherwise."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    path = Path(path).expanduser()
    directory = path if path.is_dir() else path.parent
    try:
        if path.is_file():
            tokenizer = Tokenizer.from_file(str(path))
        elif (path / "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            tokenizer = Tokenizer(models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt")))
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
        else:
            raise DataError(
                f"{setting}={path} holds no tokenizer (tokenizer.json, or vocab.json + merges.txt); give a tokenizer "
                "file or a directory with one"
            )
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{setting}={path} cannot be read as a tokenizer ({type(e).__name__})") from None
    eos = eos_token(directory)
    if tokenizer.token_to_id(eos) is None:
        raise DataError(f"{setting}={path}: its end-of-text token {eos!r} is not in its vocabulary")
    tokenizer.add_special_tokens([AddedToken(eos, special=True)])  # never split, never merged into text
    return tokenizer, eos


def eos_token(directory: Path) -> str:
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return EOS
    eos = config.get("eos_token") if isinstance(config, dict) else None
    eos = eos.get("content") if isinstance(eos, dict) else eos
    return eos if isinstance(eos, str) and eos else EOS


def has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or all((directory / f).is_file() for f in TOKENIZER_FILES[1:3])
