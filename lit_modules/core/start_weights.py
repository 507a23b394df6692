"""Starting a run from trained weights (``init_from=PATH``): the backbone's weights of an earlier run, nothing else.

This is not resuming. ``resume=true`` continues one run where it stopped (optimiser state, schedule, step,
random state, the objective's state); ``init_from`` starts a *new* run (fresh optimiser and schedule, step 0)
whose model begins as the earlier run's model ended: the protocol of every fine-tuning paper (an MLE model,
then the objective). Only the model's weights are read: not the earlier objective's state (NCE's noise
table, a reference copy), which the new objective builds for itself from the loaded model.

``PATH`` is a run directory (its ``checkpoints/last.ckpt``) or a checkpoint file; ``hf:<directory or hub id>`` a
Hugging Face GPT-2 checkpoint (``lit_modules/core/hf_gpt2.py``), whose ``config.json`` then gives the model's shape
and whose tokenizer the data uses. The run records the source, the file and a content hash of the weights
(``StartWeights.record``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from lit_modules.core import hf_gpt2
from lit_modules.core.errors import ConfigError

# the model settings that fix the weights' shapes and function (dropout does not: a fine-tuning run may change it)
SHAPE_KEYS = ("n_layer", "n_head", "d_model", "context", "bias", "head_bias", "activation")
# model settings newer than some checkpoints: what those checkpoints' models used (resume reads it too)
DEFAULTS = {"activation": "gelu"}
HF_PREFIX = "hf:"


@dataclass
class StartWeights:
    """The backbone weights a run starts from: ``state_dict`` as ``GPT.state_dict()`` names them, ``model``
    the model settings they were saved with, ``step`` the earlier run's step."""

    source: str  # init_from as given
    path: Path  # the checkpoint read
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    model: dict[str, Any]
    step: int | None
    tokenizer: Path | None  # the earlier run's tokenizer.json (real text), or the HF checkpoint's tokenizer
    pretrained: bool = False  # a Hugging Face checkpoint: ``model`` comes from its config.json and sets the shape

    @cached_property
    def sha256(self) -> str:
        """A content hash of the weights: names, dtypes, shapes and bytes, in name order."""
        digest = hashlib.sha256()
        for name in sorted(self.state_dict):
            tensor = self.state_dict[name].detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        """What results.json says the run started from."""
        record = {"source": self.source, "path": str(self.path), "sha256": self.sha256, "step": self.step}
        return {**record, "model": self.model} if self.pretrained else record

    def check_model(self, model: dict[str, Any]) -> None:
        """A ConfigError naming both sides when ``model`` (this run's settings, with the data's vocabulary
        size) would not hold these weights: another vocabulary, or another shape."""
        if model.get("vocab_size") != self.model.get("vocab_size"):
            raise ConfigError(
                f"init_from={self.source} has a vocabulary of {self.model.get('vocab_size')} tokens, this run's data "
                f"{model.get('vocab_size')}; fine-tune on data with the vocabulary it was trained on"
            )
        if any(model.get(k, DEFAULTS.get(k)) != self.model.get(k, DEFAULTS.get(k)) for k in SHAPE_KEYS):
            raise ConfigError(
                f"init_from={self.source} is a model of {shape(self.model)}, this config's is {shape(model)}; set "
                "the model (model=... or model.K=...) to the shape it was trained with"
            )

    def check_tokenizer(self, tokenizer_json: str | None) -> None:
        """A ConfigError when this run's tokenizer (its JSON) is not the one the weights were trained with."""
        if tokenizer_json is None or self.tokenizer is None:
            return
        theirs = hf_gpt2.load_tokenizer(self.tokenizer, f"init_from={self.source}")[0].to_str()
        if token_ids_part(theirs) != token_ids_part(tokenizer_json):
            raise ConfigError(
                f"init_from={self.source} was trained with another tokenizer ({self.tokenizer}) than this run's "
                "data has: its token ids would mean other words; fine-tune on data tokenised as it was trained"
            )


def shape(model: dict[str, Any]) -> str:
    return " ".join(f"{k}={model.get(k, DEFAULTS.get(k))}" for k in SHAPE_KEYS)


