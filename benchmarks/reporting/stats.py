"""Intervals over seeds for the report: means, paired differences, Holm's correction.

A metric of one objective is measured once per seed (``values`` of shape (S,)), or once per seed and
per evaluation prompt (shape (S, P): a generation metric of each continuation). Its interval is
mean ± t·SE with

- one level (S,): SE² = var_s / S, Student's t with S − 1 degrees of freedom (exact for normal
  seed-to-seed noise);
- two levels (S, P), prompts crossed with seeds (every seed continues the same prompts):
  SE² = var_s(row means) / S + var_p(column means) / P, so that the noise of a finite prompt set
  is counted beside the seed noise (Bouthillier et al. 2021 name both as sources of variance), with
  Satterthwaite's degrees of freedom.

Why not ``scipy.stats.bootstrap``: over the 3-5 seeds a suite can afford, its percentile and BCa
intervals are too narrow (a 95% percentile interval covered the mean of normal data in 72.5% of 400
data sets at S = 3 and 82.5% at S = 5, this t interval in 96% and 94.5%: ``python -m benchmarks.reporting.stats``),
and it has no crossed two-level resampling. A paired difference (objective − MLE at the same seed and
prompt) is the same interval on the differences; its p-value is the two-sided t test of a zero mean.
Holm (1979) corrects the p-values of all cells of a report at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # nan with a single seed: no interval
    high: float
    p: float  # two-sided p-value of "the mean is 0" (meaningful for differences)
    n_seeds: int

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2


def mean_interval(values, level: float = LEVEL) -> Interval:
    """Mean of (S,) or (S, P) values with its ``level`` interval (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[0] == 0 or (x.ndim == 2 and x.shape[1] == 0):
        raise ValueError(f"mean_interval needs (seeds,) or (seeds, prompts) values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        return Interval(float("nan"), float("nan"), float("nan"), float("nan"), x.shape[0])
    mean = float(x.mean())
    S = x.shape[0]
    if x.ndim == 1 or x.shape[1] == 1:
        seed_means = x.reshape(S, -1).mean(1)
        if S < 2:
            return Interval(mean, float("nan"), float("nan"), float("nan"), S)
        var, df = seed_means.var(ddof=1) / S, S - 1.0
    else:
        P = x.shape[1]
        var_seeds = x.mean(1).var(ddof=1) / S if S > 1 else 0.0
        var_prompts = x.mean(0).var(ddof=1) / P
        var = var_seeds + var_prompts
        denominator = (var_seeds**2 / (S - 1) if S > 1 else 0.0) + var_prompts**2 / (P - 1)
        df = var**2 / denominator if denominator > 0 else float("inf")
    se = math.sqrt(var)
    if se == 0.0:
        return Interval(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, S)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return Interval(mean, mean - half, mean + half, p, S)


def paired_difference(a, b, level: float = LEVEL) -> Interval:
    """a − b, paired by seed (and prompt): both (S,) or both (S, P), row s of each from seed s."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs values of one shape, got {a.shape} and {b.shape}")
    return mean_interval(a - b, level)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def holm_within(p_values: dict[Hashable, float], family_of: Callable[[Hashable], Hashable]) -> dict[Hashable, float]:
    """Holm-adjusted p-values of cells corrected within their families (``family_of(cell)``), not all together:
    a family's marks never move when a cell of another family is added."""
    families: dict[Hashable, list[Hashable]] = {}
    for cell in p_values:
        families.setdefault(family_of(cell), []).append(cell)
    adjusted: dict[Hashable, float] = {}
    for cells in families.values():
        adjusted.update(zip(cells, holm([p_values[c] for c in cells]), strict=True))
    return adjusted


def _coverage(n_seeds: int, data_sets: int = 400, seed: int = 0) -> tuple[float, float]:
    """Share of normal data sets whose 95% interval holds the true mean: (this module, scipy percentile)."""
    rng = np.random.default_rng(seed)
    ours = theirs = 0
    for _ in range(data_sets):
        x = rng.normal(0.0, 1.0, n_seeds)
        interval = mean_interval(x)
        ours += interval.low <= 0.0 <= interval.high
        ci = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=2000, random_state=rng).confidence_interval
        theirs += ci.low <= 0.0 <= ci.high
    return ours / data_sets, theirs / data_sets


if __name__ == "__main__":
    for n in (3, 5, 10):
        ours, percentile = _coverage(n)
        print(f"S = {n:2d} seeds: t interval covers {ours:.1%}, scipy percentile bootstrap {percentile:.1%}")
