"""Score saved continuations (a run's samples.jsonl) with the same metric functions as the run: the text
metrics are recomputed from the token ids; per-sample values that need the model, the source or the training
data (entropy, sample_nll, copy_rate_8), when present, are averaged."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.evaluation.metrics import generation_metrics
from benchmarks.evaluation.names import metric_key
from lit_modules.core.errors import DataError

PER_SAMPLE = ("entropy", "sample_nll", "copy_rate_8")
MAX_ID = 2**31  # token ids: non-negative integers that fit torch's int64 and any vocabulary


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_samples(path: Path) -> dict[str, list[dict]]:
    """Records grouped by decoding; a malformed line is an error naming its number."""
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    groups: dict[str, list[dict]] = {}
    with path.open(encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text") from None
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
            raise DataError(
                f'{path}:{number}: malformed sample; expected a JSON object with "decoding" (a name), '
                f'"continuation" (a list of at least 2 token ids, integers in [0, 2^31)) and numbers for '
                f"{', '.join(PER_SAMPLE)} where present"
            ) from None
        groups.setdefault(name, []).append(record)
    if not groups:
        raise DataError(f"{path} holds no samples")
    return groups


def score(groups: dict[str, list[dict]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name, records in groups.items():
        lengths = {len(r["continuation"]) for r in records}
        if len(lengths) != 1:
            raise DataError(f"decoding {name!r}: continuations have different lengths {sorted(lengths)}")
        conts = torch.tensor([r["continuation"] for r in records], dtype=torch.int64)
        for key, value in generation_metrics(conts).items():
            metrics[metric_key(name, key)] = value
        for key in PER_SAMPLE:
            if all(key in r for r in records):
                metrics[metric_key(name, key)] = float(
                    torch.tensor([r[key] for r in records], dtype=torch.float64).mean()
                )
    return metrics
