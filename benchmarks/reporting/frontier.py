"""The sampled quality-diversity frontier (Caccia et al. 2020): does any decoding of an objective reach text that no
decoding of MLE reaches?

Every run samples the same prompts at the points of eval.frontier (temperatures and thresholds of truncation
decodings, ``frontier/<point>/``). Diversity is self-BLEU-4 (lower: more diverse); quality is the continuations'
NLL under the true source on synthetic data, else their NLL under the model itself (lower-better). MLE's frontier
at a seed is the lower envelope of all its points, each decoding's points joined by straight lines (a threshold
between two sampled ones lies near the segment): q*(s) = the best quality of MLE at self-BLEU-4 s or lower. A
point's quality gap is q − q*(s): below 0 it lies beyond MLE's frontier.

A frontier drawn from noisy points and a point placed against it share their noise when both come from the same
continuations (MLE's own points are never beyond its own frontier), and the best of many noisy points is better
than its true value. So the test splits the prompts: MLE's frontier comes from the first half's continuations
(``_a``), every run's points from the second half's (``_b``), MLE's included; an objective's gap is then compared
with MLE's own gap on the same footing, paired by seed: its best gap minus MLE's best gap (the placebo: an
objective that equals MLE gets 0 whatever the noise), and the same at T = 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from benchmarks.reporting.runs import Row, Run
from benchmarks.reporting.stats import Interval, mean_interval
from benchmarks.reporting.tables import BASELINE, fmt_interval, markdown_table
from benchmarks.reporting.temperature import dense, verdict

DIVERSITY = "self_bleu_4"
SEGMENT_POINTS = 50  # points of each straight segment between two sampled points of a family
POINT = re.compile(r"^(?P<family>[A-Za-z_]+?)(?P<value>[0-9.e+-]+)$")


def quality_measure(run: Run | Row) -> tuple[str, str] | None:
    """(metric, how it reads) of the frontier's quality in this run (or report row)."""
    names = {k.rsplit("/", 1)[1] for k in run.metrics if k.startswith("frontier/")}
    for metric, reads in (("true_nll", "NLL under the true source"), ("model_nll", "NLL under the model itself")):
        if metric in names:
            return metric, reads
    return None


def frontier_points(run: Run | Row, half: str = "") -> dict[str, dict[float, tuple[float, float]]]:
    """{family: {threshold: (diversity, quality)}} of a run's frontier points (``half`` "a" or "b": of that half
    of the prompts), quality lower-better."""
    measure = quality_measure(run)
    if measure is None:
        return {}
    suffix = f"_{half}" if half else ""
    out: dict[str, dict[float, tuple[float, float]]] = {}
    for key, value in run.metrics.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "frontier" or parts[2] != DIVERSITY + suffix:
            continue
        match = POINT.match(parts[1])
        quality = run.metrics.get(f"frontier/{parts[1]}/{measure[0]}{suffix}")
        if match is None or quality is None or not (math.isfinite(value) and math.isfinite(quality)):
            continue
        out.setdefault(match["family"], {})[float(match["value"])] = (value, quality)
    return out


def frontier_keys(rows: dict[str, Row]) -> list[str]:
    """Every frontier/ metric some run has (their means over seeds feed the plot)."""
    return sorted(
        {k for row in rows.values() for r in row.runs.values() for k in r.metrics if k.startswith("frontier/")}
    )


