"""A suite's results without its weights: each finished run's results.json, and the per-prompt metrics of its
samples files, copied under another directory in the same layout (``<objective>/seed_<s>/``). report.py reads
that directory as it reads the runs and gives the same tables: what a paper publishes beside its tables, a few
tens of kB a run where the run directory holds a checkpoint of a hundred MB.

    python benchmarks/report.py runs/overfit_text_suite --archive benchmarks/results/overfit_text
    python benchmarks/report.py benchmarks/results/overfit_text --out /tmp/report   # the tables again, in seconds
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.reporting.runs import collect
from lit_modules.core.errors import DataError
from lit_modules.core.files import atomic_write

SAMPLE_FILES = ("samples.jsonl", "samples_at_best.jsonl")
# what the report reads of a samples record is its metrics; the prompt and continuation (tokens and text) are
# most of a file's size and stay with the run
KEPT_FIELDS = ("decoding", "prompt_index", "metrics")


def archive_runs(runs_dir: Path, out: Path) -> int:
    """Copy every finished run under ``runs_dir`` (its results.json, or failed.json for a failed job; an
    unfinished job has nothing to keep) into ``out``, keeping each run's path below ``runs_dir``; the number of
    runs copied. Each file is written atomically, results.json last (the file that marks a run finished)."""
    check_archive_dir(runs_dir, out)
    copied = 0
    for run in collect(runs_dir):
        if run.path.name not in ("results.json", "failed.json"):
            continue  # unfinished (a checkpoint and no outcome)
        target = out / run.path.parent.relative_to(runs_dir)
        if run.path.name == "results.json":
            for name in SAMPLE_FILES:
                if (run.path.parent / name).is_file():
                    atomic_write(target / name, per_prompt_metrics(run.path.parent / name))
        atomic_write(target / run.path.name, run.path.read_bytes())
        copied += 1
    return copied


def check_archive_dir(runs_dir: Path, out: Path) -> None:
    """One DataError when ``out`` lies inside ``runs_dir`` (a later report of the runs would read each run twice)."""
    if out.resolve().is_relative_to(runs_dir.resolve()):
        raise DataError(f"--archive {out} is inside {runs_dir}, where a report would read each run twice; use another")


def per_prompt_metrics(samples: Path) -> str:
    """A samples.jsonl with each record cut to ``KEPT_FIELDS``."""
    lines = samples.read_text(encoding="utf-8").splitlines()
    records = (json.loads(line) for line in lines if line.strip())
    return "".join(json.dumps({k: r[k] for k in KEPT_FIELDS if k in r}) + "\n" for r in records)
