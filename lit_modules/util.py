"""Small shared helpers: user-facing errors, atomic writes, cache location, precision choice."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class UserError(ValueError):
    """Bad user input (config value, path, data): reported as one line, non-zero exit."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


def default_cache_dir() -> Path:
    """``$OBJBENCH_CACHE`` or ``~/.cache/objbench``: synthetic corpora, tokenizers, HF Arrow files."""
    return Path(os.environ.get("OBJBENCH_CACHE", Path.home() / ".cache" / "objbench"))


def _atomic(path: str | Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a results file is as readable as any other
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_torch(obj: Any, path: str | Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AMX or AVX512-BF16), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> Lightning precision: bf16-mixed on bf16 GPUs and bf16 CPUs, else 32-true."""
    allowed = ("auto", "bf16-mixed", "32-true", "16-mixed", "bf16", "32", "fp32")
    if precision not in allowed:
        raise ConfigError(f"trainer.precision={precision!r} is unknown; choose one of {', '.join(allowed)}")
    if precision == "fp32" or precision == "32":
        return "32-true"
    if precision == "bf16":
        return "bf16-mixed"
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"
