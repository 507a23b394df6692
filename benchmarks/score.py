"""Score saved continuations with the same metric functions as a run.

    python benchmarks/score.py runs/.../samples.jsonl [--json scores.json]

Each line of the file: {"decoding": name, "continuation": [ids], ...}. The text metrics (seq_rep_n, uniq_seq,
distinct_n, unique_ngram_share_n, hapax_share_n, zipf, self_bleu_4, rep_rate, loop_rate) are recomputed from the
token ids; per-sample values that need the model, the source or the training data (entropy, sample_nll,
copy_rate_8), when present, are averaged. Continuations of one decoding must have one length.
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
    parser.add_argument("samples", type=Path, help="a samples.jsonl file written by benchmarks/run.py")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    samples = user_errors_as_one_line(read_samples)(args.samples)
    counts = ", ".join(f"{name} {len(records)}" for name, records in samples.items())
    print(f"{args.samples}: {sum(len(r) for r in samples.values())} samples ({counts})")
    if len({len(records) for records in samples.values()}) > 1:
        print("  the decodings have different counts: a run writes as many of each (a truncated file?)")
    metrics = user_errors_as_one_line(score)(samples)
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:10.4f}")
    if args.json:
        try:
            atomic_write_json(args.json, metrics)
        except OSError as e:
            fail(f"--json {args.json}: cannot write it ({e.strerror or type(e).__name__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
