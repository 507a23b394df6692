"""The report's frontier comparison on hand-made points: MLE's envelope, the quality gap of a point, an objective
beyond MLE's frontier, one behind it, and one more diverse than any point of MLE."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reporting.frontier import compare_frontiers, envelope, frontier_verdict, most_common, quality_gap
from benchmarks.reporting.report import build, write_report
from benchmarks.reporting.runs import collect, group

# MLE: quality falls (improves) as self-BLEU rises (less diverse), along temperature and along top-p
MLE = {
    "T": {0.5: (0.40, 3.0), 1.0: (0.20, 4.0), 1.5: (0.10, 5.5)},
    "top_p": {0.8: (0.30, 3.3), 0.95: (0.22, 3.9)},
}


def as_metrics(points, quality_shift=0.0, diversity_shift=0.0, noise=0.0):
    """frontier/ metrics of the points, the same on all prompts and on each half (the second half's noisy)."""
    out = {}
    for family, by_t in points.items():
        for t, (s, q) in by_t.items():
            for suffix, extra in (("", noise), ("_a", 0.0), ("_b", noise)):
                out[f"frontier/{family}{t:g}/self_bleu_4{suffix}"] = s + diversity_shift
                out[f"frontier/{family}{t:g}/true_nll{suffix}"] = q + quality_shift + extra
    return out


def test_envelope_and_gap_on_hand_made_points():
    diversity, best = envelope(MLE)
    assert diversity[0] == pytest.approx(0.10) and best[0] == pytest.approx(5.5)
    assert quality_gap((diversity, best), (0.20, 4.0)) == pytest.approx(0.0)  # MLE's own point
    # at s = 0.30 the best MLE quality is top-p 0.8's 3.3, better than the temperature curve's 3.5 there
    assert quality_gap((diversity, best), (0.30, 3.5)) == pytest.approx(0.2)
    assert quality_gap((diversity, best), (0.05, 9.0)) is None  # more diverse than every MLE point


@pytest.fixture
def runs(tmp_path, fake_run):
    for seed, noise in ((1, 0.0), (2, 0.01), (3, -0.01)):
        fake_run(tmp_path, "mle", seed, 3.5, metrics=as_metrics(MLE))
        fake_run(tmp_path, "sharper", seed, 3.5, metrics=as_metrics(MLE, quality_shift=-0.3, noise=noise))
        fake_run(tmp_path, "worse", seed, 3.5, metrics=as_metrics(MLE, quality_shift=0.4, noise=noise))
        fake_run(tmp_path, "wider", seed, 3.5, metrics=as_metrics(MLE, diversity_shift=-0.08, noise=noise))
    return tmp_path


def test_objectives_beyond_on_and_behind_mle_frontier(runs):
    comparison = compare_frontiers(group(collect(runs)), [1, 2, 3])
    assert comparison.best["mle"].mean == pytest.approx(0.0)  # the placebo: MLE against its own frontier
    assert comparison.best["sharper"].mean == pytest.approx(-0.3, abs=0.02)
    assert frontier_verdict(comparison.best["sharper"]) == "beyond MLE's frontier"
    assert frontier_verdict(comparison.best["worse"]) == "behind it"
    assert comparison.at_sample["worse"].mean == pytest.approx(0.4, abs=0.02)
    assert comparison.beyond_range["wider"] == 3  # T1.5 at self-BLEU 0.02: no MLE point is that diverse
    assert np.isfinite(comparison.best["wider"].mean)


def test_the_report_prints_the_frontier_table_and_plot(runs, capsys):
    assert "### The sampled quality-diversity frontier" in build(collect(runs)).body
    write_report(runs)
    assert (runs / "plots" / "sampled_frontier.png").stat().st_size > 10_000


def test_caccia_margin_against_mle_temperature_curve():
    """MLE's curve in (test NLL at T, true NLL of samples at T): a point on it has margin 0, one better in both
    than every MLE temperature a negative margin, one worse in both a positive one."""
    from benchmarks.reporting.frontier import caccia_margin

    temps = np.array([0.5, 0.7, 0.9, 1.0, 1.25, 1.5])
    test_nll = 3.6 + 0.5 * np.log(temps) ** 2  # lowest at T = 1
    sample_nll = 2.0 + 3.0 * temps  # colder text is more probable
    mle = (temps, test_nll, sample_nll)
    assert caccia_margin(mle, (test_nll[2], sample_nll[2])) == pytest.approx(0.0, abs=1e-12)
    assert caccia_margin(mle, (3.55, 4.0)) < 0  # better coverage than MLE anywhere, and probable text
    assert caccia_margin(mle, (3.7, 5.5)) > 0  # MLE near T = 0.9-1 beats it in both


def test_the_best_point_over_seeds_is_the_most_common_and_a_tie_goes_to_the_first_seed():
    assert most_common(["T1.25", "top_p0.95", "top_p0.95"]) == "top_p0.95"
    assert most_common(["top_nsigma2", "T1", "top_p0.95"]) == "top_nsigma2"
    assert most_common(["T1", "top_nsigma2", "top_p0.95"]) == "T1"
