"""The compact table of the comparisons along temperature, for a README: per objective, its matched temperature,
its NLL and ECE differences from MLE at T = 1 and there, the dominance verdict, its ECE against temperature-scaled
MLE's, and where its sampled text stands against MLE's (``docs/temperature.md``)."""

from __future__ import annotations

from benchmarks.reporting.frontier import caccia_margins, compare_frontiers, frontier_verdict
from benchmarks.reporting.runs import Row
from benchmarks.reporting.stats import paired_difference
from benchmarks.reporting.tables import BASELINE, fmt_interval, markdown_table
from benchmarks.reporting.temperature import compare, trained_ece, verdict


def temperature_headline(rows: dict[str, Row], seeds: list[int]) -> str | None:
    """One compact table for a README: per objective its matched temperature, its NLL and ECE differences from
    MLE at T = 1 and at that temperature, the dominance verdict, its ECE as trained against temperature-scaled
    MLE's, and where its sampled text stands against MLE's: on the synthetic source the margin of its T = 1 point
    against MLE's temperature curve in the plane of Caccia et al., else its best quality gap to MLE's sampled
    frontier."""
    comparison = compare(rows, seeds)
    if comparison is None or not comparison.matched_t:
        return None
    frontier = compare_frontiers(rows, seeds)
    caccia = caccia_margins(rows, seeds)
    baseline = rows[BASELINE]

    def cell(kind: str, label: str, metric: str) -> str:
        delta = getattr(comparison, kind).get((label, metric))
        mark = " †" if (kind, label, metric) in comparison.significant else ""
        return fmt_interval(delta, signed=True) + mark if delta else "–"

    table = []
    for label, row in rows.items():
        if label == BASELINE:
            continue
        matched_t = comparison.matched_t.get(label)
        margin = comparison.margin.get(label)
        scaled = "–"
        if all("ts/ece" in baseline.runs[s].metrics for s in seeds):
            own = [trained_ece(row.runs[s]) for s in seeds]
            scaled = fmt_interval(paired_difference(own, [baseline.runs[s].metrics["ts/ece"] for s in seeds]), True)
        gap = frontier.best.get(label) if frontier is not None else None
        if label in caccia:
            sampled = f"{fmt_interval(caccia[label], signed=True)} ({verdict(caccia[label])})"
        else:
            sampled = f"{fmt_interval(gap, signed=True)} ({frontier_verdict(gap)})" if gap else "–"
        table.append(
            [
                label,
                fmt_interval(matched_t) if matched_t else "outside the grid",
                cell("at_one", label, "nll"),
                cell("matched", label, "nll"),
                cell("at_one", label, "ece"),
                cell("matched", label, "ece"),
                verdict(margin) if margin else "–",
                scaled,
                sampled,
            ]
        )
    header = [
        "objective",
        "T of equal entropy",
        "Δ NLL at T = 1",
        "Δ NLL at that T",
        "Δ ECE at T = 1",
        "Δ ECE at that T",
        "MLE at some T",
        "ECE − MLE scaled",
        "sampled text against MLE's",
    ]
    return markdown_table(header, table)
