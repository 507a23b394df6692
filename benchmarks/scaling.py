"""The scaling sweep's fit: test NLL against model size, L(N) = E + A·N^(−α) per objective, at a fixed token
budget; on the synthetic source the fitted floor E reads against the source's exact entropy rate.

    python benchmarks/run.py -m objective=mle,label_smoothing suite=scaling
    python benchmarks/scaling.py runs/scaling            # scaling.md (the fits) and scaling.png in that directory
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.reporting.scaling import write_report
from benchmarks.runner.cli import fail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a directory of suite=scaling runs")
    args = parser.parse_args(argv)
    try:
        table = write_report(args.runs)
    except ValueError as e:  # too few sizes, no runs, an unreadable results file
        fail(str(e))
    print(table + f"\nplot: {args.runs / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
