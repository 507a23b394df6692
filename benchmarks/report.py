"""Compare finished runs over seeds: a Markdown report, a CSV and PNG plots.

    python benchmarks/report.py runs/suite            # writes report.md, results.csv, plots/ there
    python benchmarks/report.py runs/suite --out docs  # somewhere else
    python benchmarks/report.py runs/suite --readme README.md  # also the tables between its suite-tables markers

Reads every ``results.json`` under the directory (and ``failed.json`` of failed sweep jobs). Runs of
one objective (and knob setting) at several seeds form a row: every value is the mean over seeds
with its 95% interval, and beside it the difference from MLE paired by seed (and by prompt for
generation metrics), with a mark where it is significant after Holm's correction over every cell
(``benchmarks.stats``). Every run must share the budget, data, model, optimiser and evaluation.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.cli import config_differences, fail
from benchmarks.stats import Interval, holm, mean_interval, paired_difference
from lit_modules.util import atomic_write_text
from objectives.base import objective_knobs

BASELINE = "mle"
ALPHA = 0.05  # family-wise error rate of the significance marks (Holm)

# Columns: (metric key or template with {d} = decoding, header, how "best" is judged)
#   "min": lowest; "max": highest; "human": closest to the human (real-text) row; "source": closest to the
#   entropy rate.
MODEL_COLUMNS = [
    ("tf/nll", "NLL", "min"),
    ("tf/entropy", "entropy", "source"),
    ("tf/ece", "ECE", "min"),
    ("tf/brier", "Brier", "min"),
    ("tf/abs_log_z", "\\|log Z\\|", "min"),
    ("gt/forward_kl", "KL(P‖p)", "min"),
    ("gt/reverse_kl", "KL(p‖P)", "min"),
]
DECODING_COLUMNS = [
    ("gen/{d}/seq_rep_4", "seq-rep-4", "human"),
    ("gen/{d}/distinct_4", "distinct-4", "human"),
    ("gen/{d}/self_bleu_4", "self-BLEU-4", "human"),
    ("gt/{d}/sample_nll", "sample NLL", "human"),
    ("gen/{d}/mauve", "MAUVE", "max"),  # real text with the mauve extra: per run, over the k-means seeds' mean
]
# Config parts every compared run must share (the seed, and data.seed that follows it, may differ).
SHARED = ("data", "model", "optim", "eval", "trainer.max_steps", "trainer.precision", "trainer.gradient_clip_val")


class Run:
    def __init__(self, path: Path, data: dict, failed: bool = False) -> None:
        self.path, self.data, self.failed = path, data, failed
        self.config: dict = data.get("config") or {}
        self.objective = data.get("objective", path.parent.name)
        self.seed = self.config.get("seed")
        self.metrics: dict[str, float] = data.get("metrics", {})
        self._per_prompt: dict[str, list[float]] | None = None

    @property
    def decodings(self) -> list[str]:
        return list(self.config.get("eval", {}).get("decodings", []))

    def per_prompt(self) -> dict[str, list[float]]:
        """Per-continuation values from samples.jsonl, by metric name (empty where not saved)."""
        if self._per_prompt is None:
            self._per_prompt = {}
            path = self.path.parent / "samples.jsonl"
            if path.is_file():
                values: dict[str, list[float]] = defaultdict(list)
                for line in path.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    for key, value in record.get("metrics", {}).items():
                        values[key].append(value)
                self._per_prompt = dict(values)
        return self._per_prompt


def collect(root: Path) -> list[Run]:
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory of runs")
    runs = []
    for path in sorted(root.rglob("results.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
                raise ValueError("no metrics")
            bad = [k for k, v in data["metrics"].items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
            if bad:
                raise ValueError(f"metric {bad[0]!r} is {data['metrics'][bad[0]]!r}, not a number")
            history = data.get("history", {}).get("val/nll", [])
            if not isinstance(history, list) or not all(
                isinstance(h, list) and len(h) == 2 and all(isinstance(x, (int, float)) for x in h) for h in history
            ):
                raise ValueError("history/val/nll is not a list of [step, value] pairs")
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{path} is not a valid results file ({str(e).splitlines()[0][:80]}); delete it or rerun that job"
            ) from None
        runs.append(Run(path, data))
    for path in sorted(root.rglob("failed.json")):
        if (path.parent / "results.json").exists():
            continue  # a later rerun succeeded
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = {"error": "failed (unreadable failed.json)"}
        runs.append(Run(path, data, failed=True))
    if not runs:
        raise ValueError(f"{root} holds no runs (no results.json or failed.json below it)")
    return runs


def _pick(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def shared_config(config: dict) -> dict:
    out = {key: _pick(config, key) for key in SHARED}
    if isinstance(out["data"], dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "seed"}
    return out


def check_comparable(runs: list[Run]) -> None:
    """Every finished run shares SHARED, or a ValueError names two runs and what differs."""
    done = [r for r in runs if not r.failed]
    if not done:
        return
    first = shared_config(done[0].config)
    for r in done[1:]:
        diff = [f"{key}: {a!r} vs {b!r}" for key, a, b in config_differences(first, shared_config(r.config))]
        if diff:
            raise ValueError(
                f"{done[0].path.parent} and {r.path.parent} were run with different configs "
                f"({'; '.join(diff[:3])}); report them separately"
            )


def knob_label(objective: str, knobs: dict) -> str:
    return f"{objective} ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else objective


def _knobs(run: Run) -> dict:
    cfg = run.config.get("objective", {})
    return objective_knobs(cfg)


@dataclass
class Row:
    """One objective (and knob setting): its runs by seed, and what the report computed."""

    objective: str  # the row's name: the objective, with its knobs where one objective has several settings
    base: str  # the objective's name
    runs: dict[int, Run] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)

    # what the plots read, as from one run: means, interval half-widths, decodings, history, reliability
    @property
    def metrics(self) -> dict[str, float]:
        return {k: v.mean for k, v in self.intervals.items()}

    @property
    def half(self) -> dict[str, float]:
        return {k: v.half for k, v in self.intervals.items()}

    @property
    def decodings(self) -> list[str]:
        return next(iter(self.runs.values())).decodings if self.runs else []

    @property
    def data(self) -> dict:
        histories = [r.data.get("history", {}).get("val/nll", []) for r in self.runs.values()]
        steps = sorted(set.intersection(*(set(s for s, _ in h) for h in histories))) if histories else []
        by_step = [dict(map(tuple, h)) for h in histories]
        mean_history = [[s, float(np.mean([h[s] for h in by_step]))] for s in steps]
        bins = [r.data.get("reliability") for r in self.runs.values() if r.data.get("reliability")]
        reliability = {}
        if bins:
            count = np.sum([b["count"] for b in bins], axis=0)
            weighted = {
                k: np.sum([np.multiply(b[k], b["count"]) for b in bins], axis=0) for k in ("confidence", "accuracy")
            }
            reliability = {k: (v / np.maximum(count, 1)).tolist() for k, v in weighted.items()}
            reliability["count"] = count.tolist()
        return {"history": {"val/nll": mean_history}, "reliability": reliability}


def group(runs: list[Run]) -> dict[str, Row]:
    """Rows by label; one objective with several knob settings gets one row per setting."""
    settings: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        if not r.failed and _knobs(r) not in settings[r.objective]:
            settings[r.objective].append(_knobs(r))
    rows: dict[str, Row] = {}
    for r in runs:
        several = len(settings[r.objective]) > 1
        label = knob_label(r.objective, _knobs(r)) if several else r.objective
        row = rows.setdefault(label, Row(label, r.objective))
        seed = r.seed if isinstance(r.seed, int) else -1
        if r.failed:
            row.failed[seed] = r.data.get("error", "?")
        elif seed in row.runs:
            raise ValueError(
                f"{row.runs[seed].path.parent} and {r.path.parent} are both {label} at seed {seed}; report one of them"
            )
        else:
            row.runs[seed] = r
    return dict(sorted(rows.items()))


def common_seeds(rows: dict[str, Row]) -> tuple[list[int], list[str]]:
    """Seeds every row finished, and the (row, seed) jobs missing from that full set."""
    done = [row for row in rows.values() if row.runs]
    every = sorted({s for row in rows.values() for s in (*row.runs, *row.failed)})
    common = sorted(set.intersection(*(set(row.runs) for row in done))) if done else []
    missing = []
    for row in rows.values():
        for s in every:
            if s not in row.runs:
                why = "failed" if s in row.failed else "absent"
                missing.append(f"{row.objective} seed {s} ({why})")
    return common, missing


def metric_values(row: Row, key: str, seeds: list[int]) -> np.ndarray | None:
    """(S, P) per-prompt values where every seed saved them, else (S,) per-run values; None if absent."""
    runs = [row.runs[s] for s in seeds]
    per_prompt = [r.per_prompt().get(key) for r in runs]
    if all(p is not None for p in per_prompt) and len({len(p) for p in per_prompt}) == 1:
        return np.array(per_prompt, dtype=np.float64)
    values = [r.metrics.get(key) for r in runs]
    if any(v is None for v in values):
        return None
    return np.array(values, dtype=np.float64)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_interval(interval: Interval | None, signed: bool = False) -> str:
    if interval is None or not math.isfinite(interval.mean):
        return "–"
    mean = f"{interval.mean:+.3f}" if signed else fmt(interval.mean)
    return mean if not math.isfinite(interval.half) else f"{mean} ± {fmt(interval.half)}"


def best_label(cells: dict[str, Interval], rule: str, target: float | None) -> str | None:
    """The best row by mean, if its interval separates it from the runner-up's; else None."""

    def distance(v: float) -> float:
        return {"min": v, "max": -v}.get(rule, abs(v - target) if target is not None else 0.0)

    def worst_case(i: Interval) -> tuple[float, float]:  # (best, worst) distance over the interval
        if rule == "min":
            return i.low, i.high
        if rule == "max":
            return -i.high, -i.low
        near = 0.0 if i.low <= target <= i.high else min(abs(i.low - target), abs(i.high - target))
        return near, max(abs(i.low - target), abs(i.high - target))

    if rule not in ("min", "max") and target is None:
        return None
    ranked = sorted((distance(i.mean), label) for label, i in cells.items() if math.isfinite(i.mean))
    if len(ranked) < 2:
        return None
    first, second = cells[ranked[0][1]], cells[ranked[1][1]]
    if not (math.isfinite(first.half) and math.isfinite(second.half)):
        return None
    return ranked[0][1] if worst_case(first)[1] < worst_case(second)[0] else None


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    body: str  # the Markdown tables
    notes: str  # seeds, missing jobs, budget: the lines above the tables
    csv_rows: list[dict]
    rows: dict[str, Row]


