"""Is an objective more than a temperature? The report's tables that compare every objective with MLE at the
temperature of equal entropy, with the temperatures at which MLE would beat it outright, and after each run's
own temperature scaling.

Each run's teacher-forced metrics at the grid of ``eval.temperatures`` (``temp/<T>/<metric>``) are a curve in T;
curves are read between grid points by monotone cubic interpolation in log T (scipy's PCHIP: no overshoot, so a
monotone curve such as entropy(T) stays monotone). At seed s:

- the matched temperature T* of objective o solves H_MLE,s(T*) = H_o,s(1) (the objective's entropy as trained);
  its differences are metric_o,s(1) − metric_MLE,s(T*), paired by seed like every other Δ of the report;
- the dominance margin of o is max_T min(x_o − x_MLE(T), y_o − y_MLE(T)) over MLE's curve in a plane of two
  lower-is-better measures: positive when MLE at some temperature is better in both by that much (o is
  dominated), negative when no temperature of MLE is at least as good in both. The plane is the exact
  (KL(P‖p), KL(p‖P)) on the synthetic source; on real text (NLL, |entropy − NLL|): fit and over- or
  under-confidence, the two things a temperature trades.
Caccia et al. (2020) make the case for comparing along temperature; Guo et al. (2017) for temperature scaling as
the calibration baseline (Müller et al. 2019 compare label smoothing against it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

from benchmarks.reporting.runs import Row, Run
from benchmarks.reporting.stats import Interval, holm_within, mean_interval, paired_difference
from benchmarks.reporting.tables import BASELINE, fmt, fmt_interval, markdown_table

MATCHED_METRICS = [
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("brier", "Brier"),
    ("forward_kl", "KL(P‖p)"),
    ("reverse_kl", "KL(p‖P)"),
]
SCALED_COLUMNS = [("nll", "NLL"), ("ece", "ECE"), ("rms_ce", "RMS-CE"), ("brier", "Brier")]
DENSE = 2001  # points of an interpolated curve
ALPHA = 0.05  # family-wise error rate of the † marks (Holm, over the matched table's cells)


def temperature_grid(run: Run) -> list[float]:
    """The temperatures of a run's temp/<T>/ metrics, ascending."""
    return sorted({float(k.split("/")[1]) for k in run.metrics if k.startswith("temp/") and k.count("/") == 2})