def envelope(points: dict[str, dict[float, tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """MLE's frontier: (diversities ascending, the best quality at that diversity or lower), from every family's
    points joined in threshold order."""
    dense = []
    for family in points.values():
        ordered = np.array([family[t] for t in sorted(family)])  # (n, 2)
        if len(ordered) == 1:
            dense.append(ordered)
            continue
        for a, b in zip(ordered[:-1], ordered[1:], strict=True):
            w = np.linspace(0.0, 1.0, SEGMENT_POINTS)[:, None]
            dense.append(a + w * (b - a))
    cloud = np.concatenate(dense)
    order = np.argsort(cloud[:, 0], kind="stable")
    diversity, quality = cloud[order, 0], np.minimum.accumulate(cloud[order, 1])
    return diversity, quality


def quality_gap(frontier: tuple[np.ndarray, np.ndarray], point: tuple[float, float]) -> float | None:
    """q − q*(s) of a point (s, q) against an envelope; None when the point is more diverse than every point of
    the envelope (no MLE decoding reaches that diversity)."""
    diversity, best = frontier
    i = np.searchsorted(diversity, point[0], side="right") - 1
    return None if i < 0 else float(point[1] - best[i])


@dataclass
class FrontierComparison:
    quality: str = ""
    at_sample: dict[str, Interval] = field(default_factory=dict)  # gap of T = 1 sampling − MLE's, paired
    best: dict[str, Interval] = field(default_factory=dict)  # its lowest gap − MLE's lowest gap, paired
    best_point: dict[str, str] = field(default_factory=dict)  # the point that gives its lowest gap at most seeds
    beyond_range: dict[str, int] = field(default_factory=dict)  # points more diverse than all of MLE's frontier


def gaps_against(frontier: tuple[np.ndarray, np.ndarray], run: Run) -> tuple[dict[str, float], int]:
    """The quality gap of each of a run's second-half points against a frontier, by point name, and how many of
    its points are more diverse than the whole frontier."""
    gaps, beyond = {}, 0
    for family, by_threshold in frontier_points(run, "b").items():
        for t, point in by_threshold.items():
            gap = quality_gap(frontier, point)
            if gap is None:
                beyond += 1
            else:
                gaps[f"{family}{t:g}"] = gap
    return gaps, beyond


def most_common(names: list[str]) -> str:
    """The most common of ``names``; a tie goes to the one that comes first (not to a set's order, which varies
    between processes with Python's string hashing)."""
    return max(names, key=names.count)


def compare_frontiers(rows: dict[str, Row], seeds: list[int]) -> FrontierComparison | None:
    """Every objective's second-half points against MLE's first-half frontier at the same seed, each minus MLE's
    own second-half points' gaps."""
    baseline = rows.get(BASELINE)
    if baseline is None or not seeds or not all(frontier_points(baseline.runs[s], "a") for s in seeds):
        return None
    out = FrontierComparison(quality=quality_measure(baseline.runs[seeds[0]])[1])
    frontiers = {s: envelope(frontier_points(baseline.runs[s], "a")) for s in seeds}
    placebo = {s: gaps_against(frontiers[s], baseline.runs[s])[0] for s in seeds}
    for label, row in rows.items():
        at_sample, best, names, beyond = [], [], [], 0
        for s in seeds:
            gaps, outside = gaps_against(frontiers[s], row.runs[s])
            beyond += outside
            if "T1" in gaps and "T1" in placebo[s]:
                at_sample.append(gaps["T1"] - placebo[s]["T1"])
            if gaps and placebo[s]:
                name = min(gaps, key=gaps.get)
                best.append(gaps[name] - min(placebo[s].values()))
                names.append(name)
        if len(at_sample) == len(seeds):
            out.at_sample[label] = mean_interval(at_sample)
        if len(best) == len(seeds):
            out.best[label] = mean_interval(best)
            out.best_point[label] = most_common(names)
        out.beyond_range[label] = beyond
    return out


def caccia_curve(run: Run, half: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(temperatures, test NLL at T, the NLL under the true source of the samples at T) over the temperatures
    both of the temperature grid and of the sampled frontier; None without both, or off the synthetic source."""
    temps = sorted(
        float(k.split("/")[1][1:])
        for k in run.metrics
        if k.startswith("frontier/T") and k.endswith(f"/true_nll_{half}")
    )
    temps = [t for t in temps if f"temp/{t:g}/nll" in run.metrics]
    if len(temps) < 2 or 1.0 not in temps:
        return None
    x = [run.metrics[f"temp/{t:g}/nll"] for t in temps]
    y = [run.metrics[f"frontier/T{t:g}/true_nll_{half}"] for t in temps]
    return np.array(temps), np.array(x), np.array(y)


def caccia_margin(mle: tuple, point: tuple[float, float]) -> float:
    """max over MLE's temperatures of min(x − x_MLE(T), y − y_MLE(T)): above 0 MLE at some temperature has both a
    lower test NLL and more probable samples than ``point``."""
    temps, x, y = mle
    _, dense_x = dense(temps, x)
    _, dense_y = dense(temps, y)
    return float(np.max(np.minimum(point[0] - dense_x, point[1] - dense_y)))


def caccia_margins(rows: dict[str, Row], seeds: list[int]) -> dict[str, Interval]:
    """Per objective, over seeds: the margin of its T = 1 point (test NLL, its second-half samples' true NLL)
    against MLE's temperature curve from its first-half samples, minus MLE's own second-half point's margin."""
    baseline = rows.get(BASELINE)
    if baseline is None or not seeds:
        return {}
    curves = {s: caccia_curve(baseline.runs[s], "a") for s in seeds}
    if any(c is None for c in curves.values()):
        return {}

    def margin(run: Run, s: int) -> float | None:
        own = caccia_curve(run, "b")
        if own is None:
            return None
        at_one = list(own[0]).index(1.0)
        return caccia_margin(curves[s], (own[1][at_one], own[2][at_one]))

    out = {}
    for label, row in rows.items():
        values = [margin(row.runs[s], s) for s in seeds]
        placebo = [margin(baseline.runs[s], s) for s in seeds]
        if label != BASELINE and None not in values and None not in placebo:
            out[label] = mean_interval(np.subtract(values, placebo))
    return out


def frontier_verdict(gap: Interval) -> str:
    if gap.n_seeds >= 2 and math.isfinite(gap.high) and gap.high < 0:
        return "beyond MLE's frontier"
    if gap.n_seeds >= 2 and math.isfinite(gap.low) and gap.low > 0:
        return "behind it"
    return "on it (within the interval)"


def caccia_section(rows: dict[str, Row], seeds: list[int]) -> str | None:
    margins = caccia_margins(rows, seeds)
    if not margins:
        return None
    table = [[label, fmt_interval(m, signed=True), verdict(m)] for label, m in margins.items()]
    return (
        "### Sampled text against MLE at every temperature\n\nThe plane of Caccia et al. (2020) on the synthetic "
        "source: test NLL at temperature T (coverage: the forward KL to the source plus its entropy rate) against "
        "the NLL under the true source of text sampled at T (quality), both lower-better, MLE's curve over the "
        "sampled temperatures from the first half of the prompts. Margin: max_T min(x − x_MLE(T), y − y_MLE(T)) of "
        "the objective's point at T = 1 (samples of the second half), minus MLE's own second-half point's, paired "
        "by seed: above 0, MLE at some temperature gives both better coverage and more probable text.\n\n"
        + markdown_table(["objective", "margin", "MLE at some temperature"], table)
    )


def frontier_section(rows: dict[str, Row], seeds: list[int]) -> str | None:
    comparison = compare_frontiers(rows, seeds)
    caccia = caccia_section(rows, seeds)
    if comparison is None or not comparison.best:
        return caccia
    table = []
    for label in rows:
        if label == BASELINE or label not in comparison.best:
            continue
        sample = comparison.at_sample.get(label)
        best = comparison.best[label]
        table.append(
            [
                label,
                fmt_interval(sample, signed=True) if sample else "–",
                f"{fmt_interval(best, signed=True)} ({comparison.best_point[label]})",
                frontier_verdict(best),
                str(comparison.beyond_range.get(label, 0)),
            ]
        )
    header = ["objective", "gap at T = 1", "best gap (its point)", "verdict", "points more diverse than MLE's frontier"]
    section = (
        "### The sampled quality-diversity frontier\n\nEvery run samples the evaluation's prompts at several "
        "temperatures and truncation thresholds (eval.frontier). Quality: "
        f"{comparison.quality} (lower better); diversity: self-BLEU-4 (lower more diverse). MLE's frontier: the "
        "lower envelope of its points from the first half of the prompts (each decoding's points joined in "
        "threshold order); every run's points from the second half. Gap: a point's quality minus the best MLE's "
        "frontier reaches at the same or more diversity, minus the same for MLE's own point (at T = 1) or MLE's "
        "own best point (best gap), paired by seed: below 0 the objective's text lies beyond MLE's frontier. The "
        "verdict reads the best gap's interval; self-BLEU-4 of 32 continuations is noisy, and where MLE's frontier "
        "is steep its noise becomes a large quality gap: read the intervals.\n\n" + markdown_table(header, table)
    )
    return "\n\n".join(p for p in (caccia, section) if p)