def build(runs: list[Run]) -> Report:
    """Group runs into rows, compute every interval and paired difference, and lay out the tables."""
    check_comparable(runs)
    rows = group(runs)
    seeds, missing = common_seeds(rows)
    done = {label: row for label, row in rows.items() if row.runs}
    any_run = next((r for row in done.values() for r in row.runs.values()), None)
    decodings = any_run.decodings if any_run else []
    model_keys = [key for key, _, _ in MODEL_COLUMNS]
    gen_keys = [key.format(d=d) for d in [*decodings, "human"] for key, _, _ in DECODING_COLUMNS]
    for row in done.values():
        for key in [*model_keys, *gen_keys, "tf/ppl", "val/nll"]:
            values = metric_values(row, key, seeds) if seeds else None
            if values is not None:
                row.intervals[key] = mean_interval(values)
    # paired differences from MLE, Holm-corrected over every cell at once
    baseline = done.get(BASELINE)
    deltas: dict[tuple[str, str], Interval] = {}
    if baseline is not None:
        for label, row in done.items():
            if label == BASELINE:
                continue
            for key in [*model_keys, *[k.format(d=d) for d in decodings for k, _, _ in DECODING_COLUMNS]]:
                a, b = metric_values(row, key, seeds), metric_values(baseline, key, seeds)
                if a is not None and b is not None and a.shape == b.shape:
                    deltas[(label, key)] = paired_difference(a, b)
    adjusted = dict(zip(deltas, holm([d.p for d in deltas.values()]), strict=True))
    significant = {cell for cell, p in adjusted.items() if math.isfinite(p) and p < ALPHA}

    def delta_cell(label: str, key: str) -> str:
        d = deltas.get((label, key))
        return "–" if d is None else fmt_interval(d, signed=True) + (" †" if (label, key) in significant else "")

    entropy_rate = next(  # the source's, the same in every run
        (
            r.metrics["gt/entropy_rate"]
            for row in done.values()
            for r in row.runs.values()
            if "gt/entropy_rate" in r.metrics
        ),
        None,
    )
    parts = []

    # 1. teacher-forced and ground truth: one row per objective
    columns = [c for c in MODEL_COLUMNS if any(c[0] in row.intervals for row in done.values())]
    best = {
        key: best_label(
            {lb: row.intervals[key] for lb, row in done.items() if key in row.intervals}, rule, entropy_rate
        )
        for key, _, rule in columns
    }
    table = []
    for label, row in done.items():
        cells = []
        for key, _, _ in columns:
            text = fmt_interval(row.intervals.get(key))
            cells.append(f"**{text}**" if best[key] == label else text)
        nll = [row.runs[s].metrics.get("tf/nll") for s in seeds]
        spread = float(np.std(nll, ddof=1)) if len(nll) > 1 and None not in nll else float("nan")
        walls = [r.data.get("timing", {}) for r in row.runs.values()]
        wall = np.mean([t.get("train_s", 0) + t.get("eval_s", 0) for t in walls])
        table.append([label, *cells, fmt(spread, 3), f"{wall:.0f} s"])
    if entropy_rate is not None and columns:
        source = {"tf/entropy": fmt(entropy_rate), "gt/forward_kl": "0", "gt/reverse_kl": "0"}
        source["tf/nll"] = fmt(entropy_rate)
        table.append(["*source*", *[source.get(key, "–") for key, _, _ in columns], "–", "–"])
    for label, row in rows.items():
        if not row.runs:
            table.append([label, f"**failed**: {next(iter(row.failed.values()))}"] + [""] * (len(columns) + 1))
    header = ["objective", *[h for _, h, _ in columns], "NLL sd", "wall"]
    parts.append("### Teacher-forced and ground truth (test split)\n\n" + markdown_table(header, table))

    # 2. generation: one row per (objective, decoding), and the human row
    gen_columns = [
        c
        for c in DECODING_COLUMNS
        if any(c[0].format(d=d) in row.intervals for row in done.values() for d in decodings)
    ]
    human_row = done.get(BASELINE) or next(iter(done.values()), None)
    human = {key: human_row.intervals.get(key.format(d="human")) for key, _, _ in gen_columns} if human_row else {}
    table = []
    best = {}
    for d in decodings:
        for key, _, rule in gen_columns:
            k = key.format(d=d)
            target = human.get(key).mean if human.get(key) is not None else None
            best[k] = best_label({lb: row.intervals[k] for lb, row in done.items() if k in row.intervals}, rule, target)
    for label, row in done.items():
        for d in decodings:
            cells = []
            for key, _, _ in gen_columns:
                k = key.format(d=d)
                text = fmt_interval(row.intervals.get(k))
                cells.append(f"**{text}**" if best.get(k) == label else text)
            table.append([label, d, *cells])
    table.append(
        ["*human*", "real text", *[fmt(human[key].mean) if human.get(key) else "–" for key, _, _ in gen_columns]]
    )
    header = ["objective", "decoding", *[h for _, h, _ in gen_columns]]
    if gen_columns:
        parts.append("### Generation (continuations of held-out prompts)\n\n" + markdown_table(header, table))

    # 3. paired differences from MLE
    if baseline is not None and len(done) > 1:
        others = [label for label in done if label != BASELINE]
        table = [[label, *[delta_cell(label, key) for key, _, _ in columns]] for label in others]
        parts.append(
            "### Difference from MLE (paired by seed)\n\n"
            + markdown_table(["objective", *[f"Δ {h}" for _, h, _ in columns]], table)
        )
        table = [
            [label, d, *[delta_cell(label, key.format(d=d)) for key, _, _ in gen_columns]]
            for label in others
            for d in decodings
        ]
        if table and gen_columns:
            parts.append(
                "### Generation: difference from MLE (paired by seed and prompt)\n\n"
                + markdown_table(["objective", "decoding", *[f"Δ {h}" for _, h, _ in gen_columns]], table)
            )

    notes = []
    if any_run is not None:
        t = any_run.data.get("timing", {})
        notes.append(
            f"Every objective: {t.get('steps')} steps, {t.get('train_tokens', 0):,} training tokens, the same data, "
            f"optimiser and evaluation; at seed s every objective starts from the same weights and reads the same "
            f"batches. Seeds: {', '.join(map(str, seeds)) or 'none in common'}."
        )
    notes.append(
        f"Each cell: mean ± half-width of its {int(0.95 * 100)}% interval over seeds (Student's t; generation "
        "metrics of each continuation count the prompts' noise too: mean over seeds and prompts). "
        "Bold: the best value of a column (lowest NLL, ECE, Brier and KLs; "
        + (
            "entropy closest to the source's entropy rate; "
            if entropy_rate is not None
            else "entropy: nothing, as the entropy rate of real text is unknown (a calibrated model's entropy "
            "equals its NLL: compare the two columns); "
        )
        + "generation metrics closest to the human continuations, MAUVE highest), only where its interval does "
        "not overlap the "
        "runner-up's. NLL sd: standard deviation of test NLL over seeds. "
        f"Δ: objective − MLE at the same seed (and prompt); † significant at {ALPHA} after Holm's correction "
        f"over all {len(deltas)} cells."
    )
    if missing:
        notes.append(
            f"**Not every job finished**: compared on the common seeds only ({', '.join(map(str, seeds)) or 'none'}); "
            f"missing: {'; '.join(missing)}."
        )
    csv_rows = []
    for label, row in rows.items():
        for seed, r in sorted(row.runs.items()):
            csv_rows.append(
                {
                    "row": label,
                    "objective": row.base,
                    "seed": seed,
                    "status": "done",
                    "path": str(r.path.parent),
                    **{f"timing/{k}": v for k, v in r.data.get("timing", {}).items()},
                    **r.metrics,
                }
            )
        for seed, error in sorted(row.failed.items()):
            csv_rows.append({"row": label, "objective": row.base, "seed": seed, "status": "failed", "error": error})
        for key, i in row.intervals.items():
            entry = {
                "row": label,
                "objective": row.base,
                "seed": "mean",
                "status": "summary",
                "metric": key,
                "mean": i.mean,
                "low": i.low,
                "high": i.high,
                "n_seeds": i.n_seeds,
            }
            d = deltas.get((label, key))
            if d is not None:
                entry.update(
                    {
                        "delta": d.mean,
                        "delta_low": d.low,
                        "delta_high": d.high,
                        "p": d.p,
                        "p_holm": adjusted[(label, key)],
                    }
                )
            csv_rows.append(entry)
    return Report("\n\n".join(parts) + "\n", "\n\n".join(notes) + "\n", csv_rows, rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def update_readme(path: Path, body: str, block: str = "suite-tables") -> None:
    """Replace what lies between the README's ``<!-- BLOCK:begin -->`` and ``<!-- BLOCK:end -->`` markers
    with the report's tables."""
    begin, end_marker = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--readme {path}: {e.strerror}") from None
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"--readme {path} has no {begin} ... {end_marker} block to fill")
    atomic_write_text(path, text[: start + len(begin)] + "\n" + body + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a directory holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md, results.csv, plots/ (default: runs)")
    parser.add_argument("--readme", type=Path, help="also put the tables into this Markdown file's block (below)")
    parser.add_argument(
        "--readme-block", default="suite-tables", help="the block's name: <!-- NAME:begin --> ... <!-- NAME:end -->"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a job failed (after writing everything; make bench uses it)"
    )
    args = parser.parse_args(argv)
    try:
        runs = collect(args.runs)
        report = build(runs)
    except ValueError as e:
        fail(str(e))
    out = args.out or args.runs
    body = report.notes + "\n" + report.body
    if args.readme:  # checked before anything is written
        try:
            update_readme(args.readme, body, args.readme_block)
        except ValueError as e:
            fail(str(e))
    from benchmarks.plots import make_plots

    plots = make_plots([row for row in report.rows.values() if row.runs], out / "plots")
    n_done = sum(len(row.runs) for row in report.rows.values())
    n_failed = sum(len(row.failed) for row in report.rows.values())
    images = "".join(f"![{p.stem}](plots/{p.name})\n\n" for p in plots)
    head = f"# objbench report\n\n{n_done} runs, {n_failed} failed, from `{args.runs}`.\n\n"
    atomic_write_text(out / "report.md", f"{head}{body}\n{images}")
    write_csv(out / "results.csv", report.csv_rows)
    print(body)
    print(f"report: {out / 'report.md'}\ncsv: {out / 'results.csv'}\nplots: {', '.join(str(p) for p in plots)}")
    if args.strict and n_failed:
        failed = [f"{row.objective} seed {s}" for row in report.rows.values() for s in sorted(row.failed)]
        print(f"error: {n_failed} job(s) failed: {', '.join(failed)} (see their failed.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
