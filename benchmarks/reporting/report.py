"""Compare finished runs over seeds: a Markdown report, a CSV and PNG plots.

Reads every ``results.json`` under a directory (and ``failed.json`` of failed sweep jobs). Runs of one
objective (and knob setting) at several seeds form a row: every value is the mean over seeds with its 95%
interval, and beside it the difference from MLE paired by seed (and by prompt for generation metrics), with a
mark where it is significant after Holm's correction over every cell (``benchmarks/reporting/stats.py``).
Every run must share the budget, data, model, optimiser and evaluation.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmarks.reporting.frontier import frontier_keys, frontier_section
from benchmarks.reporting.runs import (
    Row,
    check_comparable,
    collect,
    common_seeds,
    group,
    jobs_by_outcome,
    metric_values,
    outcome,
)
from benchmarks.reporting.stats import holm_within, mean_interval, paired_difference
from benchmarks.reporting.tables import (
    BASELINE,
    DECODING_COLUMNS,
    FREQUENCY_COLUMNS,
    MODEL_COLUMNS,
    OOD_COLUMNS,
    Differences,
    difference_tables,
    frequency_table,
    generation_table,
    headline_table,
    memorisation_keys,
    memorisation_tables,
    model_table,
    shifted_tables,
)
from benchmarks.reporting.temperature import temperature_keys, temperature_section
from benchmarks.reporting.temperature_summary import temperature_headline
from lit_modules.core.errors import DataError
from lit_modules.core.files import atomic_write

ALPHA = 0.05  # family-wise error rate of the significance marks (Holm)


@dataclass
class Report:
    body: str  # the Markdown tables
    notes: str  # seeds, missing jobs, budget: the lines above the tables
    csv_rows: list[dict]
    rows: dict[str, Row]
    headline: str = ""  # one compact table for a README, with the line that says how to read it
    temperature: str = ""  # the temperature and frontier tables (also in the body)
    temperature_headline: str = ""  # their compact table for a README

    def blocks(self, name: str) -> dict[str, str]:
        """What a Markdown file's blocks receive: ``<name>-tables`` every table, ``<name>-headline`` the
        compact one, ``<name>-temperature`` the comparisons along temperature and the sampled frontier."""
        return {
            f"{name}-tables": self.notes + "\n" + self.body,
            f"{name}-headline": self.headline,
            f"{name}-temperature": self.temperature,
            f"{name}-temperature-headline": self.temperature_headline,
        }


def model_keys() -> list[str]:
    return [key for key, _, _ in MODEL_COLUMNS]


def frequency_keys() -> list[str]:
    return [key for key, _, _ in FREQUENCY_COLUMNS]


def generation_keys(decodings: list[str]) -> list[str]:
    return [key.format(d=d) for d in decodings for key, _, _ in DECODING_COLUMNS]


def fill_intervals(done: dict[str, Row], seeds: list[int], decodings: list[str]) -> None:
    """Every row's mean and interval over the common seeds, per metric."""
    for row in done.values():
        keys = [
            *model_keys(),
            *frequency_keys(),
            *shifted_keys(done),
            *memorisation_keys(done),
            *generation_keys([*decodings, "human"]),
            *temperature_keys(done),
            *frontier_keys(done),
        ]
        for key in [*keys, "tf/ppl", "val/nll"]:
            values = metric_values(row, key, seeds) if seeds else None
            if values is not None:
                row.intervals[key] = mean_interval(values)


def paired_differences(done: dict[str, Row], seeds: list[int], decodings: list[str]) -> Differences:
    """Each row's difference from MLE, paired by seed (and prompt), Holm-corrected within its family: the main
    tables' cells (teacher-forced, ground truth, generation) together, the frequency table's, the shifted
    splits' and the memorisation tables' each apart (so that adding a table never moves the marks of another).
    The rows of oracles (objectives that read the true source in training: bounds, not methods) are each
    family's second family, ``<family>/oracles``, so that adding a bound never moves a deployable row's marks."""
    families = {
        "main": [*model_keys(), *generation_keys(decodings)],
        "frequency": frequency_keys(),
        "shift": shifted_keys(done),
        "memorisation": memorisation_keys(done),
    }
    baseline = done.get(BASELINE)
    deltas, family_of = {}, {}
    for family, keys in families.items():
        for label, row in done.items():
            if baseline is None or label == BASELINE:
                continue
            for key in keys:
                a, b = metric_values(row, key, seeds), metric_values(baseline, key, seeds)
                if a is not None and b is not None and a.shape == b.shape:
                    deltas[(label, key)] = paired_difference(a, b)
                    family_of[(label, key)] = f"{family}/oracles" if row.oracle else family
    adjusted = holm_within({cell: d.p for cell, d in deltas.items()}, family_of.__getitem__)
    sizes = {name: 0 for family in families for name in (family, f"{family}/oracles")} | Counter(family_of.values())
    significant = {cell for cell, p in adjusted.items() if math.isfinite(p) and p < ALPHA}
    return Differences(deltas, adjusted, significant, sizes)


