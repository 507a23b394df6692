"""Score saved continuations with the same metric functions as a run.

    python benchmarks/score.py runs/.../samples.jsonl [--json scores.json]
    python benchmarks/score.py runs/suite/mle/seed_*/samples.jsonl --mauve-sizes 64,128,256,512   # MAUVE's curve

Each line of the file: {"decoding": name, "continuation": [ids], ...}. The text metrics (seq_rep_n, uniq_seq,
distinct_n, unique_ngram_share_n, hapax_share_n, zipf, self_bleu_4, rep_rate, loop_rate) are recomputed from the
token ids; per-sample values that need the model, the source or the training data (entropy, sample_nll,
copy_rate_8), when present, are averaged. Continuations of one decoding must have one length.

``--mauve-sizes``: MAUVE against the human continuations on n of each file's continuations (spread evenly over
its prompts) for each n, and its mean with a 95% t interval over the files (one per seed): how many continuations
it takes for MAUVE to separate anything (the mauve extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.evaluation.samples import read_samples, score
from benchmarks.runner.cli import fail, user_errors_as_one_line
from lit_modules.core.files import atomic_write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, nargs="+", help="samples.jsonl file(s) written by benchmarks/run.py")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--mauve-sizes", type=sizes, help="e.g. 64,128,256: MAUVE at each number of continuations")
    args = parser.parse_args(argv)
    if len(args.samples) > 1 or args.mauve_sizes:
        return several(args)
    samples = user_errors_as_one_line(read_samples)(args.samples[0])
    counts = ", ".join(f"{name} {len(records)}" for name, records in samples.items())
    print(f"{args.samples[0]}: {sum(len(r) for r in samples.values())} samples ({counts})")
    if len({len(records) for records in samples.values()}) > 1:
        print("  the decodings have different counts: a run writes as many of each (a truncated file?)")
    metrics = user_errors_as_one_line(score)(samples)
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:10.4f}")
    write_json(args.json, metrics)
    return 0


def sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 10 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers of continuations >= 10, e.g. 64,128,256")
    return sorted(set(values))


def several(args: argparse.Namespace) -> int:
    """Several files (seeds): each one's text metrics, and with --mauve-sizes MAUVE's curve over them."""
    from benchmarks.evaluation import mauve
    from benchmarks.reporting.stats import mean_interval

    runs = [user_errors_as_one_line(read_samples)(path) for path in args.samples]
    out: dict = {"files": [str(p) for p in args.samples], "metrics": [score(groups) for groups in runs]}
    if args.mauve_sizes:
        user_errors_as_one_line(mauve.require)()
        if any("text" not in r for groups in runs for records in groups.values() for r in records):
            fail("--mauve-sizes needs the continuations' text: samples.jsonl of a real-text run")
        texts = [{name: [r["text"] for r in records] for name, records in groups.items()} for groups in runs]
        curve = user_errors_as_one_line(mauve.mauve_curve)(texts, args.mauve_sizes)
        out["mauve_curve"] = {name: {str(n): v for n, v in by_n.items()} for name, by_n in curve.items()}
        print(f"MAUVE by number of continuations, mean ± 95% interval over {len(runs)} file(s):")
        for name, by_n in curve.items():
            for n, values in by_n.items():
                interval = mean_interval(values)
                half = f" ± {interval.half:.3f}" if len(values) > 1 else ""
                print(f"  {name:<12} n={n:<5} {interval.mean:.3f}{half}   ({', '.join(f'{v:.3f}' for v in values)})")
    write_json(args.json, out)
    return 0


def write_json(path: Path | None, content: dict) -> None:
    if path:
        try:
            atomic_write_json(path, content)
        except OSError as e:
            fail(f"--json {path}: cannot write it ({e.strerror or type(e).__name__})")


if __name__ == "__main__":
    sys.exit(main())
