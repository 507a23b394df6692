"""Speed of objbench, measured: training steps, objectives, generation, evaluation; Hugging Face beside it.

    python benchmarks/perf.py                        # the default shape on this machine, a table
    python benchmarks/perf.py --json perf.json       # also the figures as JSON
    python benchmarks/perf.py --preset gpt2 --device cuda --compile   # GPT-2 124M on a GPU: tokens/s, MFU
    python benchmarks/perf.py --nanogpt ../nanoGPT/model.py  # nanoGPT's step beside ours (your clone)
    python benchmarks/perf.py --profile              # where the training step's time goes, op by op
    python benchmarks/perf.py --job                  # a suite job as make bench runs it: wall, train, eval
    python benchmarks/perf.py --job --profile        # where a suite job's time goes: phases, then ops
    python benchmarks/perf.py --gpu-check --json runs/gpu_check.json   # make gpu-check: a short GPU loan's figures

Default shape: 4 layers, 4 heads, d=256, context 256, vocab 8192, batch 16. Every figure is the median of
``--repeats`` timed windows after warm-up steps; every ratio the median of ratios of adjacent, alternating
windows. With the ``perf`` extra (transformers), Hugging Face GPT-2 runs the same work at the same shape and
precision, in this process and as shipped. Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks.performance.figures import gpu_check, job_figures, measure, profile
from benchmarks.performance.harness import PRESETS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per window")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (blocks and fused loss)")
    parser.add_argument("--objectives", action="store_true", help="also time every objective against MLE")
    parser.add_argument(
        "--cost-pairs",
        type=int,
        default=30,
        help="--objectives: alternating pairs of windows (12 pairs wander ±0.05, 30 ±0.02)",
    )
    parser.add_argument("--cost-steps", type=int, default=3, help="--objectives: steps per window")
    parser.add_argument(
        "--only", type=lambda s: s.split(","), metavar="NAMES", help="--objectives: only these (comma-separated)"
    )
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--profile", action="store_true", help="only profile the training step (op by op) and exit")
    parser.add_argument(
        "--nanogpt", type=Path, metavar="MODEL_PY", help="nanoGPT's model.py (a local clone): its step beside ours"
    )
    parser.add_argument(
        "--no-shipped", action="store_true", help="skip Hugging Face / nanoGPT as shipped (their own process)"
    )
    parser.add_argument(
        "--job", action="store_true", help="time (with --profile: profile) a suite job as make bench runs it"
    )
    parser.add_argument("--job-objective", default="mle", help="--job: the objective (configs/objective/)")
    parser.add_argument("--job-runs", type=int, default=3, help="--job: jobs in this process; the first warms it")
    parser.add_argument("--threads", type=int, default=1, help="--job: torch threads (make bench: 1 on 2 cores)")
    parser.add_argument(
        "--job-override", action="append", default=[], help="--job: a run.py override (repeat for more)"
    )
    parser.add_argument(
        "--gpu-check",
        action="store_true",
        help="the CUDA tests, GPT-2 124M through the compiled Trainer (MFU), every objective's step cost, a "
        "fine-tuning step (preset gpt2 and 8 cost pairs unless given)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.gpu_check:  # a short loan: GPT-2's shape, fewer pairs for the cost table
        given = set(argv if argv is not None else sys.argv[1:])
        args.preset = args.preset if "--preset" in given else "gpt2"
        args.cost_pairs = args.cost_pairs if "--cost-pairs" in given else 8
    if args.only is not None:
        from benchmarks.runner.config import available

        unknown = sorted(set(args.only) - set(available("objective")))
        if unknown:
            parser.error(f"--only {','.join(unknown)}: no such objective; choose among configs/objective/")
    if args.nanogpt is not None and not args.nanogpt.is_file():
        parser.error(f"--nanogpt {args.nanogpt}: no such file; give the path of nanoGPT's model.py")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gpu_check:
        gpu_check(args)
    elif args.job:
        job_figures(args)
    elif args.profile:
        print(profile(args))
    else:
        measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
