"""Files written so that a reader never sees half of one, and where cached data lives."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$OBJBENCH_CACHE`` or ``~/.cache/objbench``: synthetic corpora, tokenizers, HF Arrow files."""
    return Path(os.environ.get("OBJBENCH_CACHE", Path.home() / ".cache" / "objbench"))


@contextlib.contextmanager
def atomic_path(path: str | Path, commit: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds (and
    ``commit``), removed when it fails. Readers see the old file or the new one, never a partial file: the
    one way objbench writes results, samples, checkpoints, caches and tokenizers.

    ``commit=False`` (the other processes of a distributed checkpoint, which write nothing) only cleans up."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if commit and tmp.exists():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a results file is as readable as any other
            os.replace(tmp, path)  # atomic on POSIX
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write bytes, or text as UTF-8, to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
