"""Compare finished runs: a Markdown report, a CSV and PNG plots.

    python benchmarks/report.py runs/suite            # writes report.md, results.csv, plots/ there
    python benchmarks/report.py runs/suite --out docs  # somewhere else
    python benchmarks/report.py runs/suite --readme README.md  # also the tables between its suite-tables markers

Reads every ``results.json`` under the directory (and ``failed.json`` of failed sweep jobs).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli import fail
from lit_modules.util import atomic_write_text

# Columns: (metric key or template with {d} = decoding, header, how "best" is judged)
#   "min": lowest; "human": closest to the human (real-text) row; "source": closest to the entropy rate.
MODEL_COLUMNS = [
    ("tf/ppl", "ppl", "min"),
    ("tf/entropy", "entropy", "source"),
    ("tf/ece", "ECE", "min"),
    ("gt/forward_kl", "KL(P‖p)", "min"),
    ("gt/reverse_kl", "KL(p‖P)", "min"),
]
DECODING_COLUMNS = [
    ("gen/{d}/seq_rep_4", "seq-rep-4", "human"),
    ("gen/{d}/distinct_4", "distinct-4", "human"),
    ("gen/{d}/self_bleu_4", "self-BLEU-4", "human"),
    ("gt/{d}/sample_nll", "sample NLL", "human"),
]


class Run:
    def __init__(self, path: Path, data: dict, failed: bool = False) -> None:
        self.path, self.data, self.failed = path, data, failed
        self.objective = data.get("objective", path.parent.name)
        self.metrics: dict[str, float] = data.get("metrics", {})

    @property
    def decodings(self) -> list[str]:
        return [d for d in self.data.get("config", {}).get("eval", {}).get("decodings", [])]


def collect(root: Path) -> list[Run]:
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory of runs")
    runs = []
    for path in sorted(root.rglob("results.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
                raise ValueError("no metrics")
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


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def best_index(values: list[float | None], rule: str, target: float | None) -> int | None:
    scored = []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        if rule == "min":
            scored.append((v, i))
        elif target is not None:
            scored.append((abs(v - target), i))
    return min(scored)[1] if scored else None


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tables(runs: list[Run]) -> tuple[str, list[dict]]:
    """The report's Markdown tables and the flat CSV rows."""
    done = [r for r in runs if not r.failed]
    entropy_rate = next((r.metrics["gt/entropy_rate"] for r in done if "gt/entropy_rate" in r.metrics), None)
    columns = [c for c in MODEL_COLUMNS if any(c[0] in r.metrics for r in done)]
    parts, csv_rows = [], []

    # 1. one row per objective: teacher-forced and ground-truth metrics, budget
    values = [[r.metrics.get(key) for key, _, _ in columns] for r in done]
    best = [best_index([v[j] for v in values], rule, entropy_rate) for j, (_, _, rule) in enumerate(columns)]
    rows = []
    for i, r in enumerate(done):
        t = r.data.get("timing", {})
        cells = [f"**{fmt(v)}**" if best[j] == i else fmt(v) for j, v in enumerate(values[i])]
        rows.append(
            [
                r.objective,
                *cells,
                str(t.get("steps", "–")),
                f"{t.get('train_tokens', 0):,}",
                f"{t.get('train_s', 0) + t.get('eval_s', 0):.0f} s",
            ]
        )
    if entropy_rate is not None:
        rows.append(["*source*", "–", fmt(entropy_rate), "–", "0", "0", "–", "–", "–"][: len(columns) + 4])
    for r in runs:
        if r.failed:
            rows.append([r.objective, f"**failed**: {r.data.get('error', '?')}"] + [""] * (len(columns) + 2))
    header = ["objective", *[h for _, h, _ in columns], "steps", "tokens", "wall"]
    parts.append("### Teacher-forced and ground truth (test split)\n\n" + markdown_table(header, rows))

    # 2. one row per (objective, decoding): generation metrics, and the human row
    gen_rows, gen_values, human = [], [], {}
    for r in done:
        for key, _, _ in DECODING_COLUMNS:
            human.setdefault(key, r.metrics.get(key.format(d="human")))
    for r in done:
        for d in r.decodings:
            gen_rows.append((r.objective, d))
            gen_values.append([r.metrics.get(key.format(d=d)) for key, _, _ in DECODING_COLUMNS])
    present = [j for j, (key, _, _) in enumerate(DECODING_COLUMNS) if any(v[j] is not None for v in gen_values)]
    best = {
        j: best_index([v[j] for v in gen_values], DECODING_COLUMNS[j][2], human[DECODING_COLUMNS[j][0]])
        for j in present
    }
    rows = []
    for i, ((objective, d), vals) in enumerate(zip(gen_rows, gen_values, strict=True)):
        rows.append([objective, d, *[f"**{fmt(vals[j])}**" if best[j] == i else fmt(vals[j]) for j in present]])
    rows.append(["*human*", "real text", *[fmt(human[DECODING_COLUMNS[j][0]]) for j in present]])
    header = ["objective", "decoding", *[DECODING_COLUMNS[j][1] for j in present]]
    parts.append("### Generation (continuations of held-out prompts)\n\n" + markdown_table(header, rows))

    for r in runs:
        row = {"objective": r.objective, "status": "failed" if r.failed else "done", "path": str(r.path.parent)}
        if r.failed:
            row["error"] = r.data.get("error", "")
        else:
            row.update({f"timing/{k}": v for k, v in r.data.get("timing", {}).items()})
            row.update(r.metrics)
        csv_rows.append(row)
    return "\n\n".join(parts) + "\n", csv_rows


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


README_BEGIN, README_END = "<!-- suite-tables:begin -->", "<!-- suite-tables:end -->"


def update_readme(path: Path, body: str) -> None:
    """Replace what lies between the README's suite-tables markers with the report's tables."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--readme {path}: {e.strerror}") from None
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"--readme {path} has no {README_BEGIN} ... {README_END} block to fill")
    atomic_write_text(path, text[: start + len(README_BEGIN)] + "\n" + body + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a directory holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md, results.csv, plots/ (default: runs)")
    parser.add_argument("--readme", type=Path, help="also put the tables into this Markdown file's suite-tables block")
    args = parser.parse_args(argv)
    try:
        runs = collect(args.runs)
    except ValueError as e:
        fail(str(e))
    out = args.out or args.runs
    body, csv_rows = tables(runs)
    if args.readme:  # checked before anything is written
        try:
            update_readme(args.readme, body)
        except ValueError as e:
            fail(str(e))
    from benchmarks.plots import make_plots

    plots = make_plots([r for r in runs if not r.failed], out / "plots")
    done = [r for r in runs if not r.failed]
    budget = ""
    if done:
        t = done[0].data.get("timing", {})
        budget = (
            f"Same data, model seed, optimiser and step budget for every objective: {t.get('steps')} steps, "
            f"{t.get('train_tokens', 0):,} training tokens each. Best value per column in bold: lowest for "
            "ppl, ECE and the KLs; closest to the source's entropy rate for the predictive entropy; closest "
            "to real text (the *human* row) for the generation metrics.\n\n"
        )
    images = "".join(f"![{p.stem}](plots/{p.name})\n\n" for p in plots)
    head = f"# objbench report\n\n{len(done)} runs, {len(runs) - len(done)} failed, from `{args.runs}`.\n\n"
    report = f"{head}{budget}{body}\n{images}"
    atomic_write_text(out / "report.md", report)
    write_csv(out / "results.csv", csv_rows)
    print(body)
    print(f"report: {out / 'report.md'}\ncsv: {out / 'results.csv'}\nplots: {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