def curve(run: Run, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(temperatures, values) of temp/<T>/<metric>; ``entropy_gap`` is |entropy − NLL|. None without a grid."""
    temps = temperature_grid(run)
    if len(temps) < 2:
        return None

    def value(t: float) -> float | None:
        at = {m: run.metrics.get(f"temp/{t:g}/{m}") for m in ("nll", "entropy", metric)}
        if metric == "entropy_gap":
            return None if at["nll"] is None or at["entropy"] is None else abs(at["entropy"] - at["nll"])
        return at[metric]

    values = [value(t) for t in temps]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return np.array(temps), np.array(values, dtype=np.float64)


def as_trained(run: Run, metric: str) -> float | None:
    """A run's metric at T = 1: its temp/1/ value, or read off its own curve where the grid lacks 1."""
    values = curve(run, metric)
    if values is None:
        return None
    exact = np.flatnonzero(values[0] == 1.0)
    return float(values[1][exact[0]]) if exact.size else at_temperature(*values, 1.0)


def trained_ece(run: Run) -> float:
    """A run's ECE as trained on the tokens its ts/ metrics are measured on (temp/1/ece; tf/ece without a grid
    point at 1)."""
    return run.metrics.get("temp/1/ece", run.metrics.get("tf/ece", math.nan))


def temperature_keys(rows: dict[str, Row]) -> list[str]:
    """Every temp/ and ts/ metric some run has (their means over seeds feed the plots)."""
    keys = {k for row in rows.values() for r in row.runs.values() for k in r.metrics if k.startswith(("temp/", "ts/"))}
    return sorted(keys)


def _interpolator(temps: np.ndarray, values: np.ndarray) -> PchipInterpolator:
    return PchipInterpolator(np.log(temps), values)


def dense(temps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve at ``DENSE`` temperatures spaced evenly in log T over the grid's range, and at the grid's own
    (where its values are the measured ones)."""
    t = np.union1d(np.geomspace(temps[0], temps[-1], DENSE), temps)
    values_at = _interpolator(temps, values)(np.log(t))
    values_at[np.searchsorted(t, temps)] = values
    return t, values_at


def matched_temperature(temps: np.ndarray, entropy: np.ndarray, target: float) -> float | None:
    """The temperature at which the entropy curve reaches ``target`` (the lowest, if it crosses more than once);
    None when the target lies outside the curve's range on the grid."""
    t, h = dense(temps, entropy)
    above = np.flatnonzero(np.diff(np.sign(h - target)) != 0)
    exact = np.flatnonzero(h == target)
    if exact.size and (not above.size or exact[0] <= above[0]):
        return float(t[exact[0]])
    if not above.size:
        return None
    i = above[0]
    fraction = (target - h[i]) / (h[i + 1] - h[i])
    return float(math.exp(math.log(t[i]) + fraction * (math.log(t[i + 1]) - math.log(t[i]))))


def at_temperature(temps: np.ndarray, values: np.ndarray, t: float) -> float:
    return float(_interpolator(temps, values)(math.log(t)))


def dominance_margin(mle_x: tuple, mle_y: tuple, point: tuple[float, float]) -> float:
    """max over MLE's temperatures of min(x − x_MLE(T), y − y_MLE(T)): > 0 when MLE at some temperature is better
    than ``point`` (x, y) in both measures by that much, < 0 when none is as good in both (both lower-better;
    ``mle_x``/``mle_y``: (temperatures, values) on one grid)."""
    _, x = dense(*mle_x)
    _, y = dense(*mle_y)
    return float(np.max(np.minimum(point[0] - x, point[1] - y)))


def dominance_plane(rows: dict[str, Row]) -> tuple[str, str, str] | None:
    """The two measures of the dominance test and its title: the exact KLs where the truth is known, else
    (NLL, |entropy − NLL|); None without temperature curves."""
    run = next((r for row in rows.values() for r in row.runs.values()), None)
    if run is None or len(temperature_grid(run)) < 2:
        return None
    if f"temp/{temperature_grid(run)[0]:g}/forward_kl" in run.metrics:
        return "forward_kl", "reverse_kl", "(KL(P‖p), KL(p‖P))"
    return "nll", "entropy_gap", "(NLL, |entropy − NLL|)"


@dataclass
class TemperatureComparison:
    """Per objective: its matched temperatures and differences from MLE there, and its dominance margins."""

    matched_t: dict[str, Interval] = field(default_factory=dict)
    outside: dict[str, int] = field(default_factory=dict)  # seeds whose entropy MLE's grid does not reach
    matched: dict[tuple[str, str], Interval] = field(default_factory=dict)  # (objective, metric) -> Δ at T*
    at_one: dict[tuple[str, str], Interval] = field(default_factory=dict)  # (objective, metric) -> Δ at T = 1
    significant: set[tuple[str, str, str]] = field(default_factory=set)  # ("matched" | "at_one", objective, metric)
    margin: dict[str, Interval] = field(default_factory=dict)
    plane: tuple[str, str, str] | None = None


def compare(rows: dict[str, Row], seeds: list[int]) -> TemperatureComparison | None:
    """Every objective against MLE's temperature curve of the same seed."""
    plane = dominance_plane(rows)
    baseline = rows.get(BASELINE)
    if plane is None or baseline is None or not seeds:
        return None
    out = TemperatureComparison(plane=plane)
    for label, row in rows.items():
        if label == BASELINE:
            continue
        temps, margins, outside = [], [], 0
        deltas, at_one = {m: [] for m, _ in MATCHED_METRICS}, {m: [] for m, _ in MATCHED_METRICS}
        for s in seeds:
            mle, run = baseline.runs[s], row.runs[s]
            entropy, own = curve(mle, "entropy"), as_trained(run, "entropy")
            if entropy is None or own is None:
                return None
            for metric in at_one:
                value, mle_value = as_trained(run, metric), as_trained(mle, metric)
                if value is not None and mle_value is not None:
                    at_one[metric].append(value - mle_value)
            t = matched_temperature(*entropy, own)
            if t is None:
                outside += 1
            else:
                temps.append(t)
                for metric, _ in MATCHED_METRICS:
                    mle_curve, value = curve(mle, metric), as_trained(run, metric)
                    if mle_curve is not None and value is not None:
                        deltas[metric].append(value - at_temperature(*mle_curve, t))
            x, y = curve(mle, plane[0]), curve(mle, plane[1])
            point = (as_trained(run, plane[0]), as_trained(run, plane[1]))
            if x is not None and y is not None and None not in point:
                margins.append(dominance_margin(x, y, point))
        out.outside[label] = outside
        if not outside:
            out.matched_t[label] = mean_interval(temps)
            for metric, values in deltas.items():
                if len(values) == len(seeds):
                    out.matched[label, metric] = mean_interval(values)
        for metric, values in at_one.items():
            if len(values) == len(seeds):
                out.at_one[label, metric] = mean_interval(values)
        if len(margins) == len(seeds):
            out.margin[label] = mean_interval(margins)
    cells = {("matched", *k): v for k, v in out.matched.items()} | {("at_one", *k): v for k, v in out.at_one.items()}
    # the oracles' rows (bounds, not methods) a family of their own, as in the report
    adjusted = holm_within({cell: d.p for cell, d in cells.items()}, lambda cell: rows[cell[1]].oracle)
    out.significant |= {c for c, p in adjusted.items() if math.isfinite(p) and p < ALPHA}
    return out


def verdict(margin: Interval) -> str:
    """'dominated' when the margin's interval lies at or above 0 (MLE at some temperature is no worse in both),
    'not dominated' when below 0, else 'undecided'."""
    if margin.n_seeds < 2 or not math.isfinite(margin.low):
        return "dominated" if margin.mean >= 0 else "not dominated"
    if margin.low >= 0:
        return "dominated"
    if margin.high < 0:
        return "not dominated"
    return "undecided"


def matched_table(rows: dict[str, Row], comparison: TemperatureComparison) -> str:
    """Δ from MLE at T = 1 beside Δ from MLE at the temperature of the objective's entropy."""

    def cell(kind: str, label: str, metric: str) -> str:
        delta = getattr(comparison, kind).get((label, metric))
        mark = " †" if (kind, label, metric) in comparison.significant else ""
        return fmt_interval(delta, signed=True) + mark if delta else "–"

    columns = [m for m in MATCHED_METRICS if any((label, m[0]) in comparison.matched for label in rows)]
    header = ["objective", "T matching its entropy"]
    for _, name in columns:
        header += [f"Δ {name} at T = 1", f"Δ {name} at matched T"]
    table = []
    for label in rows:
        if label == BASELINE:
            continue
        outside = comparison.outside.get(label, 0)
        matched_t = comparison.matched_t.get(label)
        cells = [label, fmt_interval(matched_t) if matched_t else f"outside the grid ({outside} seeds)"]
        for metric, _ in columns:
            cells += [cell("at_one", label, metric), cell("matched", label, metric)]
        table.append(cells)
    return markdown_table(header, table)


def dominance_table(comparison: TemperatureComparison) -> str:
    rows = [[label, fmt_interval(margin, signed=True), verdict(margin)] for label, margin in comparison.margin.items()]
    return markdown_table(["objective", "margin", "MLE at some temperature"], rows)


def scaled_table(rows: dict[str, Row], seeds: list[int]) -> str | None:
    """After temperature scaling fitted on validation NLL: each row's fitted T and scaled metrics with their
    difference from scaled MLE (paired by seed), and its ECE as trained against scaled MLE's."""
    baseline = rows.get(BASELINE)
    if baseline is None or not all("ts/temperature" in r.metrics for row in rows.values() for r in row.runs.values()):
        return None

    def values(row: Row, key: str) -> np.ndarray:
        return np.array([row.runs[s].metrics[key] for s in seeds], dtype=np.float64)

    header = ["objective", "fitted T", *[f"{name} scaled" for _, name in SCALED_COLUMNS], "ECE as trained − MLE scaled"]
    table = []
    for label, row in rows.items():
        cells = [label, fmt_interval(mean_interval(values(row, "ts/temperature")))]
        for metric, _ in SCALED_COLUMNS:
            own = mean_interval(values(row, f"ts/{metric}"))
            cell = fmt_interval(own)
            if label != BASELINE:
                delta = paired_difference(values(row, f"ts/{metric}"), values(baseline, f"ts/{metric}"))
                cell += f" ({fmt_interval(delta, signed=True)})"
            cells.append(cell)
        trained = paired_difference([trained_ece(row.runs[s]) for s in seeds], values(baseline, "ts/ece"))
        cells.append(fmt_interval(trained, signed=True))
        table.append(cells)
    return markdown_table(header, table)


def temperature_section(rows: dict[str, Row], seeds: list[int]) -> str | None:
    """The report's section: the matched-temperature table, the dominance table, the temperature-scaled one."""
    comparison = compare(rows, seeds)
    parts = []
    if comparison is not None and comparison.matched_t:
        grid = temperature_grid(next(iter(rows[BASELINE].runs.values())))
        parts.append(
            "### Against MLE at the temperature of equal entropy\n\nMLE's teacher-forced metrics at every "
            f"temperature of the grid ({', '.join(fmt(t, 2) for t in grid)}), interpolated in log T; at each seed "
            "the temperature T at which MLE's entropy equals the objective's, and the objective's difference from "
            "MLE at T = 1 beside its difference from MLE at that T, paired by seed, on the same "
            "eval.temperature_tokens test tokens († significant after Holm's correction over this table's cells; the "
            "oracles' rows, which read the true source in training, apart). "
            "A difference that vanishes at the matched temperature is one a temperature gives MLE too.\n\n"
            + matched_table(rows, comparison)
        )
    if comparison is not None and comparison.margin:
        x, y, title = comparison.plane
        parts.append(
            f"### Does MLE at some temperature dominate it?\n\nIn the plane {title} (both lower-better), the "
            "margin max_T min(x − x_MLE(T), y − y_MLE(T)) of each objective's point against MLE's temperature curve "
            "at the same seed, over seeds: above 0, MLE at some temperature is better in both by that much "
            "(dominated); below 0, no temperature of MLE is as good in both (not dominated).\n\n"
            + dominance_table(comparison)
        )
    scaled = scaled_table(rows, seeds)
    if scaled is not None:
        parts.append(
            "### After temperature scaling\n\nEach run's one temperature fitted on its validation NLL (Guo et al. "
            "2017), applied to the test split; in brackets the difference from temperature-scaled MLE, paired by "
            "seed. The last column is the objective's ECE as trained against temperature-scaled MLE's (on the same "
            "tokens): below 0, the objective calibrates better than MLE with the one-parameter fix.\n\n" + scaled
        )
    return "\n\n".join(parts) if parts else None