def shifted_keys(done: dict[str, Row]) -> list[str]:
    """The metrics of the shifted splits (ood/<split>/<metric>) some run has, in OOD_COLUMNS order."""
    present = {k for row in done.values() for r in row.runs.values() for k in r.metrics if k.startswith("ood/")}
    splits = sorted({k.split("/")[1] for k in present})
    return [f"ood/{s}/{metric}" for s in splits for metric, _, _ in OOD_COLUMNS if f"ood/{s}/{metric}" in present]


def source_entropy_rate(done: dict[str, Row]) -> float | None:
    """The synthetic source's entropy rate, the same in every run (None on real text)."""
    rates = (
        r.metrics["gt/entropy_rate"]
        for row in done.values()
        for r in row.runs.values()
        if "gt/entropy_rate" in r.metrics
    )
    return next(rates, None)


def oracle_family(done: dict[str, Row], families: dict[str, int]) -> str:
    """How the oracles' rows are tested, for the notes ('' when the report has none)."""
    names = [label for label, row in done.items() if row.oracle]
    if not names:
        return ""
    return (
        f"; the oracles' rows ({', '.join(names)}: they read the true source in training, bounds rather than "
        f"methods) are tested in families of their own ({families.get('main/oracles', 0)} cells of the main tables), "
        "so that a bound takes no power from the others"
    )


def report_notes(
    done: dict[str, Row], seeds: list[int], missing: list[str], entropy_rate, families: dict[str, int]
) -> str:
    """The lines above the tables: budget, seeds, how to read a cell, missing jobs."""
    any_run = next((r for row in done.values() for r in row.runs.values()), None)
    notes = []
    if any_run is not None:
        t = any_run.data.get("timing", {})
        notes.append(
            f"Every objective: {t.get('steps')} steps, {t.get('train_tokens', 0):,} training tokens, the same data, "
            f"optimiser and evaluation; at seed s every objective starts from the same weights and reads the same "
            f"batches. Seeds: {', '.join(map(str, seeds)) or 'none in common'}."
        )
        if "best_step" in any_run.data:
            steps = sorted({r.data.get("best_step") for row in done.values() for r in row.runs.values()} - {None})
            notes.append(
                "At the best validation step: every run's model where its validation NLL was lowest (the model early "
                f"stopping keeps; steps {steps[0]}-{steps[-1]} here), not its final one."
                if steps
                else "At the best validation step: every run's model where its validation NLL was lowest."
            )
        start = any_run.data.get("init_from")
        notes.append(
            f"Fine-tuning: every run starts from the trained model of its seed (init_from, e.g. {start['source']}, "
            f"step {start.get('step')} of its run) with a fresh optimiser and schedule; "
            '"as in its papers" says whether the objective\'s papers train with it this way.'
            if start
            else 'From scratch: every run starts from random weights; "as in its papers" says whether the '
            "objective's papers train with it this way (else they fine-tune a trained model)."
        )
    entropy = (
        "entropy closest to the source's entropy rate; "
        if entropy_rate is not None
        else "entropy: nothing, as the entropy rate of real text is unknown (a calibrated model's entropy "
        "equals its NLL: compare the two columns); "
    )
    notes.append(
        f"Each cell: mean ± half-width of its {int(0.95 * 100)}% interval over seeds (Student's t; generation "
        "metrics of each continuation count the prompts' noise too: mean over seeds and prompts). "
        "Bold: the best value of a column (lowest NLL, ECE, Brier and KLs; " + entropy + "generation metrics "
        "closest to the human continuations, MAUVE highest), only where its interval does not overlap the "
        "runner-up's. NLL sd: standard deviation of test NLL over seeds. "
        f"Δ: objective − MLE at the same seed (and prompt); † significant at {ALPHA} after Holm's correction "
        f"over all {families['main']} cells of the main tables (the frequency, shifted-source and memorisation "
        f"tables: each its own family{oracle_family(done, families)})."
    )
    if missing:
        notes.append(
            f"**Not every job finished**: compared on the common seeds only ({', '.join(map(str, seeds)) or 'none'}); "
            f"missing: {'; '.join(missing)}."
        )
    return "\n\n".join(notes) + "\n"


def csv_rows(rows: dict[str, Row], differences: Differences) -> list[dict]:
    """One line per run (done or failed) and one per (row, metric) summary with its difference from MLE."""
    out = []
    for label, row in rows.items():
        for seed, r in sorted(row.runs.items()):
            timing = {f"timing/{k}": v for k, v in r.data.get("timing", {}).items()}
            out.append(
                {
                    "row": label,
                    "objective": row.base,
                    "seed": seed,
                    "status": "done",
                    "path": str(r.path.parent),
                    **timing,
                    **r.metrics,
                }
            )
        for seed, error in sorted(row.failed.items()):
            out.append({"row": label, "objective": row.base, "seed": seed, "status": outcome(error), "error": error})
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
            d = differences.deltas.get((label, key))
            if d is not None:
                entry.update(
                    {
                        "delta": d.mean,
                        "delta_low": d.low,
                        "delta_high": d.high,
                        "p": d.p,
                        "p_holm": differences.adjusted[(label, key)],
                    }
                )
            out.append(entry)
    return out


