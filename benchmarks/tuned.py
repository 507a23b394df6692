"""Equal tuning effort: every objective with knobs gets the same Optuna budget, then the suite at its best knobs.

    python benchmarks/tuned.py                                   # every objective, tune.n_trials each
    python benchmarks/tuned.py --objectives label_smoothing,nce tune.n_trials=12
    python benchmarks/tuned.py --default-suite runs/suite         # compare with make bench's runs

Writes tuned_report.md (default knobs beside tuned knobs, paired by seed), expected_best.png, the studies and the
tuned runs into --out; rerunning continues where it stopped (benchmarks/runner/equal_tuning.py says how).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.runner.cli import fail, quiet_lightning, user_errors_as_one_line
from benchmarks.runner.config import available
from benchmarks.runner.equal_tuning import equal_tuning


def output_dirs(out: Path | None, default_suite: Path | None, overrides: list[str]) -> tuple[Path, Path]:
    """--out and --default-suite as given, else under the command line's run_root (runs by default)."""
    run_root = Path(next((o.split("=", 1)[1] for o in overrides if o.startswith("run_root=")), "runs"))
    return out or run_root / "tuned", default_suite or run_root / "suite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", help="comma-separated (default: every objective with a search space)")
    parser.add_argument("--out", type=Path, help="default: <run_root>/tuned (runs/tuned)")
    parser.add_argument("--default-suite", type=Path, help="the default-knob runs (default: <run_root>/suite)")
    parser.add_argument("--tune-seed", type=int, default=0, help="the seed of the tuning runs (default 0)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bad = [o for o in overrides if "=" not in o or o.startswith("-")]
    if bad:
        fail(f"{bad[0]!r} is neither an option nor a key=value override; see --help")
    names = args.objectives.split(",") if args.objectives else available("objective")
    unknown = [n for n in names if n not in available("objective")]
    if unknown:
        fail(f"--objectives: {unknown[0]!r} is not available; choose from: {', '.join(available('objective'))}")
    quiet_lightning()
    out, default_suite = output_dirs(args.out, args.default_suite, overrides)
    default_suite = default_suite if default_suite.is_dir() else None
    text = user_errors_as_one_line(equal_tuning)(names, overrides, out, default_suite, args.tune_seed)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