def token_ids_part(text: str) -> Any:
    """What of a tokenizer's JSON decides the ids of text: its normaliser, pre-tokeniser and model (vocabulary,
    merges); not how it pads or which tokens it flags as special."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return {k: parsed.get(k) for k in ("normalizer", "pre_tokenizer", "model")} if isinstance(parsed, dict) else parsed


def checkpoint_path(source: str) -> Path:
    """The checkpoint of ``init_from``: a run directory's ``checkpoints/last.ckpt``, or the file itself."""
    path = Path(source).expanduser()
    if path.is_dir():
        checkpoint = path / "checkpoints" / "last.ckpt"
        if checkpoint.is_file():
            return checkpoint
        failed = path / "failed.json"
        if failed.is_file():
            raise ConfigError(f"init_from={source}: the starting run failed ({failed_line(failed)}); rerun it first")
        raise ConfigError(
            f"init_from={source} holds no weights (no checkpoints/last.ckpt in it); give a run directory of a "
            "finished run, or a .ckpt file"
        )
    if not path.exists():
        raise ConfigError(f"init_from={source} does not exist; give a run directory or a .ckpt file")
    if not path.is_file():
        raise ConfigError(f"init_from={source} is not a file or a directory; give a run directory or a .ckpt file")
    return path


def failed_line(failed: Path) -> str:
    try:
        record = json.loads(failed.read_text(encoding="utf-8"))
        return str(record.get("error", "see its failed.json"))[:200] if isinstance(record, dict) else str(failed)
    except (OSError, ValueError):
        return f"see {failed}"


def read_start_weights(source: Any) -> StartWeights:
    """The weights of ``init_from`` (memory-mapped: read when they are loaded into the model), or a one-line
    ConfigError: a missing path, a directory without weights, a file that is not an objbench checkpoint."""
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(
            f"init_from={source!r} is not allowed; give a run directory, a .ckpt file or hf:<GPT-2 directory or hub id>"
        )
    if source.startswith(HF_PREFIX):
        return read_pretrained(source)
    path = checkpoint_path(source)
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"init_from={source}: {path} cannot be read as a checkpoint ({type(e).__name__}); give an objbench "
            "run's checkpoints/last.ckpt"
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    model = (checkpoint.get("hyper_parameters") or {}).get("model") if isinstance(checkpoint, dict) else None
    weights = {k.removeprefix("model."): v for k, v in (state or {}).items() if k.startswith("model.")}
    if not weights or not isinstance(model, dict):
        raise ConfigError(
            f"init_from={source}: {path} holds no objbench model weights (no model.* state or model settings); "
            "give an objbench run's checkpoints/last.ckpt"
        )
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    tokenizer = run_dir / "tokenizer.json"
    return StartWeights(
        source=source,
        path=path.resolve(),
        state_dict=weights,
        model=model,
        step=checkpoint.get("global_step"),
        tokenizer=tokenizer if tokenizer.is_file() else None,
    )


def read_pretrained(source: str) -> StartWeights:
    """``init_from=hf:<directory or hub id>``: a Hugging Face GPT-2 checkpoint's weights in objbench's names, its
    model settings from config.json, its tokenizer (if it has one); one ConfigError line for what is not there
    or not GPT-2."""
    spec = source.removeprefix(HF_PREFIX).strip()
    if not spec:
        raise ConfigError(
            f"init_from={source!r} names no checkpoint; give hf:<directory> or hf:<hub id> (e.g. hf:gpt2)"
        )
    directory = hf_gpt2.resolve_directory(source, spec)
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(
            f"init_from={source}: {directory} has no config.json; give a directory that save_pretrained wrote"
        ) from None
    except ValueError:
        raise ConfigError(f"init_from={source}: {directory / 'config.json'} is not JSON") from None
    model = hf_gpt2.model_settings(source, config if isinstance(config, dict) else {})
    weights, path = hf_gpt2.read_weights(source, directory)
    shift = config.get("objbench_ln_f_shift", 0.0) if isinstance(config, dict) else 0.0
    state = hf_gpt2.from_hf_state_dict(source, weights, model["n_layer"], float(shift))
    return StartWeights(
        source=source,
        path=path.resolve(),
        state_dict=state,
        model={**model, "head_bias": "lm_head.bias" in state},  # an objbench export's folded output bias
        step=None,
        tokenizer=directory.resolve() if hf_gpt2.has_tokenizer(directory) else None,
        pretrained=True,
    )
