"""The report's statistics: interval coverage, pairing, Holm's correction."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks.reporting.stats import holm, holm_within, mean_interval, paired_difference


def test_one_level_interval_covers_the_mean_at_its_level():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        values = rng.normal(3.5, 0.05, size=3)  # three seeds, as the default suite
        interval = mean_interval(values)
        covered += interval.low <= 3.5 <= interval.high
    assert 0.90 <= covered / 200 <= 0.99


def test_two_level_interval_counts_the_prompts_noise():
    """Seeds crossed with prompts (every seed continues the same prompts): a shared prompt effect
    that the seed-to-seed spread cannot see must widen the interval."""
    rng = np.random.default_rng(1)
    covered = covered_seed_level_only = 0
    for _ in range(200):
        seed_effect = rng.normal(0, 0.02, size=(4, 1))
        prompt_effect = rng.normal(0, 0.5, size=(1, 48))  # the same 48 prompts at every seed
        values = 0.5 + seed_effect + prompt_effect + rng.normal(0, 0.1, size=(4, 48))
        interval = mean_interval(values)
        covered += interval.low <= 0.5 <= interval.high
        seed_only = mean_interval(values.mean(1))
        covered_seed_level_only += seed_only.low <= 0.5 <= seed_only.high
    assert 0.90 <= covered / 200 <= 0.99
    assert covered_seed_level_only / 200 < 0.6  # what a one-level interval over seeds would claim


def test_paired_difference_uses_the_pairing():
    rng = np.random.default_rng(2)
    seed_level = rng.normal(3.6, 0.2, size=5)  # seeds move both objectives together
    mle = seed_level + rng.normal(0, 0.005, size=5)
    other = seed_level + 0.05 + rng.normal(0, 0.005, size=5)
    unpaired = scipy_stats.ttest_ind(other, mle, equal_var=False).confidence_interval(0.95)
    assert unpaired.low < 0 < unpaired.high
    paired = paired_difference(other, mle)
    assert paired.low > 0 and paired.p < 0.001
    assert paired.mean == pytest.approx(0.05, abs=0.01)
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(other, mle[:4])


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005·4 = 0.02; 0.01·3 = 0.03; 0.03·2 = 0.06; 0.04·1 = 0.04 -> max(0.06, 0.04) = 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_holm_within_families_corrects_each_family_alone():
    p = {("a", "x"): 0.01, ("b", "x"): 0.04, ("a", "y"): 0.03, ("b", "y"): 0.005}
    adjusted = holm_within(p, lambda cell: cell[1])
    # family x: 0.01·2 = 0.02, 0.04·1 -> 0.04; family y: 0.005·2 = 0.01, 0.03·1 = 0.03
    assert adjusted == pytest.approx({("a", "x"): 0.02, ("b", "x"): 0.04, ("a", "y"): 0.03, ("b", "y"): 0.01})
    # one family: the same as Holm over all cells
    together = holm_within(p, lambda cell: 0)
    np.testing.assert_allclose([together[c] for c in p], holm(list(p.values())))


def test_single_seed_has_no_interval_and_constant_values_a_point():
    single = mean_interval([3.2])
    assert single.mean == 3.2 and np.isnan(single.low) and np.isnan(single.high)
    constant = mean_interval([1.0, 1.0, 1.0])
    assert constant.low == constant.high == 1.0
    with pytest.raises(ValueError, match="shape"):
        mean_interval(np.zeros((2, 2, 2)))