def build(runs: list) -> Report:
    """Group runs into rows, compute every interval and paired difference, and lay out the tables."""
    check_comparable(runs)
    rows = group(runs)
    seeds, missing = common_seeds(rows)
    done = {label: row for label, row in rows.items() if row.runs}
    failed = {label: row for label, row in rows.items() if not row.runs}
    any_run = next((r for row in done.values() for r in row.runs.values()), None)
    decodings = any_run.decodings if any_run else []
    fill_intervals(done, seeds, decodings)
    differences = paired_differences(done, seeds, decodings)
    entropy_rate = source_entropy_rate(done)
    parts = [
        model_table(done, failed, seeds, entropy_rate),
        frequency_table(done, differences),
        *shifted_tables(done, differences),
        *memorisation_tables(done, differences),
        generation_table(done, decodings),
    ]
    parts += difference_tables(done, decodings, differences)
    along_temperature = [p for p in (temperature_section(done, seeds), frontier_section(done, seeds)) if p]
    parts += along_temperature
    body = "\n\n".join(p for p in parts if p) + "\n"
    notes = report_notes(done, seeds, missing, entropy_rate, differences.families)
    headline = headline_table(done, differences, entropy_rate)
    if headline:
        headline = (
            f"Mean ± half-width of the 95% interval over seeds {', '.join(map(str, seeds))}; Δ: minus MLE at the same "
            f"seed (and prompt), † significant after Holm's correction over all {differences.families['main']} Δ "
            f"cells of the full report's main tables{oracle_family(done, differences.families)}.\n\n" + headline + "\n"
        )
    temperature = "\n\n".join(along_temperature) + "\n" if along_temperature else ""
    compact = temperature_headline(done, seeds)
    if compact:
        compact = (
            f"Mean ± half-width of the 95% interval over seeds {', '.join(map(str, seeds))}, differences from MLE "
            "paired by seed on the same test tokens (docs/temperature.md: how each column is computed).\n\n"
            + compact
            + "\n"
        )
    return Report(body, notes, csv_rows(rows, differences), rows, headline or "", temperature, compact or "")


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def update_readme(path: Path, blocks: dict[str, str]) -> None:
    """Replace what lies between each ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` pair of a Markdown file
    with ``blocks[NAME]``, for every NAME the file has; a file with none of them is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"--readme {path}: {e.strerror}") from None
    filled = 0
    for name, body in blocks.items():
        begin, end_marker = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        start, end = text.find(begin), text.find(end_marker)
        if start >= 0 and end > start:
            text, filled = text[: start + len(begin)] + "\n" + body + text[end:], filled + 1
    if not filled:
        names = " or ".join(f"<!-- {name}:begin --> ... <!-- {name}:end -->" for name in blocks)
        raise DataError(f"--readme {path} has no {names} block to fill")
    atomic_write(path, text)


def write_report(
    runs_dir: Path, out: Path | None = None, readmes: list[Path] = (), block: str = "suite", at: str = "end"
) -> Report:
    """report.md, results.csv and plots/ of the runs under ``runs_dir`` (into ``out``, by default the same
    directory), and the tables into the ``<block>-tables`` / ``<block>-headline`` blocks of each of ``readmes``
    (each checked before anything is written). ``at="best"``: of each run's best validation step's model, into
    report_at_best.md, results_at_best.csv and plots_at_best/."""
    from benchmarks.reporting.plots import make_plots

    report = build(collect(runs_dir, at))
    suffix = "" if at == "end" else f"_at_{at}"
    out = out or runs_dir
    body = report.notes + "\n" + report.body
    for readme in readmes:
        update_readme(readme, report.blocks(block))
    plots = make_plots([row for row in report.rows.values() if row.runs], out / f"plots{suffix}")
    n_done = sum(len(row.runs) for row in report.rows.values())
    jobs = jobs_by_outcome(report.rows.values())
    n_failed, n_unfinished = len(jobs["failed"]), len(jobs["unfinished"])
    images = "".join(f"![{p.stem}](plots{suffix}/{p.name})\n\n" for p in plots)
    unfinished = f", {n_unfinished} unfinished" if n_unfinished else ""
    head = f"# objbench report\n\n{n_done} runs, {n_failed} failed{unfinished}, from `{runs_dir}`.\n\n"
    atomic_write(out / f"report{suffix}.md", f"{head}{body}\n{images}")
    write_csv(out / f"results{suffix}.csv", report.csv_rows)
    print(body)
    print(
        f"report: {out / f'report{suffix}.md'}\ncsv: {out / f'results{suffix}.csv'}\n"
        f"plots: {', '.join(str(p) for p in plots)}"
    )
    return report
