"""Score saved continuations with the same metric functions as a run.

    python benchmarks/score.py runs/.../samples.jsonl [--json scores.json]

Each line of the file: {"decoding": name, "continuation": [ids], ...}. The text metrics
(seq_rep_n, uniq_seq, distinct_n, unique_ngram_share_n, hapax_share_n, zipf, self_bleu_4, rep_rate,
loop_rate) are recomputed from the token ids; per-sample values that need the model, the source or the
training data (entropy, sample_nll, copy_rate_8), when present, are averaged. Continuations of one
decoding must have one length.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.cli import fail
from benchmarks.metrics import generation_metrics
from lit_modules.util import atomic_write_json

PER_SAMPLE = {"entropy": "gen", "sample_nll": "gt", "copy_rate_8": "gen"}
MAX_ID = 2**31  # token ids: non-negative integers that fit torch's int64 and any vocabulary


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_samples(path: Path) -> dict[str, list[dict]]:
    """Records grouped by decoding; a malformed line is an error naming its number."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    groups: dict[str, list[dict]] = {}
    with path.open(encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            name, cont = record["decoding"], record["continuation"]
            ids_ok = all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < MAX_ID for t in cont or [None])
            if not isinstance(name, str) or not isinstance(cont, list) or len(cont) < 2 or not ids_ok:
                raise TypeError
            if any(not _number(record[key]) for key in PER_SAMPLE if key in record):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(
                f'{path}:{number}: malformed sample; expected a JSON object with "decoding" (a name), '
                f'"continuation" (a list of at least 2 token ids, integers in [0, 2^31)) and numbers for '
                f"{', '.join(PER_SAMPLE)} where present"
            ) from None
        groups.setdefault(name, []).append(record)
    if not groups:
        raise ValueError(f"{path} holds no samples")
    return groups


def score(groups: dict[str, list[dict]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, records in groups.items():
        lengths = {len(r["continuation"]) for r in records}
        if len(lengths) != 1:
            raise ValueError(f"decoding {name!r}: continuations have different lengths {sorted(lengths)}")
        conts = torch.tensor([r["continuation"] for r in records], dtype=torch.int64)
        for key, value in generation_metrics(conts).items():
            metrics[f"gen/{name}/{key}"] = value
        for key, namespace in PER_SAMPLE.items():
            if all(key in r for r in records):
                metrics[f"{namespace}/{name}/{key}"] = float(
                    torch.tensor([r[key] for r in records], dtype=torch.float64).mean()
                )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="a samples.jsonl file written by benchmarks/run.py")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    try:
        metrics = score(read_samples(args.samples))
    except ValueError as e:
        fail(str(e))
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
