"""Starting a run from trained weights (``init_from=PATH``): the backbone's weights of an earlier run, nothing else.

This is not resuming. ``resume=true`` continues one run where it stopped (optimiser state, schedule, step,
random state, the objective's state); ``init_from`` starts a *new* run (fresh optimiser and schedule, step 0)
whose model begins as the earlier run's model ended: the protocol of every fine-tuning paper (an MLE model,
then the objective). Only the model's weights are read: not the earlier objective's state (NCE's noise
table, a reference copy), which the new objective builds for itself from the loaded model.

``PATH`` is a run directory (its ``checkpoints/last.ckpt``) or a checkpoint file. The run records the file
and a content hash of the weights (``StartWeights.record``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from lit_modules.core.errors import ConfigError

# the model settings that fix the weights' shapes (dropout does not: a fine-tuning run may change it)
SHAPE_KEYS = ("n_layer", "n_head", "d_model", "context", "bias", "head_bias")


@dataclass
class StartWeights:
    """The backbone weights a run starts from: ``state_dict`` as ``GPT.state_dict()`` names them, ``model``
    the model settings they were saved with, ``step`` the earlier run's step."""

    source: str  # init_from as given
    path: Path  # the checkpoint read
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    model: dict[str, Any]
    step: int | None
    tokenizer: Path | None  # the earlier run's tokenizer.json (real text), to check the vocabulary against

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
        return {"source": self.source, "path": str(self.path), "sha256": self.sha256, "step": self.step}

    def check_model(self, model: dict[str, Any]) -> None:
        """A ConfigError naming both sides when ``model`` (this run's settings, with the data's vocabulary
        size) would not hold these weights: another vocabulary, or another shape."""
        if model.get("vocab_size") != self.model.get("vocab_size"):
            raise ConfigError(
                f"init_from={self.source} has a vocabulary of {self.model.get('vocab_size')} tokens, this run's data "
                f"{model.get('vocab_size')}; fine-tune on data with the vocabulary it was trained on"
            )
        if any(model.get(k) != self.model.get(k) for k in SHAPE_KEYS):
            raise ConfigError(
                f"init_from={self.source} is a model of {shape(self.model)}, this config's is {shape(model)}; set "
                "the model (model=... or model.K=...) to the shape it was trained with"
            )

    def check_tokenizer(self, tokenizer_json: str | None) -> None:
        """A ConfigError when this run's tokenizer (its JSON) is not the one the weights were trained with."""
        if tokenizer_json is None or self.tokenizer is None:
            return
        if canonical_json(self.tokenizer.read_text(encoding="utf-8")) != canonical_json(tokenizer_json):
            raise ConfigError(
                f"init_from={self.source} was trained with another tokenizer ({self.tokenizer}) than this run's "
                "data has: its token ids would mean other words; fine-tune on data tokenised as it was trained"
            )


def shape(model: dict[str, Any]) -> str:
    return " ".join(f"{k}={model.get(k)}" for k in SHAPE_KEYS)


def canonical_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


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
        raise ConfigError(f"init_from={source!r} is not allowed; give a run directory or a .ckpt file (or null)")
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
