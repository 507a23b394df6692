"""Export a finished run's model as a Hugging Face GPT-2 directory (transformers, lm-evaluation-harness, ...).

    python benchmarks/export.py RUN_DIR OUT_DIR [--force]

OUT_DIR then loads with ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` and ``AutoTokenizer.from_pretrained(OUT_DIR)``
(``pip install -e '.[hf]'``), and starts another objbench run with ``init_from=hf:OUT_DIR``. What is written and
how the output bias is kept: benchmarks/runner/export.py and the README's "Pretrained models in and out".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.runner.cli import user_errors_as_one_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's directory (its results.json and checkpoints/)")
    parser.add_argument("out_dir", type=Path, help="the directory to write (new or empty, unless --force)")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    args = parser.parse_args(argv)
    from benchmarks.runner.export import export_run

    record = user_errors_as_one_line(export_run)(args.run_dir, args.out_dir, args.force)
    print(
        f"exported {args.run_dir} -> {args.out_dir} (output bias: {record['output_bias']}; "
        f"max |Δ log p| vs the run {record['max_abs_logprob_difference']:.1e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
